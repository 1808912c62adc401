"""Typed validation of LDAP attribute values: only validated values reach templates and hooks.

Entries may be written by untrusted self-care portals, and their values end up in
rsnapshot.conf (TAB-separated lines), bacula-sd.conf (quoted), scst.conf (whose parser treats
`{`, `}` and `#` specially even inside quotes) and hook argv. Escaping cannot be trusted for
all of these, so each value is checked against a declared type with a strict character set.
Every type rejects empty values, control and format characters (TAB, CR, LF, NUL, U+2028,
U+202E, ...) and leading or trailing whitespace. Messages show raw values escaped and
truncated, so they stay single-line and safe for syslog and for reports written to LDAP.
"""

from __future__ import annotations

import datetime
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from provisiond.model.value_types import (
    ATTRIBUTE_RE,
    COMMON_KEYS,
    NAME_RE,
    TYPES,
    DnType,
    SpecError,
    StringType,
    ValueType,
    at_key,
    bool_option,
    has_control_characters,
    one_line,
    require,
)

# What other modules take from here; the types themselves live in value_types.
__all__ = ["REPORT_TO", "TYPES", "DnType", "InvalidValue", "SpecError", "StringType", "ValueSpec",
           "ValueType", "as_text", "has_control_characters", "parse_entry", "public",
           "sample_declaration", "secret_texts"]
REPORT_TO = ("entry", "parent")  # where an output is written (ValueSpec.report_to)


class InvalidValue(Exception):
    """An LDAP value failed validation; the message is single-line with the raw value escaped."""

    def __init__(self, name: str, attribute: str, reason: str, code: int | None = None) -> None:
        super().__init__(name, attribute, reason)
        self.name, self.attribute, self.reason = name, attribute, one_line(reason)
        self.code = code

    def __str__(self) -> str:
        return one_line(f'value "{self.name}" (attribute {self.attribute}): {self.reason}')


@dataclass(frozen=True)
class ValueSpec:
    """One declared value: which attribute it comes from and what it must look like."""

    name: str
    attribute: str
    type: ValueType
    required: bool = True
    default: Any = None
    multi: bool = False
    description: str = ""
    code: int | None = None
    report_to: str = "entry"  # outputs: the entry, or its parent entry (REPORT_TO)
    on_failure: bool = False  # outputs: also written with a failure report (steps/outputs.py)
    secret: bool = False  # values: never in hook environments, previews or messages

    @classmethod
    def from_mapping(cls, name: str, data: Mapping[str, Any], output: bool = False) -> ValueSpec:
        """A spec from its YAML declaration (`output`: under `outputs:`); SpecError names the
        key at fault."""
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise SpecError("", f"value name {name!r} must match ^[a-z][a-z0-9_]*$")
        attribute = at_key("attribute", _attribute_opt, data.get("attribute"))
        type_name = data.get("type")
        if not isinstance(type_name, str) or type_name not in TYPES:
            what = "missing" if type_name is None else f"unknown type {type_name!r}"
            raise SpecError("type", f"{what}; known types: {', '.join(TYPES)}")
        options = {key: value for key, value in data.items() if key not in COMMON_KEYS}
        value_type = TYPES[type_name].from_options(options)
        default = data.get("default")
        required = at_key("required", bool_option, data.get("required", default is None))
        multi = at_key("multi", bool_option, data.get("multi", False))
        description = data.get("description", "")
        if not isinstance(description, str):
            raise SpecError("description", f"must be a string, not {description!r}")
        code = data.get("code")
        if code is not None and (isinstance(code, bool) or not isinstance(code, int)
                                 or not 0 < code < 1000):
            raise SpecError("code", f"must be an error code from 1 to 999, not {code!r}")
        report_to = data.get("report_to", "entry")
        if "report_to" in data and not output:
            raise SpecError("report_to", "only outputs take report_to: a value is read from "
                            "the entry, never written anywhere")
        if report_to not in REPORT_TO:
            raise SpecError("report_to", f"must be {' or '.join(REPORT_TO)}, not {report_to!r}")
        if "on_failure" in data and not output:
            raise SpecError("on_failure", "only outputs take on_failure: a value is read from "
                            "the entry, never written to it")
        on_failure = at_key("on_failure", bool_option, data.get("on_failure", False))
        if "secret" in data and output:
            raise SpecError("secret", "only values take secret: an output is written to the "
                            "directory and logged")
        secret = at_key("secret", bool_option, data.get("secret", False))
        if default is not None and required:
            raise SpecError("default", "a required value never uses its default; drop one")
        if default is not None:
            default = at_key("default", _parse_default, value_type, default, multi)
        elif multi:
            default = []
        return cls(name, attribute, value_type, required, default, multi, description, code,
                   report_to, on_failure, secret)

    def parse_values(self, raw_values: Sequence[str]) -> Any:
        """The typed value (a list when multi) from the attribute's values, or InvalidValue."""
        values = [raw_values] if isinstance(raw_values, str) else list(raw_values)
        if not values:
            if self.required:
                raise InvalidValue(self.name, self.attribute, "missing", self.code)
            return list(self.default) if self.multi else self.default
        if not self.multi and len(values) > 1:
            reason = f"{len(values)} values where one is allowed"
            raise InvalidValue(self.name, self.attribute, reason, self.code)
        try:
            parsed = [self.type.parse(raw) for raw in values]
        except ValueError as exc:
            # a type's reason quotes the raw value: not a secret's
            reason = (f"not a valid {self.type.name} (a secret: its value is not shown)"
                      if self.secret else str(exc))
            raise InvalidValue(self.name, self.attribute, reason, self.code) from None
        return parsed if self.multi else parsed[0]


