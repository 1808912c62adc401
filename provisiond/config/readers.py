"""Readers of single options in a service definition (step types read theirs with these):
each checks one YAML value and raises a ConfigError naming its key path, so a typo stops the
load instead of failing an entry."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

import jinja2

from provisiond.config.files import check_template
from provisiond.config.schema import Where, mapping
from provisiond.host.jinja import check_string

__all__ = ["argv", "code", "inline", "mapping", "octal", "options", "template", "text"]


def options(data: Any, where: Where, known: Collection[str],
            shorthand: str | None = None) -> Mapping[str, Any]:
    """A mapping of options, none of them unknown (a plain string: the `shorthand` option)."""
    if shorthand is not None and isinstance(data, str):
        data = {shorthand: data}
    data = mapping(data, where)
    unknown = set(data) - set(known)
    if unknown:
        raise where.child(sorted(unknown)[0]).error("unknown option")
    return data


def text(data: Mapping[str, Any], key: str, where: Where) -> str:
    """The non-empty string at `key`."""
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise where.child(key).error("is required" if value is None else "must be a string")
    return value


def code(value: Any, where: Where) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 1000:
        raise where.error(f"must be an error code from 1 to 999, not {value!r}")
    return value


def octal(value: Any, where: Where, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML reads an unquoted 0644 as the number 420; 644 and 0644 cannot be told apart
        raise where.error(f"write the mode quoted, such as \"0644\": YAML reads an unquoted "
                          f"0644 as the decimal number 420 (got {value!r})")
    if not isinstance(value, str) or not re.fullmatch(r"0?[0-7]{3,4}", value):
        raise where.error(f"must be an octal file mode such as \"0644\", not {value!r}")
    return int(value, 8)


def inline(env: jinja2.Environment, source: str, where: Where) -> str:
    """An inline template (a path, an argv item), compiled now."""
    try:
        check_string(env, source)
    except jinja2.TemplateSyntaxError as exc:
        raise where.error(f"template syntax error: {exc.message}") from exc
    return source


def argv(env: jinja2.Environment, data: Any, where: Where) -> tuple[str, ...]:
    if not isinstance(data, list) or not data or not all(isinstance(a, str) for a in data):
        raise where.error("must be a non-empty list of strings (an argv; no shell is used)")
    return tuple(inline(env, arg, where.child(i)) for i, arg in enumerate(data))


def template(env: jinja2.Environment, name: str, where: Where) -> str:
    """A template file, with what it extends, includes and imports: not UTF-8, missing or a
    syntax error stops the load."""
    try:
        check_template(env, name)
    except ValueError as exc:
        raise where.error(str(exc)) from exc
    return name
