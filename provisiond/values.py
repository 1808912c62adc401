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

import contextlib
import datetime
import inspect
import ipaddress
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
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
    "multi": "accept several values; the result is a list (default: false)",
    "description": "free text for humans (default: empty)",
    "code": "ReturnValue when this value is invalid (default: the service's invalid_code)",
})
_CONTROL = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_SAFE_RE = re.compile(r"[A-Za-z0-9 ._@+:,=/-]")


class InvalidValue(Exception):
    """An LDAP value failed validation; the message is single-line with the raw value escaped."""

    def __init__(self, name: str, attribute: str, reason: str, code: int | None = None) -> None:
        super().__init__(name, attribute, reason)
        self.name, self.attribute, self.reason = name, attribute, _one_line(reason)
        self.code = code

    def __str__(self) -> str:
        return _one_line(f'value "{self.name}" (attribute {self.attribute}): {self.reason}')


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


def _one_line(text: str) -> str:
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


def _require(ok: object, message: str | Callable[[], str]) -> None:
    """Raise ValueError(message) unless `ok`; a callable message is only built on failure
    (the messages quote the value, which costs more than the check itself)."""
    if not ok:
        raise ValueError(message() if callable(message) else message)


def _at(key: str, convert: Callable[..., Any], *args: Any) -> Any:
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
    _require(raw, "empty value")
    _require(len(raw) <= limit, lambda: f"longer than {limit} characters: {_show(raw)}")
    bad = [c for c in raw if unicodedata.category(c) in _CONTROL]
    _require(not bad, lambda: f"control character {''.join(bad[:1])!r} in {_show(raw)}")
    _require(raw == raw.strip(), lambda: f"leading or trailing whitespace in {_show(raw)}")
    return raw


def _check_charset(raw: str, charset: str) -> None:
    if charset == "printable":
        _require(raw.isprintable(), lambda: f"non-printable character in {_show(raw)}")
    elif charset == "word":
        _require(re.fullmatch(r"\w+", raw, re.ASCII), lambda: f"only [A-Za-z0-9_] allowed: {_show(raw)}")
    else:
        bad = [c for c in raw if not _SAFE_RE.fullmatch(c)]
        _require(not bad, lambda: f"character {''.join(bad[:1])!r} not allowed: {_show(raw)}")
        _require(not raw.startswith("-"), lambda: f"leading '-' not allowed: {_show(raw)}")
        _require(".." not in raw.split("/"), lambda: f"'..' component not allowed: {_show(raw)}")


# Option converters raise ValueError (or SpecError with a sub-key); metadata holds the docs.


def _opt(doc: str, convert: Callable[[Any], Any], default: Any = None) -> Any:
    return field(default=default, metadata={"doc": doc, "convert": convert})


def _int_opt(value: Any) -> int:
    _require(isinstance(value, int) and not isinstance(value, bool), lambda: f"not an integer: {value!r}")
    return int(value)


def _length_opt(value: Any) -> int:
    _require(0 <= _int_opt(value) <= 65536, lambda: f"must be from 0 to 65536, not {value!r}")
    return int(value)


def _bool_opt(value: Any) -> bool:
    _require(isinstance(value, bool), lambda: f"must be true or false, not {value!r}")
    return bool(value)


def _size_opt(value: Any) -> int:
    return _parse_size(value if isinstance(value, str) else str(_int_opt(value)))


def _regex_opt(value: Any) -> re.Pattern[str]:
    _require(isinstance(value, str), lambda: f"must be a regular expression string, not {value!r}")
    try:
        return re.compile(value)
    except re.error as exc:
        raise ValueError(f"bad regular expression: {exc}") from None


