"""Step types without slapd and without effects: a job in, a plan out, for each step type; a
plan described for `provisiond render`; and every registered type complete.

The plan is what both a run and `provisiond render` start from (steps/base.py), so what it
holds is what the daemon would write, run, make or remove."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any

import pytest

from provisiond.aggregates.mirror import Aggregates, Member
from provisiond.config.schema import ConfigError, Where
from provisiond.directory.connection import ConnectionFactory
from provisiond.host.files import PathNotAllowed
from provisiond.host.hooks import HookError
from provisiond.host.jinja import RenderError, make_environment
from provisiond.model.settings import Action, Config, RenderAction, Step
from provisiond.model.work import Job
from provisiond.steps import STEP_TYPES, kind_of, parse_step, step_type
from provisiond.steps.base import Context, StepError, StepType
from provisiond.steps.hook import HOOK, HookPlan
from provisiond.steps.mkdir import MKDIR, MkdirPlan
from provisiond.steps.remove import REMOVE, RemovePlan
from provisiond.steps.render import RENDER, RenderPlan, content_for, validate_argv
from tests.core.offline import offline_config

UUID = "0b6f2c1e-8d3a-4f5b-9c7d-1a2b3c4d5e6f"
DN = "cn=alpha,ou=unit,dc=example,dc=org"


class Unit:
    """A service with a step of every type, its context, and a job for it."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "root"
        self.root.mkdir()
        templates = tmp_path / "templates"
        (templates / "unit").mkdir(parents=True)
        (templates / "unit" / "item.j2").write_text(
            "name = {{ values.name }}\nsize = {{ values.size }}\nmode = {{ entry.mode }}\n")
        (templates / "unit" / "all.j2").write_text(
            "{% for item in entries %}{{ item.values.name }} {{ vars.label }}\n{% endfor %}")
        self.hooks = tmp_path / "hooks"
        self.config: Config = offline_config(
            tmp_path, {"unit": self.service()}, templates=[str(templates)],
            hooks={"path": [str(self.hooks)], "timeout": 30})
        (self.spec,) = self.config.services
        self.context = Context(make_environment(self.config.templates), self.config.hooks,
                               Aggregates(ConnectionFactory(self.config.ldap),
                                          self.config.services))

    def service(self) -> dict[str, Any]:
        item = "{{ vars.root }}/items/{{ values.name }}"
        return {
            "base": "ou=unit,dc=example,dc=org",
            "values": {"name": {"attribute": "cn", "type": "posix_name"},
                       "size": {"attribute": "provisiondSize", "type": "bytes"},
                       "uid": {"attribute": "uidNumber", "type": "integer", "required": False}},
            "outputs": {"path": {"attribute": "provisiondPath", "type": "path"}},
            "roots": ["{{ vars.root }}"],
            "vars": {"root": str(self.root), "label": "unit", "hook": "unit-hook"},
            "steps": {
                "add": [
                    {"name": "home", "code": 3,
                     "mkdir": {"path": item, "mode": "0750", "owner": "{{ values.uid }}"}},
                    {"name": "item", "code": 4,
                     "render": {"template": "unit/item.j2", "mode": "0640",
                                "path": f"{item}/item.conf",
                                "validate": ["unit-check", "--file={{ file }}"]}},
                    {"name": "provision", "code": 5, "timeout": 7,
                     "hook": ["{{ vars.hook }}", "{{ entry.mode }}", "{{ values.name }}",
                              "{{ outputs.path | default('-') }}"]},
                    {"name": "index", "code": 6,
                     "render": {"template": "unit/all.j2", "scope": "all",
                                "path": "{{ vars.root }}/index.conf"}},
                ],
                "delete": [
                    {"name": "forget", "code": 7, "remove": f"{item}/item.conf"},
                    {"name": "escape", "code": 8, "remove": "/etc/{{ values.name }}"},
                ],
            },
        }

    def job(self, request: str = "add", **values: Any) -> Job:
        return Job(service=self.spec, uuid=UUID, dn=DN, request=request,
                   values={"name": "alpha", "size": 10 * 2**20, "uid": 1234, **values})

    def step(self, name: str) -> Step:
        return next(step for steps in self.spec.steps.values() for step in steps
                    if step.name == name)


