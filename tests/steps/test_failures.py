"""A step that cannot be done fails with its code and the reason, whichever part of its step
type finds it: not as an internal error (with a traceback in the log), and not by escaping the
pipeline where files of all entries are planned (at start) and rendered again (on a timer).
Without slapd: nothing here reaches the directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from provisiond.aggregates.mirror import Aggregates
from provisiond.core.pipeline import Pipeline, StepFailed
from provisiond.directory.connection import ConnectionFactory
from provisiond.host.jinja import make_environment
from provisiond.model.settings import Config
from provisiond.model.work import Job
from tests.core.offline import offline_config


def pipeline_for(tmp_path: Path, steps: list[dict[str, Any]], **service: Any) -> tuple[
        Pipeline, Config]:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "all.j2").write_text("{% for item in entries %}{{ item.dn }}\n{% endfor %}")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    config = offline_config(tmp_path, {"unit": {
        "base": "ou=unit,dc=example,dc=org", "values": {"name": {"attribute": "cn",
                                                                "type": "posix_name"}},
        "steps": {"add": steps}, **service}},
        templates=[str(templates)], hooks={"path": [str(hooks)]})
    return Pipeline(make_environment(config.templates), config.hooks,
                    Aggregates(ConnectionFactory(config.ldap), config.services)), config


def test_a_hook_that_cannot_be_executed_fails_with_the_reason(tmp_path: Path) -> None:
    pipeline, config = pipeline_for(tmp_path, [{"name": "run", "code": 5, "hook": ["broken"]}])
    program = Path(config.hooks.path[0]) / "broken"
    program.write_text("#!/nonexistent/interpreter\n")  # exec fails: the kernel finds no interpreter
    program.chmod(0o755)
    job = Job(service=config.services[0], uuid="u", dn="cn=a,ou=unit,dc=example,dc=org",
              request="add", values={"name": "a"})
    with pytest.raises(StepFailed) as caught:
        pipeline.run(job)
    assert caught.value.code == 5
    assert caught.value.message.startswith(f"run: cannot execute hook {program}: ")
    assert "internal error" not in caught.value.message


def test_a_file_of_all_entries_whose_path_cannot_be_rendered_fails_its_step(
        tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    pipeline, config = pipeline_for(tmp_path, [
        {"name": "index", "code": 8,
         "render": {"template": "all.j2", "scope": "all",
                    "path": "{{ vars.root }}/{{ vars.missing }}/all.conf"}}],
        roots=["{{ vars.root }}"], vars={"root": str(root)})
    (spec,) = config.services
    for planned in (pipeline.aggregate_steps, pipeline.refresh_aggregates):  # start, timer
        with pytest.raises(StepFailed) as caught:
            planned(spec)
        assert caught.value.code == 8
        assert caught.value.message.startswith("index: ") and "missing" in caught.value.message


def test_a_hook_asking_to_retry_later_says_why(tmp_path: Path) -> None:
    """Exit 75 retries the step later; once the retries run out, the entry's message is this
    one, so it must carry the hook's reason as a failure's message does."""
    pipeline, config = pipeline_for(tmp_path, [{"name": "run", "code": 5, "hook": ["busy"]}])
    program = Path(config.hooks.path[0]) / "busy"
    program.write_text("#!/bin/sh\necho 'checking the pool'\n"
                       "echo 'the pool is resilvering' >&2\nexit 75\n")
    program.chmod(0o755)
    job = Job(service=config.services[0], uuid="u", dn="cn=a,ou=unit,dc=example,dc=org",
              request="add", values={"name": "a"})
    with pytest.raises(StepFailed) as caught:
        pipeline.run(job)
    assert caught.value.transient is True
    assert caught.value.message == ("run: busy asked to retry later (exit 75): checking the "
                                    "pool | the pool is resilvering")
