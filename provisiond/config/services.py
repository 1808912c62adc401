"""Reading service definitions: which entries, which values, which steps per mode.

A service is data. This module turns one YAML mapping into a `ServiceSpec`, checking every
key and compiling every inline template, so that a typo is reported at start with its file
and key path instead of failing an entry at three in the morning.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import jinja2
from jinja2 import meta

from provisiond.config import readers
from provisiond.config.kind_vars import read_vars
from provisiond.config.readers import inline
from provisiond.config.schema import ConfigError, Problems, Where, read_section
from provisiond.config.schema import mapping as _mapping
from provisiond.config.sections import SERVICE
from provisiond.config.syntax import check_dn, check_filter
from provisiond.host.files import PathNotAllowed, check_root
from provisiond.host.jinja import render_string
from provisiond.model.settings import (
    Dependents,
    HookAction,
    Reference,
    RenderAction,
    ServiceSpec,
    StateAttributes,
    Step,
    Unique,
)
from provisiond.model.states import LIFECYCLES, Lifecycle
from provisiond.model.value_types import NAME_RE
from provisiond.model.values import DnType, SpecError, ValueSpec

# `values.items` in a template would find the dict method, not the value.
RESERVED_VALUE_NAMES = frozenset(n for n in dir(dict) if not n.startswith("_"))
NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


def _step_types() -> ModuleType:
    """The step types (provisiond/steps), which read each step. Imported when a service is
    read, not with this module: the package imports this module whenever any of its modules
    is imported (the directory layer imports config.syntax), and the step types import the
    aggregates and the directory, which would then be half-loaded."""
    from provisiond import steps

    return steps


def _modes(given: Any, cycle: Lifecycle, where: Where) -> None:
    """The modes `given` names (of `steps:`, `preconditions:`) must be the lifecycle's: steps
    for a mode its entries never reach would never run."""
    for mode in given:
        if mode not in cycle.request_names:
            raise where.child(str(mode)).error(
                f"unknown mode: the lifecycle of this service ({cycle.name}) has "
                f"{', '.join(cycle.request_names)}")


def _steps(env: jinja2.Environment, data: Any, where: Where,
           cycle: Lifecycle) -> dict[str, tuple[Step, ...]]:
    """Per mode, its steps (each read by its step type), or the name of another mode."""
    parse_step = _step_types().parse_step
    data = _mapping(data, where)
    _modes(data, cycle, where)
    steps: dict[str, tuple[Step, ...]] = {}
    for mode in cycle.request_names:
        if mode not in data:
            continue
        value = data[mode]
        if isinstance(value, str):  # `modify: add` reuses the steps of another mode
            if value not in data or isinstance(data[value], str):
                raise where.child(mode).error(f"refers to {value!r}, which has no step list")
            value = data[value]
        if not isinstance(value, list):
            raise where.child(mode).error("must be a list of steps or the name of another mode")
        if value and mode not in cycle.acting:
            raise where.child(mode).error(
                f"a {mode} of an entry of lifecycle {cycle.name} runs no steps (it is reported "
                f"{cycle.done[mode]} without touching the host); give none, or []")
        steps[mode] = tuple(parse_step(s, where.child(mode).child(i), env)
                            for i, s in enumerate(value))
    if not any(mode in steps for mode in cycle.acting):
        raise where.error("no steps for any mode")
    return steps


def _values(data: Any, where: Where, outputs: bool = False) -> tuple[ValueSpec, ...]:
    """`values:`, or with `outputs` the `outputs:` declarations (which say where and when
    they are written: report_to, on_failure)."""
    specs = []
    for name, declaration in _mapping(data, where).items():
        if name in RESERVED_VALUE_NAMES:
            raise where.child(name).error(
                "this name is a method of a mapping in templates; choose another")
        try:
            declared = _mapping(declaration, where.child(name))
            specs.append(ValueSpec.from_mapping(str(name), declared, outputs))
        except SpecError as exc:
            key = where.child(name)
            raise (key.child(exc.key) if exc.key else key).error(exc.reason) from exc
    return tuple(specs)


def _attributes(names: Mapping[str, Any], where: Where) -> StateAttributes:
    """`names`: the `attributes:` mapping as the ATTRIBUTES section read it."""
    for key, value in names.items():
        if value is not None and not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", str(value)):
            raise where.child(key).error(f"not an LDAP attribute name: {value!r}")
    return StateAttributes(**names)


def _preconditions(data: Any, where: Where, values: tuple[ValueSpec, ...],
                   cycle: Lifecycle) -> dict[str, Any]:
    result: dict[str, dict[str, Any]] = {}
    by_name = {spec.name: spec for spec in values}
    data = _mapping(data, where)
    _modes(data, cycle, where)
    for mode, required in data.items():
        result[mode] = {}
        for name, expected in _mapping(required, where.child(mode)).items():
            if name not in by_name:
                raise where.child(mode).child(name).error("not a declared value")
            result[mode][name] = expected
    return result


def _references(data: Any, where: Where, values: tuple[ValueSpec, ...],
                invalid_code: int) -> tuple[Reference, ...]:
    """`references:`: `VALUE: SERVICE` or `VALUE: {service: SERVICE, code: N}` (a `dn`
    value, single or multi-valued, names the entries) and `NAME: {parent: SERVICE, code: N}`
    (the entry's parent DN names it). Whether SERVICE exists is checked once every service is
    known (config/load.py)."""
    by_name = {spec.name: spec for spec in values}
    found = []
    for name, given in _mapping(data, where).items():
        at = where.child(str(name))
        options = readers.options(given, at, ("service", "parent", "code"), shorthand="service")
        keys = [key for key in ("service", "parent") if key in options]
        if len(keys) != 1:
            raise at.error("give either `service` (a dn value names the entry) or `parent` "
                           "(the entry's parent DN does)")
        service = options[keys[0]]
        if not isinstance(service, str) or not NAME.fullmatch(service):
            named = at if isinstance(given, str) else at.child(keys[0])
            raise named.error(f"must name a service, not {service!r}")
        parent = keys[0] == "parent"
        spec = None if parent else by_name.get(name)
        if parent and (not isinstance(name, str) or not NAME_RE.fullmatch(name)
                       or name in RESERVED_VALUE_NAMES):
            raise at.error("a name for `refs.NAME`: lowercase letters, digits and '_', not a "
                           "method of a mapping")
        if not parent and (spec is None or not isinstance(spec.type, DnType)):
            raise at.error("must name a declared `dn` value (or say `parent: SERVICE`)")
        code = (readers.code(options["code"], at.child("code")) if "code" in options
                else (spec.code if spec else None) or invalid_code)
        found.append(Reference(str(name), service, code, parent=parent,
                               multi=bool(spec and spec.multi)))
    return tuple(found)


def _dependents(given: Mapping[str, Any], where: Where,
                values: tuple[ValueSpec, ...]) -> Dependents:
    """`dependents:` as the DEPENDENTS section read it; `fixed` must name declared values."""
    declared = {spec.name for spec in values}
    for i, name in enumerate(given["fixed"]):
        if name not in declared:
            raise where.child("fixed").child(i).error(f"{name!r} is not a declared value")
    return Dependents(code=given["code"], delete=given["delete"], fixed=tuple(given["fixed"]))


def _unique(data: Any, where: Where, values: tuple[ValueSpec, ...]) -> tuple[Unique, ...]:
    """`unique:`: a list of declared value names, or `{value: NAME, per: parent}` for a value
    unique only among the entries below one parent."""
    declared = {spec.name for spec in values}
    if not isinstance(data, list | tuple):
        raise where.error("must be a list of value names (or {value, per})")
    found = []
    for i, item in enumerate(data):
        at = where.child(i)
        given = readers.options(item, at, ("value", "per"), shorthand="value")
        name = given.get("value")
        if not isinstance(name, str) or name not in declared:
            raise (at if isinstance(item, str) else at.child("value")).error(
                f"must name a declared value, not {name!r}")
        per = given.get("per", "service")
        if per not in ("service", "parent"):
            raise at.child("per").error(f"must be service or parent, not {per!r}")
        rule = Unique(name, per_parent=per == "parent")
        if rule in found:
            raise at.error(f"{name!r} is listed twice")
        found.append(rule)
    return tuple(found)


def _expand(text: str, vars_: Mapping[str, Any], where: Where, env: jinja2.Environment) -> str:
    """`base`, `filter` and `active` may use `{{ vars.x }}`; resolved once, at load."""
    inline(env, text, where)
    try:
        return render_string(env, text, {"vars": vars_})
    except Exception as exc:  # noqa: BLE001 - reported as a config error with its key
        raise where.error(str(exc)) from exc


def _programs(steps: Mapping[str, tuple[Step, ...]], vars_: Mapping[str, Any],
              env: jinja2.Environment, where: Where) -> dict[str, tuple[Step, ...]]:
    """The steps with the programs they run named from `vars` for good (steps.bind_programs)."""
    bind_programs = _step_types().bind_programs
    return {mode: tuple(bind_programs(step, vars_, env, where.child(mode).child(i))
                        for i, step in enumerate(found))
            for mode, found in steps.items()}


# What a `status:` command's argv may read: it runs without an entry (operate/live.py).
STATUS_NAMES = frozenset({"vars", "service"})


def _status(data: tuple[str, ...], vars_: Mapping[str, Any], where: Where,
            env: jinja2.Environment) -> tuple[str, ...]:
    """`status:`, the argv `provisiond status` runs: templates over vars and service, compiled
    now, its program named from vars now as a hook step's is (steps.bind_programs), so that
    `check` checks it and no LDAP value chooses it. An empty list is none (a site may switch
    its kind's off)."""
    if not data:
        return ()
    argv = readers.argv(env, list(data), where)
    for i, item in enumerate(argv):
        unknown = sorted(meta.find_undeclared_variables(env.parse(item)) - STATUS_NAMES)
        if unknown:
            raise where.child(i).error(f"{unknown[0]} is not what a status command may read "
                                       "(it runs without an entry: vars and service)")
    command = Step(name="status", code=1, action=HookAction(argv=argv))
    try:
        bound = _step_types().bind_programs(command, vars_, env, where)
    except ConfigError as exc:  # named as a hook step's key would be (status.hook[0])
        raise where.child(0).error(exc.reason) from exc
    assert isinstance(bound.action, HookAction)
    return bound.action.argv


def _checked(check: Callable[[str], str], text: str, where: Where) -> str:
    try:
        return check(text)
    except ValueError as exc:
        raise where.error(str(exc)) from exc


def _check_roots(roots: tuple[Path, ...], steps: Mapping[str, tuple[Step, ...]],
                 where: Where) -> None:
    """Every path a step touches must be inside a root: with none, such a step always fails."""
    if roots:
        return
    step_types = _step_types()
    for mode, mode_steps in steps.items():
        for i, step in enumerate(mode_steps):
            if step_types.step_type(step).touches_paths:
                raise where.error(f"required: step steps.{mode}[{i}] ({step_types.kind_of(step)})"
                                  " writes a path, and every path must be inside one of the roots")


def _check_conditions(steps: Mapping[str, tuple[Step, ...]], values: tuple[ValueSpec, ...],
                      vars_: Mapping[str, Any], where: Where) -> None:
    """A step's `when:` may read only values and vars the service declares: a typo would
    otherwise skip (or run) the step for every entry without a word."""
    declared = {"values": {spec.name for spec in values}, "vars": set(vars_),
                "entry": {"mode"}}
    for mode, mode_steps in steps.items():
        for i, step in enumerate(mode_steps):
            names = step.when.names() if step.when else frozenset()
            unknown = sorted(str(name) for name in names if name.name not in declared[name.root])
            at = where.child(mode).child(i).child("when")
            if unknown:
                raise at.error(f"{unknown[0]} is not declared by the service (its "
                               f"{unknown[0].split('.')[0]} are what a condition may read)")
            action = step.action
            if isinstance(action, RenderAction) and action.scope == "all" and any(
                    name.root != "vars" for name in names):
                raise at.error("a file of all entries is also rendered without an entry (at "
                               "start, on refresh): its condition may read vars only")


def _roots(roots: tuple[str, ...], vars_: Mapping[str, Any], where: Where,
           env: jinja2.Environment) -> tuple[Path, ...]:
    problems = Problems()
    found = []
    for i, root in enumerate(roots):
        at = where.child(i)
        try:  # after rendering: `{{ vars.root }}` with root "/var/.." is / too
            found.append(check_root(_expand(root, vars_, at, env)))
        except PathNotAllowed as exc:
            problems.add(at.error(str(exc)))
        except ConfigError as exc:
            problems.add(exc)
    problems.check()
    return tuple(found)


def _search(key: str, check: Callable[[str], str], given: Mapping[str, Any],
            vars_: Mapping[str, Any], where: Where, env: jinja2.Environment) -> str:
    """`base`, `filter` or `active`, rendered from vars and checked (no `active`: "")."""
    text = given[key]
    if not text:
        if key == "active":
            return ""
        raise where.child(key).error("must not be empty")
    return _checked(check, _expand(text, vars_, where.child(key), env), where.child(key))


def read_service(
    name: str, data: Mapping[str, Any], where: Where, env: jinja2.Environment
) -> ServiceSpec:
    """Build a ServiceSpec from an already kind-merged definition mapping. Every problem is
    reported (one ConfigError listing them); a part that depends on a broken one (a filter
    using vars, preconditions naming values) is checked once that one is fixed."""
    problems = Problems()
    if not NAME.fullmatch(name):
        problems.add(where.error("service names are lowercase letters, digits, '-' and '_'"))
    given = read_section(SERVICE, data, where, problems)  # keys, types, choices, bounds
    parts: dict[str, Any] = {"name": name}
    parts.update({key: given[key] for key in ("kind", "scope", "recover", "invalid_code")
                  if key in given})
    if "lifecycle" in given:
        parts["lifecycle"] = LIFECYCLES[given["lifecycle"]]

    def part(key: str, needs: tuple[str, ...], read: Callable[..., Any], *args: Any) -> None:
        """parts[key] = read(*args), if `key` and what it `needs` were read well."""
        if key in given and all(need in parts for need in needs):
            try:
                parts[key] = read(*args)
            except ConfigError as exc:
                problems.add(exc)

    part("vars", (), read_vars, given.get("vars"), where.child("vars"))
    part("attributes", (), _attributes, given.get("attributes"), where.child("attributes"))
    part("values", (), _values, given.get("values"), where.child("values"))
    part("outputs", (), _values, given.get("outputs"), where.child("outputs"), True)
    vars_ = parts.get("vars", {})
    for key, check in (("base", check_dn), ("filter", check_filter), ("active", check_filter)):
        part(key, ("vars",), _search, key, check, given, vars_, where, env)
    part("roots", ("vars",), _roots, given.get("roots"), vars_, where.child("roots"), env)
    part("steps", ("vars", "lifecycle"), lambda: _programs(
        _steps(env, given["steps"], where.child("steps"), parts["lifecycle"]), vars_, env,
        where.child("steps")))
    values = parts.get("values", ())
    part("preconditions", ("values", "lifecycle"), _preconditions, given.get("preconditions"),
         where.child("preconditions"), values, parts.get("lifecycle"))
    part("references", ("values",), _references, given.get("references"),
         where.child("references"), values, given.get("invalid_code", 1))
    part("dependents", ("values",), _dependents, given.get("dependents"),
         where.child("dependents"), values)
    part("unique", ("values",), _unique, given.get("unique"), where.child("unique"), values)
    part("serialize", (), _step_types().serialize_key, given.get("serialize"),
         where.child("serialize"), env)
    part("status", ("vars",), _status, given.get("status"), vars_, where.child("status"), env)
    if "roots" in parts and "steps" in parts:
        problems.attempt(_check_roots, parts["roots"], parts["steps"], where.child("roots"))
    if "steps" in parts and all(key in parts or key not in given for key in ("values", "vars")):
        problems.attempt(_check_conditions, parts["steps"], values, vars_, where.child("steps"))
    problems.check()
    return ServiceSpec(**parts)
