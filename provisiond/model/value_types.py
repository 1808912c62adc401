"""The value types: each knows its options and how to check one raw LDAP value.

Split from `values.py` (the declarations and entry parsing) because there are many types and
each is documented where it is defined: `values.sample_declaration()` is generated from
these docstrings and option docs.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, ClassVar, Self

from ldap3.utils.dn import parse_dn

SHOW_LIMIT = 60
NAME_RE = re.compile(r"[a-z][a-z0-9_]*")
ATTRIBUTE_RE = re.compile(r"[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)*")
CHARSETS = ("safe", "word", "printable")
COMMON_KEYS: Mapping[str, str] = MappingProxyType({
    "attribute": "LDAP attribute name (required; looked up case-insensitively)",
    "type": "one of the types below (required)",
    "required": "a missing attribute is an error (default: true; false when a default is given)",
    "default": "used when the attribute is missing; written like an LDAP value",
    "multi": "accept several values; the result is a list (default: false). An output "
             "takes every `provisiond-set` line for it and replaces the attribute as a whole "
             "(`NAME=` alone empties it)",
    "description": "free text for humans (default: empty)",
    "code": "ReturnValue when this value is invalid (default: the service's invalid_code)",
    "report_to": "outputs only: entry (default) writes it to the entry with the outcome, "
                 "parent to the entry's parent entry (an operation's library) just before",
    "on_failure": "outputs only: written with a failure report too (the step that failed "
                  "and the steps before it), not only on success (default: false)",
    "secret": "values only: a secret (a CHAP secret). Templates get it (write it only into "
              "files of mode 0600); hook environments, `provisiond render` and validation "
              "messages never show it (default: false)",
})
_CONTROL = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_SAFE_RE = re.compile(r"[A-Za-z0-9 ._@+:,=/-]")


class SpecError(Exception):
    """A bad value declaration; `key` is the dotted path inside the declaration ("" = itself)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(key, reason)
        self.key, self.reason = key, reason

    def __str__(self) -> str:
        return f"{self.key}: {self.reason}" if self.key else self.reason


def has_control_characters(text: str) -> bool:
    """True if `text` holds a character no rendered file, argv or log line should carry."""
    return any(unicodedata.category(c) in _CONTROL for c in text)


def one_line(text: str) -> str:
    return "".join(
        c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) in _CONTROL else c
        for c in text
    )


def _show(raw: str) -> str:
    """Quoted like repr() (newline as \\n, TAB as \\t, U+2028 as \\u2028), cut after
    SHOW_LIMIT characters of escaped text, so it stays short, single-line and printable."""
    shown = ""
    for char in raw:
        piece = "\\'" if char == "'" else repr(char)[1:-1]
        if len(shown) + len(piece) > SHOW_LIMIT:
            return f"'{shown}'... ({len(raw)} characters)"
        shown += piece
    return f"'{shown}'"


def require(ok: object, message: str | Callable[[], str]) -> None:
    """Raise ValueError(message) unless `ok`; a callable message is only built on failure
    (the messages quote the value, which costs more than the check itself)."""
    if not ok:
        raise ValueError(message() if callable(message) else message)


def at_key(key: str, convert: Callable[..., Any], *args: Any) -> Any:
    """convert(*args), reporting ValueError as SpecError at `key` (nested keys are dotted)."""
    try:
        return convert(*args)
    except SpecError as exc:
        raise SpecError(f"{key}.{exc.key}", exc.reason) from None
    except ValueError as exc:
        raise SpecError(key, str(exc)) from None


def _check_text(raw: object, limit: int) -> str:
    """The checks every type makes before its own."""
    if not isinstance(raw, str):
        raise ValueError(f"not text but {type(raw).__name__}")
    require(raw, "empty value")
    require(len(raw) <= limit, lambda: f"longer than {limit} characters: {_show(raw)}")
    bad = [c for c in raw if unicodedata.category(c) in _CONTROL]
    require(not bad, lambda: f"control character {''.join(bad[:1])!r} in {_show(raw)}")
    require(raw == raw.strip(), lambda: f"leading or trailing whitespace in {_show(raw)}")
    return raw


