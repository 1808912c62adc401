"""docs/KINDS.md: the reference of the shipped service kinds, generated from their files.

A kind's vars, values and steps are declared in etc/kinds/KIND.yaml with their types and
descriptions; the reference is made from those declarations (as etc/provisiond.yaml is made
from the option schema), so it cannot drift from what the loader checks. Regenerate it with
`python -m provisiond.config.kinds_doc > docs/KINDS.md`; a test fails while it is stale.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from provisiond import paths
from provisiond.config.files import read_yaml
from provisiond.config.kind_vars import VAR_KEYS, describe_type, read_declaration
from provisiond.config.load import find_kind
from provisiond.config.schema import Where
from provisiond.host.jinja import make_environment, render_string
from provisiond.model.value_types import COMMON_KEYS, TYPES
from provisiond.model.values import ValueSpec, as_text

STEP_KEYS = ("name", "code", "timeout", "when")
ENV = make_environment(())

INTRO = """\
# Service kinds

<!-- Generated from etc/kinds/*.yaml by `python -m provisiond.config.kinds_doc >
docs/KINDS.md`; tests/config/test_kinds_doc.py fails while this file is stale. -->

A kind is a shipped service definition (`etc/kinds/KIND.yaml`; a file of the same name in
`/etc/provisiond/kinds` comes first). A service uses one with

```yaml
services:
  NAME: {kind: KIND, vars: {VAR: VALUE, ...}}
```

Each var the service sets must be one the kind declares, and is parsed with the var's type
when the configuration loads: a bad value stops provisiond with exit status 78 and
`FILE: services.NAME.vars.VAR: reason`, an unknown one names the kind's vars. Templates, paths
and hook argv get the typed values (an `integer` is a number, a `multi` var a list). Any other
key the service gives (`base`, `attributes`, `steps`, ...) replaces the kind's.

A kind declares each var as `VAR: {VAR_KEYS}`
plus the options of its type (the value types are those of LDAP values, listed at the end);
a plain value instead declares an untyped var with that default. The keys:

VAR_DOCS
"""


def _line(text: Any) -> str:
    """One line, `|` escaped (it would end a table cell)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _cell(text: Any) -> str:
    """Markdown text: one line, and `<uid>` shown, not taken for an HTML tag."""
    return _line(text).replace("<", "&lt;")


def _code(value: Any) -> str:
    if isinstance(value, list | tuple):
        value = "[" + ", ".join(as_text(item) for item in value) + "]"
    elif not isinstance(value, str):
        value = as_text(value)
    return f"`{_line(value)}`"


def _table(head: Iterable[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    head = list(head)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def _vars(data: Mapping[str, Any], where: Where) -> list[str]:
    rows = []
    for name, declaration in data.items():
        spec = read_declaration(str(name), declaration, where.child(str(name)))
        if spec.default is not None:
            default = _code(spec.default)
        else:
            default = "required" if spec.required else "unset"
        rows.append((f"`{name}`", _cell(describe_type(spec.type, spec.multi, spec.items)),
                     default, _cell(spec.description)))
    return _table(("var", "type", "default", "description"), rows) if rows else ["None."]


def _values(data: Mapping[str, Any], output: bool = False) -> list[str]:
    rows = []
    for name, declaration in data.items():
        spec = ValueSpec.from_mapping(str(name), declaration, output=output)
        missing = ("required" if spec.required
                   else f"default {_code(spec.default)}" if spec.default not in (None, [])
                   else "optional")
        rows.append((f"`{name}`", f"`{spec.attribute}`",
                     _cell(describe_type(spec.type, spec.multi)), missing,
                     spec.code or "invalid_code", _cell(spec.description)))
    head = ("value", "attribute", "type", "when missing", "ReturnValue if invalid",
            "description")
    return _table(head, rows) if rows else ["None."]


def _steps(data: Mapping[str, Any]) -> list[str]:
    rows = []
    for mode, steps in data.items():
        if isinstance(steps, str):
            rows.append((mode, f"the steps of {steps}", "", ""))
            continue
        for step in steps:
            kind = next((key for key in step if key not in STEP_KEYS), "")
            when = f" (when `{_line(step['when'])}`)" if step.get("when") else ""
            rows.append((mode, _cell(step.get("name", "")) + when, kind, step.get("code", "")))
    return _table(("mode", "step", "type", "ReturnValue when it fails"), rows)


def _unique(item: Any) -> str:
    """One `unique:` item: `NAME`, or `NAME` per parent."""
    if isinstance(item, Mapping):
        per = " (per parent)" if item.get("per") == "parent" else ""
        return f"`{_line(item.get('value'))}`{per}"
    return f"`{_line(item)}`"


def kind_section(name: str, directory: Path) -> list[str]:
    own = read_yaml(directory / f"{name}.yaml")
    data = find_kind(name, Where(str(directory / f"{name}.yaml")), dirs=(directory,))
    where = Where(str(directory / f"{name}.yaml"), "vars")
    lines = [f"## {name}", "", _cell(data.get("description", "")), ""]
    if own.get("extends"):
        lines += [f"Extends [{own['extends']}](#{own['extends']}): its definition with these "
                  "keys replaced or refined.", ""]
    state = data.get("attributes") or {}
    defaults = {str(key): read_declaration(str(key), value, where.child(str(key)))
                for key, value in (data.get("vars") or {}).items()}
    base = render_string(ENV, data.get("base", ""), {"vars": {
        key: spec.value(spec.default, where.child(key)) for key, spec in defaults.items()}})
    lines += [f"Entries: `{_line(data.get('filter', '(objectClass=*)'))}` under `{_line(base)}`"
              f" (with the default vars); the mode attribute "
              f"`{state.get('mode', 'sstProvisioningMode')}`; invalid_code "
              f"{data.get('invalid_code', 1)}.", ""]
    if data.get("unique"):
        lines += ["Unique (no two active entries share it; the later one fails): "
                  + ", ".join(_unique(item) for item in data["unique"]) + ".", ""]
    lines += ["### Vars", "", *_vars(data.get("vars") or {}, where), ""]
    lines += ["### Values", "", *_values(data.get("values") or {}), ""]
    if data.get("outputs"):
        lines += ["### Outputs", "", *_values(data["outputs"], output=True), ""]
    lines += ["### Steps", "", *_steps(data.get("steps") or {}), ""]
    return lines


def _value_types() -> list[str]:
    lines = ["## Value types", "",
             "The types of LDAP values (`values:`) and of vars. Every type rejects empty "
             "values, control and format characters and leading or trailing whitespace. "
             "A value declaration's keys: " + "; ".join(
                 f"`{key}`: {doc}" for key, doc in COMMON_KEYS.items()) + ".", ""]
    for cls in TYPES.values():
        lines += [f"### {cls.name}", "", " ".join(inspect.cleandoc(cls.__doc__ or "").split()),
                  ""]
        for option in fields(cls):
            default = "none" if option.default in (None, ()) else as_text(option.default).lower()
            lines.append(f"- `{option.name}`: {option.metadata['doc']} (default: {default})")
        lines += [f"- example: `{cls.example}`", ""]
    return lines


def kinds_markdown(directory: Path | None = None) -> str:
    """docs/KINDS.md for the kinds in `directory` (default: this installation's)."""
    directory = paths.shipped().kinds if directory is None else directory
    names = sorted(path.stem for path in directory.glob("*.yaml"))
    intro = INTRO.replace("VAR_KEYS", ", ".join(VAR_KEYS)).replace(
        "VAR_DOCS", "\n".join(f"- `{key}`: {doc}" for key, doc in VAR_KEYS.items()))
    lines = [intro, "The kinds:", "", *(f"- [{name}](#{name})" for name in names), ""]
    for name in names:
        lines += kind_section(name, directory)
    lines += _value_types()
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    sys.stdout.write(kinds_markdown())