@pytest.fixture
def unit(tmp_path: Path) -> Unit:
    return Unit(tmp_path)


def nothing_written(unit: Unit) -> bool:
    return list(unit.root.iterdir()) == []


# -- a job in, a plan out ------------------------------------------------------------------------


def test_render_plans_the_confined_path_and_the_exact_bytes(unit: Unit) -> None:
    plan = RENDER.plan(unit.context, unit.job(), unit.step("item"), {})
    assert isinstance(plan, RenderPlan)
    assert plan.path == unit.root / "items" / "alpha" / "item.conf"
    assert plan.content == b"name = alpha\nsize = 10485760\nmode = add\n"
    assert plan.file_mode == 0o640
    assert plan.validate == ("unit-check", "--file={{ file }}")  # the program, fixed at load
    assert validate_argv(unit.context, plan, "/tmp/x") == ["unit-check", "--file=/tmp/x"]
    assert nothing_written(unit)


def test_a_file_of_all_entries_is_planned_without_its_content(unit: Unit) -> None:
    plan = RENDER.plan(unit.context, unit.job(), unit.step("index"), {})
    assert plan.path == unit.root / "index.conf"
    assert plan.content is None  # rendered from the entries when it runs
    assert "entry" not in plan.context and "values" not in plan.context
    entries = [Member("cn=b,x", "u2", {"name": "b"}), Member("cn=a,x", "u1", {"name": "a"})]
    assert content_for(unit.context, plan, entries) == b"b unit\na unit\n"
    assert nothing_written(unit)


def test_hook_plans_argv_environment_and_timeout(unit: Unit) -> None:
    plan = HOOK.plan(unit.context, unit.job(), unit.step("provision"), {"path": "/srv/alpha"})
    assert isinstance(plan, HookPlan)
    assert plan.argv == ("unit-hook", "add", "alpha", "/srv/alpha")  # outputs reach argv
    assert plan.timeout == 7
    assert plan.environment["PROVISIOND_SERVICE"] == "unit"
    assert plan.environment["PROVISIOND_MODE"] == "add"
    assert plan.environment["PROVISIOND_DN"] == DN
    assert plan.environment["PROVISIOND_ENTRYUUID"] == UUID
    assert plan.environment["PROVISIOND_VALUE_SIZE"] == "10485760"
    assert plan.environment["PATH"].split(":")[0] == str(unit.hooks)
    assert "HOME" not in plan.environment


def test_mkdir_plans_path_mode_and_a_numeric_owner(unit: Unit) -> None:
    plan = MKDIR.plan(unit.context, unit.job(), unit.step("home"), {})
    assert isinstance(plan, MkdirPlan)
    assert (plan.path, plan.dir_mode, plan.owner) == (unit.root / "items" / "alpha", 0o750,
                                                      (1234, 1234))
    assert nothing_written(unit)


def test_mkdir_refuses_an_owner_that_is_not_a_number_when_planning(unit: Unit) -> None:
    with pytest.raises(StepError, match="owner 'alpha':'alpha' is not numeric"):
        MKDIR.plan(unit.context, unit.job(uid="alpha"), unit.step("home"), {})


def test_remove_plans_the_path_and_refuses_one_outside_the_roots(unit: Unit) -> None:
    plan = REMOVE.plan(unit.context, unit.job("delete"), unit.step("forget"), {})
    assert isinstance(plan, RemovePlan)
    assert plan.path == unit.root / "items" / "alpha" / "item.conf"
    with pytest.raises(PathNotAllowed, match="outside the allowed roots"):
        REMOVE.plan(unit.context, unit.job("delete"), unit.step("escape"), {})


def test_a_plan_is_made_with_the_outputs_known_so_far(unit: Unit) -> None:
    step = Step("uses output", 9, RenderAction(template="unit/item.j2",
                                               path="{{ outputs.path }}/x.conf"))
    with pytest.raises(RenderError, match="outputs"):  # before the hook that sets it
        RENDER.plan(unit.context, unit.job(), step, {})
    plan = RENDER.plan(unit.context, unit.job(), step, {"path": f"{unit.root}/p"})
    assert plan.path == unit.root / "p" / "x.conf"