def _check_charset(raw: str, charset: str) -> None:
    if charset == "printable":
        require(raw.isprintable(), lambda: f"non-printable character in {_show(raw)}")
    elif charset == "word":
        require(re.fullmatch(r"\w+", raw, re.ASCII), lambda: f"only [A-Za-z0-9_] allowed: {_show(raw)}")
    else:
        bad = [c for c in raw if not _SAFE_RE.fullmatch(c)]
        require(not bad, lambda: f"character {''.join(bad[:1])!r} not allowed: {_show(raw)}")
        require(not raw.startswith("-"), lambda: f"leading '-' not allowed: {_show(raw)}")
        require(".." not in raw.split("/"), lambda: f"'..' component not allowed: {_show(raw)}")


# Option converters raise ValueError (or SpecError with a sub-key); metadata holds the docs.


def _opt(doc: str, convert: Callable[[Any], Any], default: Any = None) -> Any:
    return field(default=default, metadata={"doc": doc, "convert": convert})


def _int_opt(value: Any) -> int:
    require(isinstance(value, int) and not isinstance(value, bool), lambda: f"not an integer: {value!r}")
    return int(value)


def _length_opt(value: Any) -> int:
    require(0 <= _int_opt(value) <= 65536, lambda: f"must be from 0 to 65536, not {value!r}")
    return int(value)


def bool_option(value: Any) -> bool:
    require(isinstance(value, bool), lambda: f"must be true or false, not {value!r}")
    return bool(value)


def _size_opt(value: Any) -> int:
    return _parse_size(value if isinstance(value, str) else str(_int_opt(value)))


def _regex_opt(value: Any) -> re.Pattern[str]:
    require(isinstance(value, str), lambda: f"must be a regular expression string, not {value!r}")
    try:
        # ASCII: \d, \w, \s and (?i) must not match Unicode digits, letters or case folds
        return re.compile(value, re.ASCII)
    except re.error as exc:
        raise ValueError(f"bad regular expression: {exc}") from None