def public(specs: Sequence[ValueSpec], values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` without the secret ones (and unset ones): what a hook's environment and a
    preview may show."""
    hidden = {spec.name for spec in specs if spec.secret}
    return {name: value for name, value in values.items()
            if name not in hidden and value is not None}


def secret_texts(specs: Sequence[ValueSpec], values: Mapping[str, Any]) -> list[str]:
    """The text forms of the secret values, to take out of whatever is shown."""
    found: list[str] = []
    for spec in specs:
        value = values.get(spec.name) if spec.secret else None
        for item in value if isinstance(value, list) else [value]:
            if item is not None and as_text(item):
                found.append(as_text(item))
    return found


def _attribute_opt(value: Any) -> str:
    require(value is not None, "missing")
    valid = isinstance(value, str) and ATTRIBUTE_RE.fullmatch(value)
    require(valid, lambda: f"not an LDAP attribute name: {value!r}")
    return str(value)


def _parse_default(value_type: ValueType, value: Any, multi: bool) -> Any:
    """YAML turns 0, false and dates into objects: write them back as LDAP text, then parse."""
    if multi:
        require(isinstance(value, list), "must be a list when multi is true")
        return [at_key(str(i), _parse_default, value_type, v, False) for i, v in enumerate(value)]
    valid = isinstance(value, str | int | datetime.date)
    require(valid, lambda: f"must be text, a number or a boolean, not {value!r}")
    return value_type.parse(as_text(value))


def parse_entry(
    specs: Sequence[ValueSpec], attributes: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    """Name -> typed value for one entry; `attributes` is keyed by lowercased attribute name
    (a bare string counts as one value). Raises the first InvalidValue in declaration order."""
    return {
        spec.name: spec.parse_values(attributes.get(spec.attribute.lower(), ())) for spec in specs
    }


def as_text(value: Any) -> str:
    """Canonical text for env vars and argv: TRUE/FALSE, decimal, YYYYMMDD, None as "", and
    lists as items joined with ',' (ambiguous if items contain ','; templates should iterate)."""
    if value is None or isinstance(value, str):
        return value or ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime.date):
        return f"{value.year:04d}{value.month:02d}{value.day:02d}"
    if isinstance(value, list | tuple):
        return ",".join(as_text(item) for item in value)
    raise TypeError(f"no text form for {type(value).__name__}")


def sample_declaration() -> str:
    """Commented YAML documenting every type and option, with one loadable example per type."""
    lines = [
        "# Values: typed LDAP attribute values; only validated values reach templates and hooks.",
        "# Each entry under `values:` maps a name (^[a-z][a-z0-9_]*$, used as a template variable",
        "# and an environment variable suffix) to a declaration with these keys:",
        *(f"#   {key}: {doc}" for key, doc in COMMON_KEYS.items()),
        "# plus the options of its type. Every type rejects empty values, control and format",
        "# characters (TAB, CR, LF, NUL, U+2028, U+202E, ...) and leading or trailing whitespace.",
    ]
    for cls in TYPES.values():
        lines += ["#", f"# type: {cls.name}"]
        lines += [f"#   {line}" for line in inspect.cleandoc(cls.__doc__ or "").splitlines()]
        for option in fields(cls):
            default = "none" if option.default in (None, ()) else as_text(option.default).lower()
            lines.append(f"#   option {option.name}: {option.metadata['doc']} (default: {default})")
    lines.append("values:")
    lines += [f"  {cls.name}_example: {cls.example}" for cls in TYPES.values()]
    return "\n".join(lines) + "\n"

