"""Running a job's steps (core/pipeline.py) directly, without the engine and without slapd:
mkdir, render, hook and remove steps against real files and real hook processes. The
directory is never reached (the configured URI is a closed port); only a file rendered from
all entries would need it."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from provisiond.aggregates.mirror import Aggregates
from provisiond.core.pipeline import Pipeline, StepFailed
from provisiond.directory.connection import ConnectionFactory
from provisiond.host.jinja import make_environment
from provisiond.model.settings import Config, ServiceSpec
from provisiond.model.work import Job
from tests.core.offline import offline_config

UUID = "0b6f2c1e-8d3a-4f5b-9c7d-1a2b3c4d5e6f"
DN = "cn=alpha,ou=unit,dc=example,dc=org"

# The hook records its argv and environment, prints what `hook.out` holds, sleeps for what
# `hook.sleep` holds and exits with what `hook.exit` holds: each test steers it by files.
HOOK = """#!/bin/sh
root="$3"
printf '%s\\n' "$*" >> "$root/hook.log"
env | sort > "$root/hook.env"
[ -f "$root/hook.out" ] && cat "$root/hook.out"
[ -f "$root/hook.sleep" ] && sleep "$(cat "$root/hook.sleep")"
exit "$(cat "$root/hook.exit" 2>/dev/null || echo 0)"
"""
VALIDATE = """#!/bin/sh
if grep -q '^size = 0$' "$1"; then echo "size 0 in $1"; exit 1; fi
"""


class Unit:
    """One service of every per-entry step type, its pipeline, and where it writes."""

    def __init__(self, tmp_path: Path, step_timeout: float = 20) -> None:
        self.root = tmp_path / "root"
        self.root.mkdir()
        hooks = tmp_path / "hooks"
        hooks.mkdir()
        for name, text in (("unit-hook", HOOK), ("unit-validate", VALIDATE)):
            (hooks / name).write_text(text)
            (hooks / name).chmod(0o755)
        templates = tmp_path / "templates"
        (templates / "unit").mkdir(parents=True)
        (templates / "unit" / "item.j2").write_text(
            "name = {{ values.name }}\nsize = {{ values.size }}\nmode = {{ entry.mode }}\n")
        self.config: Config = offline_config(
            tmp_path, {"unit": self.service(step_timeout)},
            templates=[str(templates)],
            hooks={"path": [str(hooks)], "kill_grace": 0.2, "timeout": 20})
        (self.spec,) = self.config.services
        self.pipeline = Pipeline(make_environment(self.config.templates), self.config.hooks,
                                 Aggregates(ConnectionFactory(self.config.ldap),
                                            self.config.services))
        self.items = self.root / "items" / "alpha"
        self.file = self.items / "item.conf"

    def service(self, step_timeout: float) -> dict[str, Any]:
        return {
            "base": "ou=unit,dc=example,dc=org",
            "filter": "(objectClass=provisiondDemoItem)",
            "values": {"name": {"attribute": "cn", "type": "posix_name"},
                       "size": {"attribute": "provisiondSize", "type": "bytes"}},
            "outputs": {"path": {"attribute": "provisiondPath", "type": "path"}},
            "roots": ["{{ vars.root }}"],
            "vars": {"root": str(self.root)},
            "steps": {
                "add": [
                    {"name": "make directory", "code": 3,
                     "mkdir": {"path": "{{ vars.root }}/items/{{ values.name }}",
                               "mode": "0750"}},
                    {"name": "write item", "code": 4,
                     "render": {"template": "unit/item.j2", "mode": "0640",
                                "path": "{{ vars.root }}/items/{{ values.name }}/item.conf",
                                "validate": ["unit-validate", "{{ file }}"]}},
                    {"name": "provision", "code": 5, "timeout": step_timeout,
                     "hook": ["unit-hook", "{{ entry.mode }}", "{{ values.name }}",
                              "{{ vars.root }}"]},
                ],
                "modify": "add",
                "delete": [
                    {"name": "deprovision", "code": 6,
                     "hook": ["unit-hook", "delete", "{{ values.name }}", "{{ vars.root }}"]},
                    {"name": "remove item", "code": 7,
                     "remove": "{{ vars.root }}/items/{{ values.name }}/item.conf"},
                ],
            },
        }

    def job(self, request: str = "add", spec: ServiceSpec | None = None, **values: Any) -> Job:
        return Job(service=spec or self.spec, uuid=UUID, dn=DN, request=request,
                   values={"name": "alpha", "size": 10 * 2**20, **values})

    def steer(self, *, exit: int | None = None, out: str | None = None,
              sleep: float | None = None) -> None:
        for name, value in (("hook.exit", exit), ("hook.out", out), ("hook.sleep", sleep)):
            path = self.root / name
            if value is None:
                path.unlink(missing_ok=True)
            else:
                path.write_text(f"{value}\n")

    def hook_calls(self) -> list[str]:
        log = self.root / "hook.log"
        return log.read_text().splitlines() if log.exists() else []

    def hook_env(self) -> dict[str, str]:
        lines = (self.root / "hook.env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)


@pytest.fixture
def unit(tmp_path: Path) -> Unit:
    return Unit(tmp_path)


def failure_of(run: Callable[[], object]) -> StepFailed:
    with pytest.raises(StepFailed) as caught:
        run()
    return caught.value


# -- a whole mode ------------------------------------------------------------------------------


def test_add_runs_its_steps_in_order_and_says_what_changed(unit: Unit) -> None:
    unit.steer(out=f"provisiond-set path={unit.items}")
    outcome = unit.pipeline.run(unit.job())
    assert outcome.next_step == 3
    assert outcome.changed == [str(unit.items), str(unit.file)]
    assert stat.S_IMODE(unit.items.stat().st_mode) == 0o750
    assert unit.file.read_text() == "name = alpha\nsize = 10485760\nmode = add\n"
    assert stat.S_IMODE(unit.file.stat().st_mode) == 0o640
    assert unit.hook_calls() == [f"add alpha {unit.root}"]
    assert outcome.outputs == {"provisiondPath": (str(unit.items),)}  # the attribute to report
    assert str(outcome.values["path"]) == str(unit.items)  # parsed, for later steps' `outputs`


def test_the_hook_gets_the_entry_in_a_minimal_environment(unit: Unit) -> None:
    unit.pipeline.run(unit.job())
    env = unit.hook_env()
    assert env["PROVISIOND_SERVICE"] == "unit" and env["PROVISIOND_MODE"] == "add"
    assert env["PROVISIOND_DN"] == DN and env["PROVISIOND_ENTRYUUID"] == UUID
    assert env["PROVISIOND_VALUE_NAME"] == "alpha"
    assert env["PROVISIOND_VALUE_SIZE"] == "10485760"
    assert env["PATH"].split(":")[0] == str(unit.config.hooks.path[0])
    assert not {"HOME", "USER", "PYTHONPATH"} & set(env)  # nothing of the daemon's own


def test_a_second_run_writes_nothing_and_the_hook_runs_again(unit: Unit) -> None:
    unit.pipeline.run(unit.job())
    written = unit.file.stat().st_ino
    outcome = unit.pipeline.run(unit.job())
    assert outcome.changed == []  # steps are idempotent: a resume after a crash is harmless
    assert unit.file.stat().st_ino == written
    assert len(unit.hook_calls()) == 2


def test_modify_runs_the_steps_of_add_and_rewrites_a_changed_file(unit: Unit) -> None:
    unit.pipeline.run(unit.job())
    outcome = unit.pipeline.run(unit.job("modify", size=20 * 2**20))
    assert outcome.changed == [str(unit.file)]
    assert "size = 20971520\nmode = modify\n" in unit.file.read_text()
    assert unit.hook_calls()[-1] == f"modify alpha {unit.root}"


def test_delete_runs_the_hook_then_removes_the_file_once(unit: Unit) -> None:
    unit.pipeline.run(unit.job())
    outcome = unit.pipeline.run(unit.job("delete"))
    assert outcome.changed == [str(unit.file)]
    assert not unit.file.exists() and unit.items.is_dir()
    assert unit.hook_calls()[-1] == f"delete alpha {unit.root}"
    assert unit.pipeline.run(unit.job("delete")).changed == []  # already gone: nothing to do


# -- failures -----------------------------------------------------------------------------------


def test_a_failing_hook_stops_the_job_with_its_code_and_output(unit: Unit) -> None:
    unit.steer(exit=3, out="disk full")
    failure = failure_of(lambda: unit.pipeline.run(unit.job()))
    assert (failure.step, failure.code, failure.transient) == ("provision", 5, False)
    assert "unit-hook exited 3" in failure.message and "disk full" in failure.message
    assert failure.outcome is not None and failure.outcome.next_step == 2  # where it stopped
    assert failure.outcome.changed == [str(unit.items), str(unit.file)]


def test_a_retry_resumes_at_the_failed_step(unit: Unit) -> None:
    unit.steer(exit=75)
    failure = failure_of(lambda: unit.pipeline.run(unit.job()))
    assert failure.transient is True and "asked to retry later" in failure.message
    unit.file.unlink()  # a rerun of the render would bring it back
    unit.steer(exit=0)
    assert failure.outcome is not None
    outcome = unit.pipeline.run(unit.job(), failure.outcome)
    assert outcome is failure.outcome and outcome.next_step == 3
    assert not unit.file.exists()  # steps before the failed one did not run again
    assert len(unit.hook_calls()) == 2


def test_an_output_the_service_does_not_declare_fails_the_step(unit: Unit) -> None:
    unit.steer(out="provisiond-set secret=x")
    failure = failure_of(lambda: unit.pipeline.run(unit.job()))
    assert failure.code == 5 and "undeclared output 'secret'" in failure.message


def test_an_output_of_the_wrong_type_fails_the_step(unit: Unit) -> None:
    unit.steer(out="provisiond-set path=relative/../x")
    failure = failure_of(lambda: unit.pipeline.run(unit.job()))
    assert failure.code == 5 and "output path:" in failure.message
    assert failure.outcome is not None and failure.outcome.outputs == {}


def test_a_hook_past_its_timeout_is_killed(tmp_path: Path) -> None:
    unit = Unit(tmp_path, step_timeout=0.5)
    unit.steer(sleep=30)
    failure = failure_of(lambda: unit.pipeline.run(unit.job()))
    assert failure.code == 5 and "timed out and was killed" in failure.message


def test_a_file_the_validator_rejects_is_not_installed(unit: Unit) -> None:
    failure = failure_of(lambda: unit.pipeline.run(unit.job(size=0)))
    assert failure.code == 4 and "unit-validate rejected item.conf" in failure.message
    assert "size 0 in" in failure.message
    assert not unit.file.exists()
    assert list(unit.items.iterdir()) == []  # the temp file it validated is gone too
    assert unit.hook_calls() == []  # the job stopped at the render


def test_observe_sees_every_step_with_its_result(unit: Unit) -> None:
    seen: list[tuple[str, str, bool]] = []
    unit.pipeline.observe = lambda service, step, seconds, ok: seen.append((service, step, ok))
    unit.pipeline.run(unit.job())
    unit.steer(exit=1)
    failure_of(lambda: unit.pipeline.run(unit.job()))
    assert seen == [("unit", "make directory", True), ("unit", "write item", True),
                    ("unit", "provision", True), ("unit", "make directory", True),
                    ("unit", "write item", True), ("unit", "provision", False)]


def test_a_file_of_all_entries_needs_the_directory_and_fails_transiently_without_it(
        tmp_path: Path) -> None:
    unit = Unit(tmp_path)
    index = {**unit.service(20), "steps": {"add": [
        {"name": "write index", "code": 8,
         "render": {"template": "unit/item.j2", "path": "{{ vars.root }}/index.conf",
                    "scope": "all"}}]}}
    config = offline_config(tmp_path / "index", {"index": index},
                            templates=[str(tmp_path / "templates")])
    (spec,) = config.services
    pipeline = Pipeline(make_environment(config.templates), config.hooks,
                        Aggregates(ConnectionFactory(config.ldap), config.services))
    failure = failure_of(lambda: pipeline.run(unit.job(spec=spec)))
    assert (failure.code, failure.transient) == (8, True)  # retried later, not reported
    assert "write index: directory unavailable" in failure.message
    assert not (unit.root / "index.conf").exists()
