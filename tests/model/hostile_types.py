"""Value types under hostile input, for test_hostile_values.py: each type's documented
contract (what an accepted value's text form may look like, written independently of its
code), the option sets and valid seeds tried per type, and the check of one type."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from provisiond.model.values import InvalidValue, ValueSpec, ValueType, as_text
from tests.model.hostile import hostile_values, rng_for
from tests.model.hostile_files import META

VALUES_PER_TYPE = 3000  # per option set; the fixed catalogue alone is about 2000


@dataclass(frozen=True)
class Contract:
    """What an accepted value's text form may look like."""

    text: str | None  # regex the whole text form matches (re.ASCII); None: any printable text
    ascii_input: bool = True  # an accepted raw value is ASCII: no lookalike passes as its twin


SAFE_TEXT = r"(?!-)(?!(?:.*/)?\.\.(?:/|$))[A-Za-z0-9 ._@+:,=/-]+"
CHARSET_TEXT = {"safe": SAFE_TEXT, "word": r"\w+", "printable": None}


def contract(value_type: ValueType) -> Contract:
    """Each type's documented promise (value_types.py), written independently of its code."""
    name, charset = value_type.name, getattr(value_type, "charset", "safe")
    if name in ("string", "dn"):
        text = CHARSET_TEXT[charset]
        return Contract(text, ascii_input=text is not None)
    if name == "enum":
        choices = value_type.choices  # type: ignore[attr-defined]
        return Contract("|".join(map(re.escape, choices)), all(c.isascii() for c in choices))
    return Contract({
        "integer": r"-?[0-9]{1,19}",
        "bytes": r"[0-9]+",
        "boolean": r"TRUE|FALSE",
        "posix_name": r"[a-z0-9_][a-z0-9_-]{0,31}",
        "path_segment": r"[A-Za-z0-9_][A-Za-z0-9._-]*",
        "path": r"/|(?:/(?!\.\.?(?:/|$))[A-Za-z0-9._-]+)+",
        "hostname": r"[A-Za-z0-9.:-]+",
        "iqn": r"(?:iqn|eui|naa)\.[A-Za-z0-9.:-]+",
        "date": r"[0-9]{8}",
    }[name])


# Option sets tried per type (the shipped kinds' declarations are added to these) and valid
# values to mutate. A new type fails test_every_type_has_options_seeds_and_a_contract until
# it is listed here and in contract().
OPTIONS: dict[str, list[dict[str, Any]]] = {
    "string": [{}, {"charset": "word"}, {"charset": "printable"},
               {"pattern": r"[1-9]\d{5,9}", "max_length": 10},
               {"pattern": r"\d{1,7}", "charset": "printable"},
               {"pattern": "(?i)[a-z]+", "charset": "printable"}],
    "integer": [{}, {"min": 0, "max": 99}],
    "bytes": [{}, {"min": "1M", "max": "1P"}],
    "boolean": [{}],
    "posix_name": [{}, {"allow_digits_first": True}],
    "path_segment": [{}],
    "path": [{}, {"under": ["/srv/backup"]}],
    "hostname": [{}, {"allow_ip": False}],
    "iqn": [{}],
    "dn": [{}, {"charset": "printable"}, {"under": "ou=people,dc=example,dc=org"}],
    "enum": [{"choices": ["lvm", "zfs", "disk"]},
             {"choices": ["lvm", "ZFS", "disk"], "ignore_case": True}],
    "date": [{}],
}
SEEDS: dict[str, list[str]] = {
    "string": ["backup", "1234567", "Backup of host-1: daily/weekly, user@example.org", "a=b+c",
               "abc_1", 'He said "hi" {x} #1'],
    "integer": ["1234567", "0", "99", "-5", "007", "9" * 19],
    "bytes": ["512MiB", "1024", "10G", "1k", "2048B", "1KB", "2P"],
    "boolean": ["TRUE", "false", "FALSE", "True"],
    "posix_name": ["backup", "a-b_c1", "1234567", "_svc", "root"],
    "path_segment": ["backup", "file.tar.gz", "_x-1"],
    "path": ["/srv/backup/x", "/", "/srv/.snapshot/a-b_c.d"],
    "hostname": ["host-1.example.org", "192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1",
                 "xn--bcher-kva.example"],
    "iqn": ["iqn.2003-12.ch.stepping-stone:storage.disk-1:lun0", "eui.02004567A425678D",
            "naa.52004567BA64678D"],
    "dn": ["uid=x,ou=people,dc=example,dc=org", "cn=a+sn=b,dc=example,dc=org",
           "cn=Smith\\, John,ou=people,dc=example,dc=org"],
    "enum": ["zfs", "disk", "ZFS", "lvm"],
    "date": ["20240229", "19991231"],
}



def message_problem(exc: InvalidValue) -> str | None:
    message = str(exc)
    if not message.isprintable() or len(message) > 400:
        return f"unsafe message {message[:120]!r}... ({len(message)} characters)"
    return None


def value_problem(value_type: ValueType, raw: str, value: Any) -> str | None:
    """Why an accepted value breaks the type's contract, or None."""
    text = as_text(value)
    rules = contract(value_type)
    if not text.isprintable() or text != text.strip():
        return f"text form {text!r} is not printable or has outer whitespace"
    if rules.text is not None and not re.fullmatch(rules.text, text, re.ASCII):
        return f"text form {text!r} outside the contract {rules.text!r}"
    if rules.text is not None and META & set(text):
        return f"text form {text!r} carries {sorted(META & set(text))}"
    pattern = getattr(value_type, "pattern", None)  # declared in ASCII terms: \d is [0-9]
    if pattern is not None and not re.fullmatch(pattern.pattern, text, re.ASCII):
        return f"text form {text!r} does not match {pattern.pattern!r} in ASCII"
    if rules.ascii_input and not raw.isascii():
        return "a non-ASCII raw value was accepted"
    try:
        again = value_type.parse(text)
    except ValueError as exc:
        return f"its text form {text!r} is rejected: {exc}"
    if again != value:
        return f"not idempotent: {text!r} parses to {again!r}, not {value!r}"
    return None


def check_type(value_type: ValueType) -> tuple[Counter[str], list[str]]:
    """Feed generated values through `value_type` (via a ValueSpec, as parse_entry does)."""
    spec = ValueSpec("value", "attribute", value_type)
    counts: Counter[str] = Counter()
    problems = []
    raws = hostile_values(SEEDS[value_type.name], VALUES_PER_TYPE, rng_for(repr(value_type)))
    for raw in raws:
        counts["tried"] += 1
        try:
            value = spec.parse_values([raw])
        except InvalidValue as exc:
            counts["rejected"] += 1
            problem = message_problem(exc)
        except Exception as exc:  # noqa: BLE001 - the finding itself
            problem = f"{type(exc).__name__} escaped: {exc}"
        else:
            counts["accepted"] += 1
            problem = value_problem(value_type, raw, value)
        if problem:
            problems.append(f"{value_type!r} <- {raw[:80]!r}: {problem}")
    return counts, problems
