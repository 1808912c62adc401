"""The configuration schema: one description that drives both validation and the sample file.

borgmatic's lesson: when the sample config, the docs and the validator are three things, they
drift. Here every option is declared once, as an `Option` inside a `Section`; `read_section`
validates a mapping against it (reporting file, key path and reason), and `sample_yaml`
renders the commented example shipped as etc/provisiond.yaml.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class ConfigError(Exception):
    """A problem in a configuration file, located by file and dotted key path."""

    def __init__(self, file: str, key: str, reason: str) -> None:
        super().__init__(f"{file}: {key}: {reason}" if key else f"{file}: {reason}")
        self.file = file
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class Where:
    """Where a value came from, so every error can name the file and the key path."""

    file: str
    key: str = ""

    def child(self, name: str | int) -> Where:
        if isinstance(name, int):
            return Where(self.file, f"{self.key}[{name}]")
        return Where(self.file, f"{self.key}.{name}" if self.key else name)

    def error(self, reason: str) -> ConfigError:
        return ConfigError(self.file, self.key, reason)


def _check_bool(value: Any, where: Where) -> bool:
    if not isinstance(value, bool):
        raise where.error(f"must be true or false, not {value!r}")
    return value


def _check_int(value: Any, where: Where) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise where.error(f"must be a whole number, not {value!r}")
    return value


def _check_number(value: Any, where: Where) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise where.error(f"must be a number, not {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        # YAML's .nan and .inf: a timeout of nan never fires, one of inf never ends
        raise where.error(f"must be a finite number, not {value!r}")
    # an int such as 10**400 cannot become a float; the bounds refuse it anyway
    return value if isinstance(value, float) else float(max(-(2**63), min(value, 2**63)))


def _check_str(value: Any, where: Where) -> str:
    if not isinstance(value, str) or not value:
        raise where.error(f"must be a non-empty string, not {value!r}")
    return value


def _check_str_list(value: Any, where: Where) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise where.error(f"must be a list of strings, not {value!r}")
    return tuple(_check_str(item, where.child(i)) for i, item in enumerate(value))


CHECKERS: dict[str, Callable[[Any, Where], Any]] = {
    "bool": _check_bool,
    "int": _check_int,
    "number": _check_number,
    "str": _check_str,
    "list": _check_str_list,
}


@dataclass(frozen=True)
class Option:
    name: str
    kind: str  # a key of CHECKERS
    doc: str
    default: Any = None
    required: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None  # every number has both: no option is unbounded
    example: Any = None

    def read(self, value: Any, where: Where) -> Any:
        checked = CHECKERS[self.kind](value, where)
        if self.choices and checked not in self.choices:
            raise where.error(f"must be one of {', '.join(self.choices)}, not {checked!r}")
        if self.minimum is not None and checked < self.minimum:
            raise where.error(f"must be at least {self.minimum:g}, not {_short(value)}")
        if self.maximum is not None and checked > self.maximum:
            raise where.error(f"must be at most {self.maximum:g}, not {_short(value)}")
        return checked


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:20]}... ({len(text)} digits)"


@dataclass(frozen=True)
class Section:
    name: str
    doc: str
    options: tuple[Option, ...] = field(default_factory=tuple)

    def option(self, name: str) -> Option:
        for option in self.options:
            if option.name == name:
                return option
        raise KeyError(name)


def read_section(section: Section, data: Any, where: Where) -> dict[str, Any]:
    """Validate `data` against `section`; returns every option, defaults filled in."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise where.error(f"must be a mapping, not {type(data).__name__}")
    known = {option.name for option in section.options}
    for key in data:
        if key not in known:
            raise where.child(str(key)).error(
                f"unknown option (known: {', '.join(sorted(known))})"
            )
    result: dict[str, Any] = {}
    for option in section.options:
        if option.name in data and data[option.name] is not None:
            result[option.name] = option.read(data[option.name], where.child(option.name))
        elif option.required:
            raise where.child(option.name).error("is required")
        else:
            result[option.name] = option.default
    return result


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_yaml_scalar(v) for v in value) + "]"
    if value is None:
        return "null"
    return str(value)


def sample_yaml(sections: tuple[Section, ...], tail: str = "") -> str:
    """The commented example configuration, generated from the schema."""
    lines = ["# provisiond configuration (generated from provisiond/config/schema.py).", ""]
    for section in sections:
        lines.append(f"# {section.doc}")
        indent = "  " if section.name else ""
        if section.name:
            lines.append(f"{section.name}:")
        for option in section.options:
            lines.append(f"{indent}# {option.doc}")
            if option.choices:
                lines.append(f"{indent}# One of: {', '.join(option.choices)}.")
            if option.minimum is not None and option.maximum is not None:
                lines.append(f"{indent}# From {option.minimum:g} to {option.maximum:g}.")
            value = option.example if option.example is not None else option.default
            active = option.required or option.example is not None
            lines.append(f"{indent}{'' if active else '# '}{option.name}: {_yaml_scalar(value)}")
        lines.append("")
    return "\n".join(lines) + tail