def _one_of(*choices: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        require(value in choices, lambda: f"must be one of {', '.join(choices)}, not {value!r}")
        return str(value)

    return convert


def _list_opt(item: Callable[[Any], str]) -> Callable[[Any], tuple[str, ...]]:
    def convert(value: Any) -> tuple[str, ...]:
        require(isinstance(value, list | tuple), lambda: f"must be a list, not {value!r}")
        return tuple(at_key(str(index), item, element) for index, element in enumerate(value))

    return convert


@dataclass(frozen=True)
class ValueType:
    """Base class: option fields carry their docs and converters in `metadata`."""

    name: ClassVar[str] = ""
    example: ClassVar[str] = ""

    def parse(self, raw: str) -> Any:
        """The typed value, or ValueError with a single-line reason."""
        raise NotImplementedError

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Self:
        """An instance from declaration options; SpecError for unknown keys and bad values."""
        known = {option.name: option for option in fields(cls)}
        converted = {}
        for key, value in options.items():
            if key not in known:
                raise SpecError(str(key), f"unknown key; options of {cls.name}: "
                                f"{', '.join(known) or 'none'}; common: {', '.join(COMMON_KEYS)}")
            converted[key] = at_key(str(key), known[key].metadata["convert"], value)
        return cls(**converted)


@dataclass(frozen=True)
class _PatternType(ValueType):
    """A value that must fully match `regex` (ASCII classes only; fullmatch, so no '$' trap)."""

    regex: ClassVar[str] = ""
    limit: ClassVar[int] = 255
    what: ClassVar[str] = ""

    def parse(self, raw: str) -> Any:
        raw = _check_text(raw, self.limit)
        require(re.fullmatch(self.regex, raw), lambda: f"not {self.what}: {_show(raw)}")
        return raw


@dataclass(frozen=True)
class StringType(ValueType):
    """Text from a character set. "safe": ASCII letters, digits, space and ._@+:,=-/ with no
    leading '-' and no '..' component; "word": [A-Za-z0-9_]; "printable": any printable
    character (renderers must still quote and escape it)."""

    name = "string"
    example = "{attribute: description, type: string, max_length: 200, required: false}"
    pattern: re.Pattern[str] | None = _opt(
        "regex the whole value must match (ASCII: \\d, \\w and (?i) ignore other scripts)",
        _regex_opt)
    min_length: int = _opt("minimum length in characters", _length_opt, 1)
    max_length: int = _opt("maximum length in characters", _length_opt, 255)
    charset: str = _opt("safe, word or printable", _one_of(*CHARSETS), "safe")

    def __post_init__(self) -> None:
        if self.min_length > self.max_length:
            raise SpecError("min_length", f"greater than max_length {self.max_length}")

    def parse(self, raw: str) -> str:
        raw = _check_text(raw, self.max_length)
        require(len(raw) >= self.min_length, lambda: f"shorter than {self.min_length}: {_show(raw)}")
        _check_charset(raw, self.charset)
        if self.pattern is not None:
            pattern = self.pattern.pattern
            require(self.pattern.fullmatch(raw),
                     lambda: f"does not match {pattern!r}: {_show(raw)}")
        return raw


def _bounded(value: int, low: int | None, high: int | None, show: Callable[[int], str]) -> int:
    require(low is None or value >= low, lambda: f"{show(value)} is below the minimum {show(low or 0)}")
    require(high is None or value <= high, lambda: f"{show(value)} is above the maximum {show(high or 0)}")
    return value


def _check_range(low: int | None, high: int | None, show: Callable[[int], str]) -> None:
    if low is not None and high is not None and low > high:
        raise SpecError("min", f"greater than max {show(high)}")


@dataclass(frozen=True)
class IntegerType(ValueType):
    """A decimal integer: optional '-' and at most 19 ASCII digits; no '+', spaces or '_'.
    Leading zeros are accepted ("007" is 7) because stoney-style numbers may carry them."""

    name = "integer"
    example = "{attribute: sstBackupIntervalDaily, type: integer, min: 0, max: 99, default: 0}"
    min: int | None = _opt("smallest accepted value", _int_opt)
    max: int | None = _opt("largest accepted value", _int_opt)

    def __post_init__(self) -> None:
        _check_range(self.min, self.max, str)

    def parse(self, raw: str) -> int:
        raw = _check_text(raw, 20)
        require(re.fullmatch(r"-?[0-9]{1,19}", raw), lambda: f"not an integer: {_show(raw)}")
        return _bounded(int(raw), self.min, self.max, str)


_UNITS = "KMGTP"


def _parse_size(raw: str) -> int:
    # re.ASCII: with Unicode case folding "1Mıb" and the Kelvin sign "1\u212a" would match
    match = re.fullmatch(r"([0-9]{1,20})(?:([KMGTP])(?:I?B)?|B)?", raw, re.IGNORECASE | re.ASCII)
    if not match:
        raise ValueError(f"not a size: {_show(raw)} (expected a whole number of bytes with an"
                         " optional unit K, M, G, T or P, e.g. 1024, 512M, 10GiB)")
    unit = match.group(2)
    value = int(match.group(1)) * 1024 ** (_UNITS.index(unit.upper()) + 1 if unit else 0)
    require(value < 2**63, lambda: f"size too large: {_show(raw)}")
    return value


def format_size(value: int) -> str:
    power = next((p for p in range(5, 0, -1) if value and value % 1024**p == 0), 0)
    return f"{value // 1024**power}{_UNITS[power - 1]}" if power else str(value)


@dataclass(frozen=True)
class BytesType(ValueType):
    """A size: a whole number of bytes with an optional unit K, M, G, T or P (powers of 1024,
    ASCII letters in any case, optionally followed by B or iB), e.g. 1024, 512M, 10GiB. Fractions ("1.5G")
    and negative sizes are rejected: write 1536M."""

    name = "bytes"
    example = "{attribute: provisiondSize, type: bytes, min: 1M, max: 10T}"
    min: int | None = _opt("smallest size, same notation", _size_opt)
    max: int | None = _opt("largest size, same notation", _size_opt)

    def __post_init__(self) -> None:
        _check_range(self.min, self.max, format_size)

    def parse(self, raw: str) -> int:
        return _bounded(_parse_size(_check_text(raw, 24)), self.min, self.max, format_size)


@dataclass(frozen=True)
class BooleanType(ValueType):
    """LDAP Boolean syntax: TRUE or FALSE (ASCII, any case)."""

    name = "boolean"
    example = "{attribute: sstIsActive, type: boolean, default: false}"

    def parse(self, raw: str) -> bool:
        raw = _check_text(raw, 5)
        valid = raw.isascii() and raw.upper() in ("TRUE", "FALSE")
        require(valid, lambda: f"not TRUE or FALSE: {_show(raw)}")
        return raw.upper() == "TRUE"


@dataclass(frozen=True)
class PosixNameType(_PatternType):
    """A POSIX user or group name: ^[a-z_][a-z0-9_-]{0,31}$."""

    name = "posix_name"
    example = "{attribute: uid, type: posix_name, allow_digits_first: true}"
    what = "a POSIX name"
    allow_digits_first: bool = _opt("also accept a leading digit (numeric uids)", bool_option, False)

    def parse(self, raw: str) -> str:
        first = "[a-z0-9_]" if self.allow_digits_first else "[a-z_]"
        raw = _check_text(raw, 32)
        require(re.fullmatch(first + "[a-z0-9_-]{0,31}", raw), lambda: f"not {self.what}: {_show(raw)}")
        return raw


@dataclass(frozen=True)
class PathSegmentType(_PatternType):
    """One file name component: [A-Za-z0-9._-], 1-255 characters, not starting with '.' or
    '-' (so never "." or "..")."""

    name = "path_segment"
    example = "{attribute: provisiondVolume, type: path_segment}"
    regex, what = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}", "a file name"