def _one_of(*choices: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        _require(value in choices, lambda: f"must be one of {', '.join(choices)}, not {value!r}")
        return str(value)

    return convert


def _list_opt(item: Callable[[Any], str]) -> Callable[[Any], tuple[str, ...]]:
    def convert(value: Any) -> tuple[str, ...]:
        _require(isinstance(value, list | tuple), lambda: f"must be a list, not {value!r}")
        return tuple(_at(str(index), item, element) for index, element in enumerate(value))

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
            converted[key] = _at(str(key), known[key].metadata["convert"], value)
        return cls(**converted)


@dataclass(frozen=True)
class _PatternType(ValueType):
    """A value that must fully match `regex` (ASCII classes only; fullmatch, so no '$' trap)."""

    regex: ClassVar[str] = ""
    limit: ClassVar[int] = 255
    what: ClassVar[str] = ""

    def parse(self, raw: str) -> Any:
        raw = _check_text(raw, self.limit)
        _require(re.fullmatch(self.regex, raw), lambda: f"not {self.what}: {_show(raw)}")
        return raw


@dataclass(frozen=True)
class StringType(ValueType):
    """Text from a character set. "safe": ASCII letters, digits, space and ._@+:,=-/ with no
    leading '-' and no '..' component; "word": [A-Za-z0-9_]; "printable": any printable
    character (renderers must still quote and escape it)."""

    name = "string"
    example = "{attribute: description, type: string, max_length: 200, required: false}"
    pattern: re.Pattern[str] | None = _opt("regex the whole value must match", _regex_opt)
    min_length: int = _opt("minimum length in characters", _length_opt, 1)
    max_length: int = _opt("maximum length in characters", _length_opt, 255)
    charset: str = _opt("safe, word or printable", _one_of(*CHARSETS), "safe")

    def __post_init__(self) -> None:
        if self.min_length > self.max_length:
            raise SpecError("min_length", f"greater than max_length {self.max_length}")

    def parse(self, raw: str) -> str:
        raw = _check_text(raw, self.max_length)
        _require(len(raw) >= self.min_length, lambda: f"shorter than {self.min_length}: {_show(raw)}")
        _check_charset(raw, self.charset)
        if self.pattern is not None:
            pattern = self.pattern.pattern
            _require(self.pattern.fullmatch(raw),
                     lambda: f"does not match {pattern!r}: {_show(raw)}")
        return raw


def _bounded(value: int, low: int | None, high: int | None, show: Callable[[int], str]) -> int:
    _require(low is None or value >= low, lambda: f"{show(value)} is below the minimum {show(low or 0)}")
    _require(high is None or value <= high, lambda: f"{show(value)} is above the maximum {show(high or 0)}")
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
        _require(re.fullmatch(r"-?[0-9]{1,19}", raw), lambda: f"not an integer: {_show(raw)}")
        return _bounded(int(raw), self.min, self.max, str)


_UNITS = "KMGTP"


def _parse_size(raw: str) -> int:
    match = re.fullmatch(r"([0-9]{1,20})(?:([KMGTP])(?:I?B)?|B)?", raw, re.IGNORECASE)
    if not match:
        raise ValueError(f"not a size: {_show(raw)} (expected a whole number of bytes with an"
                         " optional unit K, M, G, T or P, e.g. 1024, 512M, 10GiB)")
    unit = match.group(2)
    value = int(match.group(1)) * 1024 ** (_UNITS.index(unit.upper()) + 1 if unit else 0)
    _require(value < 2**63, lambda: f"size too large: {_show(raw)}")
    return value


def _format_size(value: int) -> str:
    power = next((p for p in range(5, 0, -1) if value and value % 1024**p == 0), 0)
    return f"{value // 1024**power}{_UNITS[power - 1]}" if power else str(value)


@dataclass(frozen=True)
class BytesType(ValueType):
    """A size: a whole number of bytes with an optional unit K, M, G, T or P (powers of 1024,
    any case, optionally followed by B or iB), e.g. 1024, 512M, 10GiB. Fractions ("1.5G")
    and negative sizes are rejected: write 1536M."""

    name = "bytes"
    example = "{attribute: provisiondSize, type: bytes, min: 1M, max: 10T}"
    min: int | None = _opt("smallest size, same notation", _size_opt)
    max: int | None = _opt("largest size, same notation", _size_opt)

    def __post_init__(self) -> None:
        _check_range(self.min, self.max, _format_size)

    def parse(self, raw: str) -> int:
        return _bounded(_parse_size(_check_text(raw, 24)), self.min, self.max, _format_size)


@dataclass(frozen=True)
class BooleanType(ValueType):
    """LDAP Boolean syntax: TRUE or FALSE (ASCII, any case)."""

    name = "boolean"
    example = "{attribute: sstIsActive, type: boolean, default: false}"

    def parse(self, raw: str) -> bool:
        raw = _check_text(raw, 5)
        valid = raw.isascii() and raw.upper() in ("TRUE", "FALSE")
        _require(valid, lambda: f"not TRUE or FALSE: {_show(raw)}")
        return raw.upper() == "TRUE"


@dataclass(frozen=True)
class PosixNameType(_PatternType):
    """A POSIX user or group name: ^[a-z_][a-z0-9_-]{0,31}$."""

    name = "posix_name"
    example = "{attribute: uid, type: posix_name, allow_digits_first: true}"
    what = "a POSIX name"
    allow_digits_first: bool = _opt("also accept a leading digit (numeric uids)", _bool_opt, False)

    def parse(self, raw: str) -> str:
        first = "[a-z0-9_]" if self.allow_digits_first else "[a-z_]"
        raw = _check_text(raw, 32)
        _require(re.fullmatch(first + "[a-z0-9_-]{0,31}", raw), lambda: f"not {self.what}: {_show(raw)}")
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
        _require(raw.startswith("/"), lambda: f"not an absolute path: {_show(raw)}")
        for part in raw[1:].split("/") if raw != "/" else ():
            _require(part not in ("", ".", ".."), lambda: f"not normalized (//, . or ..): {_show(raw)}")
            _require(re.fullmatch(r"[A-Za-z0-9._-]{1,255}", part), lambda: f"bad component in {_show(raw)}")
        inside = [r for r in self.under if raw != r and raw.startswith(r.rstrip("/") + "/")]
        _require(inside or not self.under, lambda: f"not inside {', '.join(self.under)}: {_show(raw)}")
        return raw


@dataclass(frozen=True)
class HostnameType(ValueType):
    """An RFC 1123 host name (labels of 1-63 [A-Za-z0-9-] not starting or ending with '-',
    at most 253 characters, no trailing dot, last label not all digits) or, if allowed, an
    IPv4 or IPv6 address (no %scope). Returned as given."""

    name = "hostname"
    example = "{attribute: provisiondPortal, type: hostname, multi: true, required: false}"
    allow_ip: bool = _opt("also accept IPv4 and IPv6 addresses", _bool_opt, True)

    def parse(self, raw: str) -> str:
        raw = _check_text(raw, 253)
        if self.allow_ip and "%" not in raw:
            with contextlib.suppress(ValueError):
                ipaddress.ip_address(raw)
                return raw
        labels = raw.split(".")
        label = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
        what = "a host name or IP address" if self.allow_ip else "a host name"
        _require(all(re.fullmatch(label, part) for part in labels), lambda: f"not {what}: {_show(raw)}")
        _require(not labels[-1].isdigit(), lambda: f"not {what}: {_show(raw)}")
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
            _require(below, lambda: f"not at or below {self.under}: {_show(raw)}")
        return raw


@dataclass(frozen=True)
class EnumType(ValueType):
    """One of a fixed list of strings; with ignore_case the declared spelling is returned."""

    name = "enum"
    example = "{attribute: provisiondBackend, type: enum, choices: [lvm, zfs, file]}"
    choices: tuple[str, ...] = _opt(
        "accepted values (required)", _list_opt(lambda choice: _check_text(choice, 255)), ()
    )
    ignore_case: bool = _opt("compare case-insensitively", _bool_opt, False)

    def __post_init__(self) -> None:
        folded = {self._fold(choice) for choice in self.choices}
        if not self.choices or len(folded) != len(self.choices):
            raise SpecError("choices", "required: a non-empty list of distinct strings")

    def _fold(self, text: str) -> str:
        return text.casefold() if self.ignore_case else text

    def parse(self, raw: str) -> str:
        raw = _check_text(raw, 255)
        match = [choice for choice in self.choices if self._fold(choice) == self._fold(raw)]
        _require(match, lambda: f"not one of {', '.join(self.choices)}: {_show(raw)}")
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

    @classmethod
    def from_mapping(cls, name: str, data: Mapping[str, Any]) -> ValueSpec:
        """A spec from its YAML declaration; SpecError names the key at fault."""
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise SpecError("", f"value name {name!r} must match ^[a-z][a-z0-9_]*$")
        attribute = _at("attribute", _attribute_opt, data.get("attribute"))
        type_name = data.get("type")
        if not isinstance(type_name, str) or type_name not in TYPES:
            what = "missing" if type_name is None else f"unknown type {type_name!r}"
            raise SpecError("type", f"{what}; known types: {', '.join(TYPES)}")
        options = {key: value for key, value in data.items() if key not in COMMON_KEYS}
        value_type = TYPES[type_name].from_options(options)
        default = data.get("default")
        required = _at("required", _bool_opt, data.get("required", default is None))
        multi = _at("multi", _bool_opt, data.get("multi", False))
        description = data.get("description", "")
        if not isinstance(description, str):
            raise SpecError("description", f"must be a string, not {description!r}")
        code = data.get("code")
        if code is not None and (isinstance(code, bool) or not isinstance(code, int)
                                 or not 0 < code < 1000):
            raise SpecError("code", f"must be an error code from 1 to 999, not {code!r}")
        if default is not None and required:
            raise SpecError("default", "a required value never uses its default; drop one")
        if default is not None:
            default = _at("default", _parse_default, value_type, default, multi)
        elif multi:
            default = []
        return cls(name, attribute, value_type, required, default, multi, description, code)

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
            raise InvalidValue(self.name, self.attribute, str(exc), self.code) from None
        return parsed if self.multi else parsed[0]


def _attribute_opt(value: Any) -> str:
    _require(value is not None, "missing")
    valid = isinstance(value, str) and ATTRIBUTE_RE.fullmatch(value)
    _require(valid, lambda: f"not an LDAP attribute name: {value!r}")
    return str(value)


def _parse_default(value_type: ValueType, value: Any, multi: bool) -> Any:
    """YAML turns 0, false and dates into objects: write them back as LDAP text, then parse."""
    if multi:
        _require(isinstance(value, list), "must be a list when multi is true")
        return [_at(str(i), _parse_default, value_type, v, False) for i, v in enumerate(value)]
    valid = isinstance(value, str | int | datetime.date)
    _require(valid, lambda: f"must be text, a number or a boolean, not {value!r}")
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
