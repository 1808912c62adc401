"""Step types: what a service does for an entry, one module per type of step.

The registry below is the one place that lists them. The configuration reads a step through
its type (`parse_step`), the pipeline runs the type's plan, `provisiond render` describes the
same plan and `provisiond check` asks the type what to check (steps/base.py): a new step type
is a new module here, with its Action in model/settings.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import jinja2
from jinja2 import meta

from provisiond.config import readers
from provisiond.config.schema import Where
from provisiond.host.jinja import RenderError, render_string
from provisiond.model.conditions import Condition, ConditionError, parse
from provisiond.model.settings import Step
from provisiond.model.values import has_control_characters
from provisiond.steps.base import StepType
from provisiond.steps.hook import HOOK
from provisiond.steps.mkdir import MKDIR
from provisiond.steps.remove import REMOVE
from provisiond.steps.render import RENDER

# In the order a definition's error message lists them.
STEP_TYPES: Mapping[str, StepType[Any]] = {kind.name: kind for kind in (RENDER, HOOK, MKDIR, REMOVE)}
_BY_ACTION = {kind.action: kind for kind in STEP_TYPES.values()}


def step_type(step: Step) -> StepType[Any]:
    """The type of `step`, found by its Action."""
    return _BY_ACTION[type(step.action)]


def kind_of(step: Step) -> str:
    """What `render` calls the step: its type, or `admin hook`."""
    return "admin hook" if step.admin else step_type(step).name


def parse_step(data: Any, where: Where, env: jinja2.Environment) -> Step:
    """A step definition: `name`, `code` and exactly one step type's key (with that type's
    options beside it)."""
    data = readers.mapping(data, where)
    kinds = [name for name in STEP_TYPES if name in data]
    if len(kinds) != 1:
        raise where.error(f"needs exactly one of {', '.join(STEP_TYPES)}")
    owners: dict[str, list[str]] = {}
    for kind in STEP_TYPES.values():
        for option in kind.options:
            owners.setdefault(option, []).append(kind.name)
    unknown = set(data) - {"name", "code", "when", "serialize", *STEP_TYPES, *owners}
    if unknown:
        raise where.child(sorted(unknown)[0]).error("unknown step option")
    kind = STEP_TYPES[kinds[0]]
    for option, names in owners.items():
        if option in data and kind.name not in names:
            raise where.child(option).error(f"only {' and '.join(names)} steps have a {option}")
    action = kind.parse(data, where, env)
    return Step(name=readers.text(data, "name", where),
                code=readers.code(data.get("code"), where.child("code")), action=action,
                when=_condition(data.get("when"), where.child("when")),
                serialize=serialize_key(data.get("serialize"), where.child("serialize"), env,
                                        STEP_KEY_NAMES))


def _condition(data: Any, where: Where) -> Condition | None:
    """A step's `when:` parsed (model/conditions.py); its names are checked against the
    service's values and vars once those are read (config/services.py)."""
    if data is None:
        return None
    if not isinstance(data, str):
        raise where.error("must be a condition in quotes, e.g. \"values.backend == 'lvm'\"")
    try:
        return parse(data)
    except ConditionError as exc:
        raise where.error(f"{exc}") from exc


# What a `serialize:` key may read (core/serialize.py): the job's context; a step's key also
# the outputs of the hooks before it.
SERVICE_KEY_NAMES = frozenset({"values", "refs", "vars", "entry", "service"})
STEP_KEY_NAMES = SERVICE_KEY_NAMES | {"outputs"}


def serialize_key(data: Any, where: Where, env: jinja2.Environment,
                  names: frozenset[str] = SERVICE_KEY_NAMES) -> str:
    """A service's or a step's `serialize:` (absent or "": none, so a service may switch
    its kind's off), compiled now and reading only `names`: a misspelt root would otherwise
    fail every entry at run time."""
    if data is None:
        return ""
    if not isinstance(data, str):
        raise where.error("must be a template in quotes, e.g. \"{{ refs.library.dn }}\"")
    if not data.strip():
        return ""
    readers.inline(env, data, where)
    unknown = sorted(meta.find_undeclared_variables(env.parse(data)) - names)
    if unknown:
        raise where.error(f"{unknown[0]} is not what a key may read (it reads "
                          f"{', '.join(sorted(names))})")
    return data


def bind_programs(step: Step, vars_: Mapping[str, Any], env: jinja2.Environment,
                  where: Where) -> Step:
    """`step` (defined at `where`) with the programs it runs rendered now from `vars` alone and
    kept as plain text: no LDAP value (values, refs, entry, outputs, file) may choose which
    program runs, and `check` can then check each program."""

    def program(source: str, at: Where) -> str:
        try:
            name = render_string(env, source, {"vars": vars_})
        except RenderError as exc:
            raise at.error("the program name may use only vars (rendered at load): an LDAP "
                           f"value must not choose which program runs ({exc})") from exc
        if not name or name != name.strip() or "{" in name or "}" in name or (
                has_control_characters(name)):
            raise at.error(f"not a program name: {name!r} (rendered from {source!r})")
        return name

    return replace(step, action=step_type(step).bind_programs(step.action, program, where))
