"""Vars: a service's settings, declared with the value types of LDAP values.

Vars reach templates, paths and hook argv just as LDAP values do. Untyped, a site's
`schedule_start_hour: "8pm"` loaded fine and became 0 through `| int` in a template; so a kind
declares each var with a type from `model/value_types.py` (`schedule_start_hour: {type:
integer, min: 0, max: 23, default: 20}`) and a site's value is parsed with that type at load:
a bad one stops the daemon with exit 78 naming `services.NAME.vars.VAR`, and templates get
typed values (an integer is an int, a list a list).

A plain value instead of a declaration (`root: /srv/x`) declares an untyped var with that
default, passed on as YAML read it (only checked to be finite): kept for spelled-out site
services; the shipped kinds declare every var with a type.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any

from provisiond.config.schema import ConfigError, Problems, Where, mapping
from provisiond.model.value_types import (
    NAME_RE,
    TYPES,
    BytesType,
    SpecError,
    ValueType,
    format_size,
)
from provisiond.model.values import as_text

VAR_KEYS: Mapping[str, str] = MappingProxyType({
    "type": "one of the value types (those of `values:`); without it the var is untyped",
    "default": "its value when the service sets none, written as in YAML (20, true, "
               "/var/backup, [a, b])",
    "required": "false: the var may be unset (none; templates test `{% if vars.NAME %}`); "
                "default: true",
    "multi": "a list of values (default: false)",
    "items": "with multi: exactly this many values",
    "description": "what the var is for (shown in docs/KINDS.md)",
})
# `vars.items` in a template would find the dict method, not the var.
RESERVED_NAMES = frozenset(name for name in dir(dict) if not name.startswith("_"))


@dataclass(frozen=True)
class VarSpec:
    """One declared var. `type` None: untyped, its value taken as YAML read it."""

    name: str
    type: ValueType | None = None
    default: Any = None
    required: bool = True
    multi: bool = False
    items: int | None = None
    description: str = ""

    def value(self, raw: Any, where: Where) -> Any:
        """The typed value of `raw` (the default or the service's value), or ConfigError."""
        if self.type is None:
            _finite(raw, where)
            return raw
        if raw is None or raw == "":
            if self.required:
                raise where.error("must be set" + ("" if raw is None else ", not empty"))
            return None
        if not self.multi:
            return _parse(self.type, raw, where)
        if not isinstance(raw, list):
            raise where.error(f"must be a list (multi), not {raw!r}")
        if self.items is not None and len(raw) != self.items:
            raise where.error(f"must be a list of {self.items} values, not {len(raw)}")
        return [_parse(self.type, item, where.child(i)) for i, item in enumerate(raw)]


def _parse(value_type: ValueType, raw: Any, where: Where) -> Any:
    """YAML reads 20, true and 2024-01-31 as objects: written back as LDAP text, then parsed
    exactly as an LDAP value of that type would be."""
    if not isinstance(raw, str | int | datetime.date):  # bool is an int
        raise where.error(f"must be text, a whole number, true, false or a date, not {raw!r}")
    try:
        return value_type.parse(as_text(raw))
    except ValueError as exc:
        raise where.error(str(exc)) from None


def _finite(data: Any, where: Where) -> None:
    """An untyped var reaches templates and their filters: a YAML .nan or .inf is a mistake."""
    if isinstance(data, float) and not math.isfinite(data):
        raise where.error(f"must be a finite number, not {data!r}")
    if isinstance(data, Mapping):
        for key, value in data.items():
            _finite(value, where.child(str(key)))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            _finite(value, where.child(i))


def _flag(data: Mapping[str, Any], key: str, default: bool, where: Where) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise where.child(key).error(f"must be true or false, not {value!r}")
    return value


def read_declaration(name: str, data: Any, where: Where) -> VarSpec:
    """A VarSpec from `NAME: {type: ..., ...}`, or from a plain value (untyped)."""
    if not NAME_RE.fullmatch(name) or name in RESERVED_NAMES:
        reason = ("is a method of a mapping in templates; choose another name"
                  if name in RESERVED_NAMES else "a var name matches ^[a-z][a-z0-9_]*$")
        raise where.error(reason)
    if not isinstance(data, Mapping):
        return VarSpec(name, default=data, required=False)
    description = data.get("description", "")
    if not isinstance(description, str):
        raise where.child("description").error(f"must be a string, not {description!r}")
    type_name = data.get("type")
    options = {key: value for key, value in data.items() if key not in VAR_KEYS}
    if type_name is None:
        if set(data) - {"default", "description"}:
            raise where.child("type").error(
                f"is required with {', '.join(sorted(set(data) - {'default', 'description'}))}"
                f" (known types: {', '.join(TYPES)})")
        return VarSpec(name, default=data.get("default"), required=False,
                       description=description)
    if not isinstance(type_name, str) or type_name not in TYPES:
        raise where.child("type").error(
            f"unknown type {type_name!r}; known types: {', '.join(TYPES)}")
    known = [option.name for option in fields(TYPES[type_name])]
    for key in options:
        if key not in known:
            raise where.child(str(key)).error(
                f"unknown key; options of {type_name}: {', '.join(known) or 'none'}; "
                f"var keys: {', '.join(VAR_KEYS)}")
    try:
        value_type = TYPES[type_name].from_options(options)
    except SpecError as exc:
        raise (where.child(exc.key) if exc.key else where).error(exc.reason) from None
    multi = _flag(data, "multi", False, where)
    items = data.get("items")
    if items is not None and (not multi or isinstance(items, bool) or not isinstance(items, int)
                              or not 1 <= items <= 1000):
        raise where.child("items").error(
            f"must be a whole number from 1 to 1000, with multi: true (not {items!r})")
    spec = VarSpec(name, value_type, data.get("default"), _flag(data, "required", True, where),
                   multi, items, description)
    if spec.default is not None:
        spec.value(spec.default, where.child("default"))
    return spec


def read_vars(data: Any, where: Where) -> dict[str, Any]:
    """Name -> typed value of every var declared in a definition's `vars:`; every problem
    is reported (ConfigError)."""
    problems = Problems()
    found: dict[str, Any] = {}
    for name, declaration in mapping(data, where).items():
        at = where.child(str(name))
        try:
            spec = read_declaration(str(name), declaration, at)
            found[str(name)] = spec.value(spec.default, at)
        except ConfigError as exc:
            problems.add(exc)
    problems.check()
    return found


def set_vars(declarations: Any, given: Any, kind: str, where: Where) -> dict[str, Any]:
    """The kind's `declarations` with the service's `given` values as their defaults, each
    given value checked against its declared type here (so its error names `vars.NAME`)."""
    problems = Problems()
    if not isinstance(declarations, Mapping | None):
        raise where.error(f"kind {kind}: its vars must be a mapping")
    declared = dict(declarations or {})
    merged = dict(declared)
    for name, raw in mapping(given, where).items():
        at = where.child(str(name))
        if name not in declared:
            problems.add(at.error(
                f"not a var of kind {kind} (known: {', '.join(sorted(map(str, declared)))})"))
            continue
        declaration = declared[name]
        try:
            read_declaration(str(name), declaration, at).value(raw, at)
        except ConfigError as exc:
            problems.add(exc)
            continue
        base = declaration if isinstance(declaration, Mapping) else {}
        merged[name] = {**base, "default": raw}
    problems.check()
    return merged


def describe_type(value_type: ValueType | None, multi: bool = False,
                  items: int | None = None) -> str:
    """`integer (min 0; max 23)`: the type and the options that differ from their default."""
    if value_type is None:
        return "untyped"
    options = []
    for option in fields(value_type):
        value = getattr(value_type, option.name)
        if value != option.default:
            shown = value.pattern if hasattr(value, "pattern") else value
            if isinstance(value_type, BytesType):  # min 1M, not 1048576
                shown = format_size(value)
            shown = ", ".join(map(str, shown)) if isinstance(shown, tuple) else shown
            options.append(f"{option.name} {shown}")
    if multi:
        options.append(f"a list of {items}" if items else "a list")
    return value_type.name + (f" ({'; '.join(options)})" if options else "")
