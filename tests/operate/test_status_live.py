"""`status: [argv]` on a service: `provisiond status` runs it and prints its lines under the
service (operate/live.py), with a hook's minimal environment; a failure is shown, not fatal."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from provisiond.config import load_config
from provisiond.config.schema import ConfigError
from provisiond.operate.status import collect, format_text
from tests.config.test_config import write
from tests.operate.conftest import Site
from tests.support import demo_service, run_cli, write_config

SCRIPT = """#!/bin/sh
echo "facts of $1"
echo "env: $(env | sort | grep -c PROVISIOND_VALUE_) values, dn=[$PROVISIOND_DN]"
[ -n "$2" ] && { echo "it broke" >&2; exit 3; }
exit 0
"""


def configured(site: Site, tmp_path: Path, status: list[str]) -> Path:
    program = tmp_path / "facts"
    program.write_text(SCRIPT)
    program.chmod(0o755)
    services = demo_service(site.root, status=[str(program), *status])
    services["plain"] = demo_service(site.root)["demo"]  # no status: no live line
    services["plain"]["vars"] = {**services["plain"]["vars"], "root": str(site.root / "p")}
    return write_config(tmp_path / "cfg2", site.slapd, services)


def test_status_prints_the_lines_of_the_services_command(site: Site, tmp_path: Path) -> None:
    config = configured(site, tmp_path, ["{{ vars.root }}"])
    result = run_cli("--config", str(config), "status")
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout
    demo, plain = text.split("service plain")
    assert f"  live       facts of {site.root}\n" in demo
    assert "  live       env: 0 values, dn=[]\n" in demo  # no entry, no values: no secret
    assert "live" not in plain
    report = json.loads(run_cli("--config", str(config), "status", "--json").stdout)
    live = report["services"][0]["live"]
    assert live["lines"][0] == f"facts of {site.root}" and live["error"] is None
    assert "live" not in report["services"][1]


def test_a_failing_status_command_is_shown_and_status_still_reports(site: Site,
                                                                    tmp_path: Path) -> None:
    config = configured(site, tmp_path, ["x", "fail"])
    report = collect(load_config(config))
    out = io.StringIO()
    format_text(report, out)
    assert "  live       facts of x\n" in out.getvalue()
    assert "  live       ERROR exited 3: it broke\n" in out.getvalue()
    assert report["summary"]["errors"] == 0


def test_a_status_program_that_is_not_there_is_an_error_line(site: Site,
                                                             tmp_path: Path) -> None:
    services = demo_service(site.root, status=["no-such-status-program"])
    config = write_config(tmp_path / "cfg3", site.slapd, services)
    report = collect(load_config(config))
    assert "no-such-status-program" in report["services"][0]["live"]["error"]


def loaded(tmp_path: Path, status: object) -> tuple[str, ...]:
    path = write(tmp_path, {"services": {"demo": {
        "base": "dc=example,dc=org", "vars": {"lister": "disk-pool", "root": "/srv/x"},
        "steps": {"add": [{"name": "h", "code": 1, "hook": ["demo-hook"]}]},
        "status": status}}})
    return load_config(path).services[0].status


def test_the_status_command_is_read_at_load_its_program_named_from_vars(
        tmp_path: Path) -> None:
    assert loaded(tmp_path, ["{{ vars.lister }}", "list", "{{ vars.root }}"]) == (
        "disk-pool", "list", "{{ vars.root }}")  # the rest is rendered when `status` runs
    assert loaded(tmp_path, []) == ()  # a site switches its kind's command off


@pytest.mark.parametrize(("status", "key", "reason"), [
    (["{{ service }}-facts"], "status[0]", "the program name may use only vars"),
    (["{{ values.size }}"], "status[0]", "values is not what a status command may read"),
    (["lister", "{{ entry.dn }}"], "status[1]", "entry is not what a status command may read"),
    (["lister", "{{ vars.root"], "status[1]", "template syntax error"),
    ([" lister"], "status[0]", "not a program name"),
])
def test_a_bad_status_command_stops_the_load_naming_its_key(
        tmp_path: Path, status: list[str], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        loaded(tmp_path, status)
    assert f"services.demo.{key}: {reason}" in str(caught.value)