# -- a plan described -----------------------------------------------------------------------------


def test_a_described_plan_shows_what_would_happen_and_changes_nothing(unit: Unit) -> None:
    render = RENDER.describe(unit.context, RENDER.plan(unit.context, unit.job(),
                                                       unit.step("item"), {}))
    target = unit.root / "items" / "alpha" / "item.conf"
    assert render.summary == f"{target}: would be created (mode 0640)"
    assert render.changes and render.diff is not None
    assert render.diff.startswith(f"--- /dev/null\n+++ {target}\n")
    assert render.validate == ["unit-check", f"--file={target.parent}/.item.conf.XXXX.tmp"]
    mkdir = MKDIR.describe(unit.context, MKDIR.plan(unit.context, unit.job(),
                                                    unit.step("home"), {}))
    assert mkdir.summary.endswith("would be created (mode 0750, owner 1234:1234)")
    remove = REMOVE.describe(unit.context, REMOVE.plan(unit.context, unit.job("delete"),
                                                       unit.step("forget"), {}))
    assert remove.summary.endswith("item.conf: nothing there") and not remove.changes
    assert nothing_written(unit)


def test_a_hook_is_described_with_its_program_found(unit: Unit) -> None:
    plan = HOOK.plan(unit.context, unit.job(), unit.step("provision"), {})
    with pytest.raises(HookError, match="not found in"):  # as the run would fail
        HOOK.describe(unit.context, plan)
    unit.hooks.mkdir()
    (unit.hooks / "unit-hook").write_text("#!/bin/sh\n")
    (unit.hooks / "unit-hook").chmod(0o755)
    described = HOOK.describe(unit.context, plan)
    assert described.argv == [str(unit.hooks / "unit-hook"), "add", "alpha", "-"]
    assert described.summary == "would run (timeout 7s)"
    assert described.environment == dict(plan.environment)


# -- the registry ---------------------------------------------------------------------------------


def test_every_step_type_implements_every_part() -> None:
    parts = [name for name, member in inspect.getmembers(StepType)
             if getattr(member, "__isabstractmethod__", False)]
    assert set(parts) == {"parse", "bind_programs", "plan", "run", "describe", "check"}
    for name, kind in STEP_TYPES.items():
        assert kind.name == name and isinstance(kind, StepType)
        assert not inspect.isabstract(type(kind)), name
        for part in parts:
            assert getattr(type(kind), part) is not getattr(StepType, part), (name, part)
    # one type per Action the model knows, found by the Action
    assert {kind.action for kind in STEP_TYPES.values()} == set(typing.get_args(Action))
    assert list(STEP_TYPES) == ["render", "hook", "mkdir", "remove"]


def test_a_step_is_read_through_its_type(unit: Unit) -> None:
    where = Where("services.yaml", "services.unit.steps.add[0]")
    env = unit.context.env
    step = parse_step({"name": "x", "code": 3, "remove": "{{ vars.root }}/x"}, where, env)
    assert step_type(step) is REMOVE and kind_of(step) == "remove"
    for data, key, reason in [
        ({"name": "x", "code": 3}, "services.unit.steps.add[0]",
         "needs exactly one of render, hook, mkdir, remove"),
        ({"name": "x", "code": 3, "remove": "/x", "timeout": 5},
         "services.unit.steps.add[0].timeout", "only hook steps have a timeout"),
        ({"name": "x", "code": 3, "mkdir": {"path": "/x", "mode": 755}},
         "services.unit.steps.add[0].mkdir.mode", "write the mode quoted"),
        ({"name": "x", "code": 0, "hook": ["h"]}, "services.unit.steps.add[0].code",
         "must be an error code"),
    ]:
        with pytest.raises(ConfigError) as caught:
            parse_step(data, where, env)
        assert caught.value.key == key and reason in caught.value.reason
    assert kind_of(unit.step("provision")) == "hook"