@dataclass(frozen=True)
class PathType(ValueType):
    """An absolute normalized POSIX path: components of [A-Za-z0-9._-] (not "." or ".."), no
    '//', no trailing '/' except "/" itself. Unnormalized paths are rejected, not fixed."""

    name = "path"
    example = "{attribute: provisiondPath, type: path, under: [/srv/backup]}"
    under: tuple[str, ...] = _opt(
        "absolute roots; the path must be strictly inside one",
        _list_opt(lambda root: PathType().parse(root)),
        (),
    )

    def parse(self, raw: str) -> str:
        raw = _check_text(raw, 4095)
        require(raw.startswith("/"), lambda: f"not an absolute path: {_show(raw)}")
        for part in raw[1:].split("/") if raw != "/" else ():
            require(part not in ("", ".", ".."), lambda: f"not normalized (//, . or ..): {_show(raw)}")
            require(re.fullmatch(r"[A-Za-z0-9._-]{1,255}", part), lambda: f"bad component in {_show(raw)}")
        inside = [r for r in self.under if raw != r and raw.startswith(r.rstrip("/") + "/")]
        require(inside or not self.under, lambda: f"not inside {', '.join(self.under)}: {_show(raw)}")
        return raw


@dataclass(frozen=True)
class HostnameType(ValueType):
    """An RFC 1123 host name (labels of 1-63 [A-Za-z0-9-] not starting or ending with '-',
    at most 253 characters, no trailing dot, last label not all digits) or, if allowed, an
    IPv4 or IPv6 address (no %scope). Returned as given."""

    name = "hostname"
    example = "{attribute: provisiondPortal, type: hostname, multi: true, required: false}"
    allow_ip: bool = _opt("also accept IPv4 and IPv6 addresses", bool_option, True)

    def parse(self, raw: str) -> str:
        raw = _check_text(raw, 253)
        if self.allow_ip and "%" not in raw:
            with contextlib.suppress(ValueError):
                ipaddress.ip_address(raw)
                return raw
        labels = raw.split(".")
        label = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
        what = "a host name or IP address" if self.allow_ip else "a host name"
        require(all(re.fullmatch(label, part) for part in labels), lambda: f"not {what}: {_show(raw)}")
        require(not labels[-1].isdigit(), lambda: f"not {what}: {_show(raw)}")
        return raw


@dataclass(frozen=True)
class IqnType(_PatternType):
    """An iSCSI name (RFC 3720): iqn.YYYY-MM.reversed.domain[:unique] in lowercase, eui. + 16
    hex digits, or naa. + 16 or 32 hex digits (uppercase hex); at most 223 bytes."""

    name = "iqn"
    example = "{attribute: provisiondInitiator, type: iqn, multi: true, required: false}"
    regex = (r"iqn\.[0-9]{4}-(?:0[1-9]|1[0-2])\.[a-z0-9-]+(?:\.[a-z0-9-]+)*(?::[a-z0-9.:-]+)?"
             r"|eui\.[0-9A-F]{16}|naa\.(?:[0-9A-F]{16}|[0-9A-F]{32})")
    limit, what = 223, "an iSCSI name"


