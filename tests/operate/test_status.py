"""`provisiond status` against a real slapd: counts, failures, stuck, scheduled, cookie, daemon."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from provisiond.config import load_config
from provisiond.core.engine import Engine
from provisiond.operate.status import _config_of, collect, exit_status, format_text
from tests.operate.conftest import Site
from tests.support import (
    DEMO_BASE,
    add_item,
    run_cli,
    start_daemon,
    stop_daemon,
    wait_for,
    write_config,
)


def populate(site: Site) -> dict[str, str]:
    """One of each: done, failed, pending, scheduled, and one stranded at adding."""
    dns = {
        "done": add_item(site.conn, "done"),
        "failed": add_item(site.conn, "failed", description="tab\there"),
    }
    assert Engine(load_config(site.config)).once() == 1
    tomorrow = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y%m%d")
    dns["scheduled"] = add_item(site.conn, "later", execution_date=tomorrow)
    dns["pending"] = add_item(site.conn, "pending")
    dns["stuck"] = add_item(site.conn, "stuck", mode="adding")
    return dns


def test_status_json_classifies_every_entry(site: Site) -> None:
    dns = populate(site)
    result = run_cli("--config", str(site.config), "status", "--json", "--stuck-after", "0")
    assert result.returncode == 1, result.stderr  # a failed and a stuck entry
    report = json.loads(result.stdout)
    assert report["directory"]["reachable"] is True
    assert report["daemon"]["running"] is False
    (service,) = report["services"]
    assert service["name"] == "demo" and service["entries"] == 5
    assert service["counts"] == {
        "add": {"pending": 1, "scheduled": 1},
        "adding": {"failed": 1, "stuck": 1},
        "added": {"done": 1},
    }
    (failed,) = service["failed"]
    assert failed["dn"] == dns["failed"]
    assert failed["return_value"] == 2
    assert failed["message"].startswith("validate: ")
    assert 0 <= failed["age_seconds"] < 120
    assert [row["dn"] for row in service["stuck"]] == [dns["stuck"]]
    (scheduled,) = service["scheduled"]
    assert scheduled["dn"] == dns["scheduled"] and scheduled["in_days"] == 3
    cookie = service["cookie"]
    assert cookie["present"] and 0 <= cookie["age_seconds"] < 120
    assert cookie["newest_change"].endswith("Z")
    assert report["summary"]["failed"] == 1 and report["summary"]["stuck"] == 1


def test_status_text_for_an_operator(site: Site) -> None:
    dns = populate(site)
    report = collect(load_config(site.config))  # default --stuck-after: "adding" is working
    out = io.StringIO()
    format_text(report, out)
    text = out.getvalue()
    assert "daemon not running" in text
    assert "service demo (ou=demo,dc=example,dc=org, kind demo)" in text
    assert "add 1 pending, 1 scheduled | adding 1 failed, 1 working | added 1 done" in text
    assert f"{dns['failed']}  adding  rc=2" in text
    assert "validate: " in text and "\t" not in text
    assert "on " in text and "(in 3 days)" in text
    assert "1 failed, 0 stuck, 1 working, 1 scheduled, 5 entries" in text
    assert exit_status(report) == 1


def test_status_without_failures_exits_0(site: Site) -> None:
    add_item(site.conn, "fine")
    assert Engine(load_config(site.config)).once() == 0
    result = run_cli("--config", str(site.config), "status")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "added 1 done" in result.stdout


def test_status_sees_a_running_daemon(site: Site, tmp_path: Path) -> None:
    log = tmp_path / "daemon.log"
    daemon = start_daemon(site.config, log=log)
    try:
        wait_for(lambda: "event=ready" in log.read_text(), what="daemon ready")

        def running() -> dict | None:
            report = json.loads(run_cli("--config", str(site.config), "status",
                                        "--json").stdout)
            return report["daemon"] if report["daemon"]["running"] else None

        found = wait_for(running, what="status to see the daemon")
        assert found["pid"] == daemon.pid and found["found_by"] == "process list"
        assert found["started"].endswith("Z")
    finally:
        assert stop_daemon(daemon) == 0


def test_status_with_the_directory_down(site: Site) -> None:
    site.slapd.stop()
    result = run_cli("--config", str(site.config), "status")
    assert result.returncode == 69
    assert "UNREACHABLE" in result.stdout
    assert "service demo" in result.stdout  # the cookie is still shown


def test_status_of_a_service_whose_base_is_missing(site: Site, tmp_path: Path) -> None:
    config = write_config(tmp_path / "other", site.slapd, {"demo": {
        "kind": "demo", "vars": {"root": str(site.root), "base": f"ou=gone,{DEMO_BASE}"}}})
    report = collect(load_config(config))
    assert report["services"][0]["entries"] == 0 and report["services"][0]["error"] is None


def test_config_of_a_command_line() -> None:
    assert _config_of(["/usr/bin/python3", "/usr/bin/provisiond", "run"]) \
        == "/etc/provisiond/provisiond.yaml"
    assert _config_of(["python", "-m", "provisiond", "--config", "/x.yaml", "run"]) == "/x.yaml"
    assert _config_of(["provisiond", "-c", "/y.yaml", "run", "--daemon"]) == "/y.yaml"
    assert _config_of(["provisiond", "--config=/z.yaml", "run"]) == "/z.yaml"
    assert _config_of(["provisiond", "status"]) is None
    assert _config_of(["vim", "run"]) is None


def test_paged_search_reads_more_than_a_page(site: Site, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    from provisiond.directory import access

    for number in range(7):
        add_item(site.conn, f"item{number}")
    monkeypatch.setattr(access, "PAGE_SIZE", 3)
    report = collect(load_config(site.config))
    assert report["services"][0]["counts"] == {"add": {"pending": 7}}
