"""Reading service definitions: which entries, which values, which steps per mode.

A service is data. This module turns one YAML mapping into a `ServiceSpec`, checking every
key and compiling every inline template, so that a typo is reported at start with its file
and key path instead of failing an entry at three in the morning.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import jinja2

from provisiond.config.files import check_template
from provisiond.config.kind_vars import read_vars
from provisiond.config.schema import ConfigError, Problems, Where, read_section
from provisiond.config.schema import mapping as _mapping
from provisiond.config.sections import HOOKS, SERVICE
from provisiond.config.syntax import check_dn, check_filter
from provisiond.host.files import PathNotAllowed, check_root
from provisiond.host.jinja import RenderError, check_string, render_string
from provisiond.model.settings import (
    REQUEST_MODES,
    Action,
    HookAction,
    MkdirAction,
    RemoveAction,
    RenderAction,
    ServiceSpec,
    StateAttributes,
    Step,
)
from provisiond.model.values import DnType, SpecError, ValueSpec, has_control_characters

STEP_ACTIONS = ("render", "hook", "mkdir", "remove")
# `values.items` in a template would find the dict method, not the value.
RESERVED_VALUE_NAMES = frozenset(n for n in dir(dict) if not n.startswith("_"))
NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


def _text(data: Mapping[str, Any], key: str, where: Where, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or not value:
        raise where.child(key).error("is required" if value is None else "must be a string")
    return value


def _code(value: Any, where: Where) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 1000:
        raise where.error(f"must be an error code from 1 to 999, not {value!r}")
    return value


def _octal(value: Any, where: Where, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML reads an unquoted 0644 as the number 420; 644 and 0644 cannot be told apart
        raise where.error(f"write the mode quoted, such as \"0644\": YAML reads an unquoted "
                          f"0644 as the decimal number 420 (got {value!r})")
    if not isinstance(value, str) or not re.fullmatch(r"0?[0-7]{3,4}", value):
        raise where.error(f"must be an octal file mode such as \"0644\", not {value!r}")
    return int(value, 8)


def _check_inline(env: jinja2.Environment, source: str, where: Where) -> str:
    try:
        check_string(env, source)
    except jinja2.TemplateSyntaxError as exc:
        raise where.error(f"template syntax error: {exc.message}") from exc
    return source


def _argv(env: jinja2.Environment, data: Any, where: Where) -> tuple[str, ...]:
    if not isinstance(data, list) or not data or not all(isinstance(a, str) for a in data):
        raise where.error("must be a non-empty list of strings (an argv; no shell is used)")
    return tuple(_check_inline(env, arg, where.child(i)) for i, arg in enumerate(data))


def _render_action(env: jinja2.Environment, data: Any, where: Where) -> RenderAction:
    data = _mapping(data, where)
    unknown = set(data) - {"template", "path", "scope", "validate", "mode"}
    if unknown:
        raise where.child(sorted(unknown)[0]).error("unknown option")
    template = _text(data, "template", where)
    try:  # with what it extends, includes and imports: not UTF-8, missing, syntax
        check_template(env, template)
    except ValueError as exc:
        raise where.child("template").error(str(exc)) from exc
    scope = data.get("scope", "entry")
    if scope not in ("entry", "all"):
        raise where.child("scope").error(f"must be entry or all, not {scope!r}")
    validate = data.get("validate")
    return RenderAction(
        template=template,
        path=_check_inline(env, _text(data, "path", where), where.child("path")),
        scope=scope,
        validate=_argv(env, validate, where.child("validate")) if validate else (),
        file_mode=_octal(data.get("mode"), where.child("mode"), 0o644),
    )


def _path_action(env: jinja2.Environment, data: Any, where: Where, mkdir: bool) -> Action:
    if isinstance(data, str):
        data = {"path": data}
    data = _mapping(data, where)
    allowed = {"path", "mode", "owner", "group"} if mkdir else {"path"}
    unknown = set(data) - allowed
    if unknown:
        raise where.child(sorted(unknown)[0]).error("unknown option")
    path = _check_inline(env, _text(data, "path", where), where.child("path"))
    if not mkdir:
        return RemoveAction(path=path)
    owner, group = data.get("owner"), data.get("group")
    return MkdirAction(
        path=path,
        dir_mode=_octal(data.get("mode"), where.child("mode"), 0o755),
        owner=_check_inline(env, str(owner), where.child("owner")) if owner is not None else None,
        group=_check_inline(env, str(group), where.child("group")) if group is not None else None,
    )


def _step(env: jinja2.Environment, data: Any, where: Where) -> Step:
    data = _mapping(data, where)
    actions = [key for key in STEP_ACTIONS if key in data]
    if len(actions) != 1:
        raise where.error(f"needs exactly one of {', '.join(STEP_ACTIONS)}")
    unknown = set(data) - {"name", "code", "timeout", *STEP_ACTIONS}
    if unknown:
        raise where.child(sorted(unknown)[0]).error("unknown step option")
    kind = actions[0]
    if "timeout" in data and kind != "hook":
        raise where.child("timeout").error("only hook steps have a timeout")
    action: Action
    if kind == "render":
        action = _render_action(env, data["render"], where.child("render"))
    elif kind == "hook":
        timeout = data.get("timeout")
        if timeout is not None:  # finite and in the range of hooks.timeout
            timeout = HOOKS.option("timeout").read(timeout, where.child("timeout"))
        action = HookAction(argv=_argv(env, data["hook"], where.child("hook")), timeout=timeout)
    else:
        action = _path_action(env, data[kind], where.child(kind), mkdir=kind == "mkdir")
    return Step(name=_text(data, "name", where), code=_code(data.get("code"), where.child("code")),
                action=action)


def _steps(env: jinja2.Environment, data: Any, where: Where) -> dict[str, tuple[Step, ...]]:
    data = _mapping(data, where)
    unknown = set(data) - set(REQUEST_MODES)
    if unknown:
        raise where.child(sorted(unknown)[0]).error("unknown mode (add, modify or delete)")
    steps: dict[str, tuple[Step, ...]] = {}
    for mode in REQUEST_MODES:
        if mode not in data:
            continue
        value = data[mode]
        if isinstance(value, str):  # `modify: add` reuses the steps of another mode
            if value not in data or isinstance(data[value], str):
                raise where.child(mode).error(f"refers to {value!r}, which has no step list")
            value = data[value]
        if not isinstance(value, list):
            raise where.child(mode).error("must be a list of steps or the name of another mode")
        steps[mode] = tuple(_step(env, s, where.child(mode).child(i)) for i, s in enumerate(value))
    if not steps:
        raise where.error("no steps for any mode")
    return steps


def _values(data: Any, where: Where) -> tuple[ValueSpec, ...]:
    specs = []
    for name, declaration in _mapping(data, where).items():
        if name in RESERVED_VALUE_NAMES:
            raise where.child(name).error(
                "this name is a method of a mapping in templates; choose another")
        try:
            specs.append(ValueSpec.from_mapping(str(name), _mapping(declaration, where.child(name))))
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


def _preconditions(data: Any, where: Where, values: tuple[ValueSpec, ...]) -> dict[str, Any]:
    result: dict[str, dict[str, Any]] = {}
    by_name = {spec.name: spec for spec in values}
    for mode, required in _mapping(data, where).items():
        if mode not in REQUEST_MODES:
            raise where.child(str(mode)).error("unknown mode (add, modify or delete)")
        result[mode] = {}
        for name, expected in _mapping(required, where.child(mode)).items():
            if name not in by_name:
                raise where.child(mode).child(name).error("not a declared value")
            result[mode][name] = expected
    return result


def _references(data: Any, where: Where, values: tuple[ValueSpec, ...]) -> dict[str, str]:
    by_name = {spec.name: spec for spec in values}
    result: dict[str, str] = {}
    for name, service in _mapping(data, where).items():
        spec = by_name.get(name)
        if spec is None or not isinstance(spec.type, DnType) or spec.multi:
            raise where.child(name).error("must name a declared single `dn` value")
        if not isinstance(service, str) or not NAME.fullmatch(service):
            raise where.child(name).error(f"must name a service, not {service!r}")
        result[str(name)] = service
    return result


def _expand(text: str, vars_: Mapping[str, Any], where: Where, env: jinja2.Environment) -> str:
    """`base`, `filter` and `active` may use `{{ vars.x }}`; resolved once, at load."""
    _check_inline(env, text, where)
    try:
        return render_string(env, text, {"vars": vars_})
    except Exception as exc:  # noqa: BLE001 - reported as a config error with its key
        raise where.error(str(exc)) from exc


def _programs(steps: Mapping[str, tuple[Step, ...]], vars_: Mapping[str, Any],
              env: jinja2.Environment, where: Where) -> dict[str, tuple[Step, ...]]:
    """argv[0] of every hook and validate command, rendered now from `vars` alone and kept
    as plain text: no LDAP value (values, refs, entry, outputs, file) may choose which
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

    def fixed(step: Step, at: Where) -> Step:
        action = step.action
        if isinstance(action, HookAction):
            argv = (program(action.argv[0], at.child("hook").child(0)), *action.argv[1:])
            return replace(step, action=replace(action, argv=argv))
        if isinstance(action, RenderAction) and action.validate:
            first = program(action.validate[0], at.child("render").child("validate").child(0))
            return replace(step, action=replace(action, validate=(first, *action.validate[1:])))
        return step

    return {mode: tuple(fixed(step, where.child(mode).child(i)) for i, step in enumerate(found))
            for mode, found in steps.items()}


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
    for mode, mode_steps in steps.items():
        for i, step in enumerate(mode_steps):
            if not isinstance(step.action, HookAction):
                raise where.error(f"required: step steps.{mode}[{i}] ({step.kind}) writes a path, "
                                  "and every path must be inside one of the roots")


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
    part("outputs", (), _values, given.get("outputs"), where.child("outputs"))
    vars_ = parts.get("vars", {})
    for key, check in (("base", check_dn), ("filter", check_filter), ("active", check_filter)):
        part(key, ("vars",), _search, key, check, given, vars_, where, env)
    part("roots", ("vars",), _roots, given.get("roots"), vars_, where.child("roots"), env)
    part("steps", ("vars",), lambda: _programs(
        _steps(env, given["steps"], where.child("steps")), vars_, env, where.child("steps")))
    values = parts.get("values", ())
    part("preconditions", ("values",), _preconditions, given.get("preconditions"),
         where.child("preconditions"), values)
    part("references", ("values",), _references, given.get("references"),
         where.child("references"), values)
    if "roots" in parts and "steps" in parts:
        problems.attempt(_check_roots, parts["roots"], parts["steps"], where.child("roots"))
    problems.check()
    return ServiceSpec(**parts)