def _rdns(dn: str) -> list[frozenset[tuple[str, str]]]:
    """RDNs as sets of lowercased (type, value). Escapes are compared as written: a DN escaped
    differently from the base compares unequal (rejected, never wrongly accepted)."""
    try:
        parts = parse_dn(dn)
    except Exception as exc:  # ldap3 raises several exception types for bad DNs
        raise ValueError(f"not a DN: {_show(dn)} ({exc})") from None
    rdns: list[frozenset[tuple[str, str]]] = []
    current: set[tuple[str, str]] = set()
    for attribute, value, separator in parts:
        current.add((attribute.lower(), value.lower()))
        if separator != "+":
            rdns.append(frozenset(current))
            current = set()
    return rdns


@dataclass(frozen=True)
class DnType(ValueType):
    """An LDAP DN (RFC 4514, parsed by ldap3). Charset "safe" allows only ASCII letters,
    digits, space and ._@+:,=-/ (so no escapes); "printable" allows escaped specials."""

    name = "dn"
    example = "{attribute: owner, type: dn, under: 'ou=people,dc=example,dc=org'}"
    under: str | None = _opt(
        "base DN the value must be at or below (ignoring case)",
        lambda value: DnType(charset="printable").parse(value),
    )
    charset: str = _opt("safe or printable", _one_of("safe", "printable"), "safe")

    def parse(self, raw: str) -> str:
        raw = _check_text(raw, 1024)
        _check_charset(raw, self.charset)
        rdns = _rdns(raw)
        if self.under is not None:
            base = _rdns(self.under)
            below = len(rdns) >= len(base) and rdns[len(rdns) - len(base):] == base
            require(below, lambda: f"not at or below {self.under}: {_show(raw)}")
        return raw


@dataclass(frozen=True)
class EnumType(ValueType):
    """One of a fixed list of strings; with ignore_case (ASCII letters only: "ß" is not "ss")
    the declared spelling is returned."""

    name = "enum"
    example = "{attribute: provisiondBackend, type: enum, choices: [lvm, zfs, file]}"
    choices: tuple[str, ...] = _opt(
        "accepted values (required)", _list_opt(lambda choice: _check_text(choice, 255)), ()
    )
    ignore_case: bool = _opt("compare case-insensitively", bool_option, False)

    def __post_init__(self) -> None:
        folded = {self._fold(choice) for choice in self.choices}
        if not self.choices or len(folded) != len(self.choices):
            raise SpecError("choices", "required: a non-empty list of distinct strings")

    def _fold(self, text: str) -> str:
        # ASCII case only: casefold() makes "ß" equal "ss" and the Kelvin sign equal "k"
        return text.translate(_ASCII_LOWER) if self.ignore_case else text

    def parse(self, raw: str) -> str:
        raw = _check_text(raw, 255)
        match = [choice for choice in self.choices if self._fold(choice) == self._fold(raw)]
        require(match, lambda: f"not one of {', '.join(self.choices)}: {_show(raw)}")
        return match[0]


@dataclass(frozen=True)
class DateType(_PatternType):
    """A calendar date written YYYYMMDD; the result is a datetime.date."""

    name = "date"
    example = "{attribute: provisiondExpires, type: date, required: false}"
    regex, limit, what = r"[0-9]{8}", 8, "a YYYYMMDD date"

    def parse(self, raw: str) -> datetime.date:
        raw = super().parse(raw)
        try:
            return datetime.date(int(raw[:4]), int(raw[4:6]), int(raw[6:]))
        except ValueError:
            raise ValueError(f"not a real date: {_show(raw)}") from None


TYPES: Mapping[str, type[ValueType]] = MappingProxyType({
    cls.name: cls
    for cls in (StringType, IntegerType, BytesType, BooleanType, PosixNameType, PathSegmentType,
                PathType, HostnameType, IqnType, DnType, EnumType, DateType)
})


