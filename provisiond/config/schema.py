"""The configuration schema: one description that drives validation, the sample file and the docs.

borgmatic's lesson: when the sample config, the docs and the validator are three things, they
drift. Here every option is declared once, as an `Option` inside a `Section`; `read_section`
validates a mapping against it (reporting file, key path and reason), `sample_yaml` renders
the commented example shipped as etc/provisiond.yaml and `reference_lines` the documentation
of nested mappings such as a service definition.

Loading reports every error, not only the first: readers raise `ConfigError`, and `Problems`
collects them part by part (a section, an option, a service), so one run of `check` shows an
operator all that is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(Exception):
    """Problems in configuration files, each located by file and dotted key path.

    `file`, `key` and `reason` are those of the first problem; `errors` holds every problem
    (each a ConfigError of its own), and str() shows one `FILE: key.path: reason` per line."""

    def __init__(self, file: str, key: str, reason: str,
                 errors: Iterable[ConfigError] = ()) -> None:
        self.file = file
        self.key = key
        self.reason = reason
        self.errors: tuple[ConfigError, ...] = tuple(errors) or (self,)
        super().__init__("\n".join(error.line() for error in self.errors))

    def line(self) -> str:
        return f"{self.file}: {self.key}: {self.reason}" if self.key else f"{self.file}: {self.reason}"

    @classmethod
    def combine(cls, errors: Iterable[ConfigError]) -> ConfigError:
        """One error carrying all of `errors` (each listed once, in the order found)."""
        found = tuple(dict.fromkeys(
            (one.file, one.key, one.reason) for error in errors for one in error.errors))
        singles = [cls(*problem) for problem in found]
        if len(singles) == 1:
            return singles[0]
        first = singles[0]
        return cls(first.file, first.key, first.reason, singles)


class Problems:
    """Collects ConfigErrors, so that reading goes on with the next part after one fails."""

    def __init__(self) -> None:
        self.found: list[ConfigError] = []

    def add(self, error: ConfigError) -> None:
        self.found.append(error)

    def attempt(self, read: Callable[..., T], *args: Any) -> T | None:
        """read(*args), or None after recording the ConfigError it raised."""
        try:
            return read(*args)
        except ConfigError as exc:
            self.add(exc)
            return None

    def check(self) -> None:
        """Raise every problem found so far as one ConfigError."""
        if self.found:
            raise ConfigError.combine(self.found)


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


def _check_text(value: Any, where: Where) -> str:
    if not isinstance(value, str):
        raise where.error(f"must be a string, not {value!r}")
    return value


def _check_str_list(value: Any, where: Where) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise where.error(f"must be a list of strings, not {value!r}")
    return tuple(_check_str(item, where.child(i)) for i, item in enumerate(value))


def _check_list(value: Any, where: Where) -> list[Any]:
    if not isinstance(value, list):
        raise where.error(f"must be a list, not {type(value).__name__}")
    return value


def mapping(data: Any, where: Where) -> Mapping[Any, Any]:
    """`data` as a mapping (absent, None: empty), or a ConfigError at `where`."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise where.error(f"must be a mapping, not {type(data).__name__}")
    return data


def _check_mapping(value: Any, where: Where) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise where.error(f"must be a mapping, not {type(value).__name__}")
    return value


CHECKERS: dict[str, Callable[[Any, Where], Any]] = {
    "bool": _check_bool,
    "int": _check_int,
    "number": _check_number,
    "str": _check_str,  # a non-empty string
    "text": _check_text,  # any string, "" included
    "list": _check_str_list,
    "mapping": _check_mapping,  # checked further by `section` or by the reader of the key
    "items": _check_list,  # a list of anything, checked further by the reader of the key
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
    section: Section | None = None  # a mapping whose keys this section describes

    def read(self, value: Any, where: Where) -> Any:
        checked = CHECKERS[self.kind](value, where)
        if self.section is not None:
            return read_section(self.section, checked, where)
        if self.choices and checked not in self.choices:
            raise where.error(f"must be one of {', '.join(self.choices)}, not {checked!r}")
        if self.minimum is not None and checked < self.minimum:
            raise where.error(f"must be at least {self.minimum:g}, not {_short(value)}")
        if self.maximum is not None and checked > self.maximum:
            raise where.error(f"must be at most {self.maximum:g}, not {_short(value)}")
        return checked

    def facts(self) -> list[str]:
        """What the documentation says besides `doc`: choices, range, default."""
        facts = []
        if self.choices:
            facts.append(f"One of: {', '.join(self.choices)}.")
        if self.minimum is not None and self.maximum is not None:
            facts.append(f"From {self.minimum:g} to {self.maximum:g}.")
        return facts


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

    def names(self) -> tuple[str, ...]:
        return tuple(option.name for option in self.options)


def read_section(section: Section, data: Any, where: Where,
                 problems: Problems | None = None) -> dict[str, Any]:
    """Validate `data` against `section`: every option, defaults filled in. Every problem is
    reported: raised together, or with `problems` added there, the options at fault then
    left out of the result (so the caller checks no further what is already wrong)."""
    mine = Problems()
    result: dict[str, Any] = {}
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        mine.add(where.error(f"must be a mapping, not {type(data).__name__}"))
        data = {}
    known = section.names()
    for key in data:
        if key not in known:
            mine.add(where.child(str(key)).error(
                f"unknown option (known: {', '.join(sorted(known))})"))
    for option in section.options:
        at = where.child(option.name)
        if option.name in data and data[option.name] is not None:
            value = data[option.name]
            read = mine.attempt(option.read, value, at)
            if read is not None:
                result[option.name] = read
        elif option.required:
            mine.add(at.error("is required"))
        elif option.section is not None:  # an absent mapping: its options' defaults
            result[option.name] = read_section(option.section, {}, at)
        else:
            result[option.name] = option.default
    if problems is None:
        mine.check()
    else:
        problems.found += mine.found
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
            lines += [f"{indent}# {fact}" for fact in option.facts()]
            value = option.example if option.example is not None else option.default
            active = option.required or option.example is not None
            lines.append(f"{indent}{'' if active else '# '}{option.name}: {_yaml_scalar(value)}")
        lines.append("")
    return "\n".join(lines) + tail


def reference_lines(section: Section, indent: str = "") -> list[str]:
    """Every option of `section` (and of the sections nested in it) as comment lines:
    `# name: doc` followed by its choices, range and default, wrapped to 95 columns."""
    lines = []
    for option in section.options:
        text = " ".join([option.doc, *option.facts()])
        if option.required:
            text += " Required."
        elif option.default not in (None, (), {}, "") and option.section is None:
            text += f" Default: {_yaml_scalar(option.default)}."
        lines += _wrapped(f"{option.name}: {text}", f"# {indent}", f"# {indent}    ")
        if option.section is not None:
            lines += reference_lines(option.section, indent + "    ")
    return lines


def _wrapped(text: str, first: str, rest: str, width: int = 95) -> list[str]:
    lines, line = [], first
    for word in text.split():
        if len(line) + len(word) + 1 > width and line.strip() not in ("#", ""):
            lines.append(line.rstrip())
            line = rest
        line += ("" if line.endswith(" ") else " ") + word
    lines.append(line.rstrip())
    return lines
