"""Batch apply (issue 11.4): `render: {..., on_change: [argv]}` runs its command once after a
render that changed the file (`tgt-admin --update`, `scstadmin -config`, a storage daemon
restart), never once per entry and never for an unchanged file; a failure fails every job
that shared the render, keeps the last applied file as FILE.prev, and leaves an "apply
pending" marker so the next render applies again, after a crash or a restart too."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from provisiond.aggregates.mirror import Aggregates, Coalescer
from provisiond.config import ConfigError, load_config
from provisiond.core.pipeline import Pipeline, StepFailed
from provisiond.directory.connection import ConnectionFactory
from provisiond.host.applied import PendingApplies
from provisiond.host.jinja import make_environment
from provisiond.model.work import Job
from provisiond.operate import preview
from provisiond.operate.check import run_checks
from provisiond.operate.retry import retry
from provisiond.testing.slapd import Slapd
from tests.config.test_config import write
from tests.core.offline import offline_config
from tests.support import (
    SyslogCapture,
    add_item,
    connect,
    demo_service,
    mode_of,
    read,
    request,
    running,
    wait_for,
    write_config,
)

# The apply command: one line per run (how many entries the file lists), then the exit status
# ROOT/apply.fail holds, if any, with a tgt-admin-like complaint (ROOT/apply.once: only once).
APPLY = """#!/bin/sh
root="$2"
printf '%s\\n' "$(grep -c "$(printf '\\t')" "$1")" >> "$root/applies.log"
env | sort > "$root/apply.env"
if [ -f "$root/apply.fail" ]; then
    echo "tgt-admin: target iqn.2024-01.org.example:t1 is in use, it won't be updated" >&2
    rc="$(cat "$root/apply.fail")"
    [ -f "$root/apply.once" ] && rm -f "$root/apply.fail"
    exit "$rc"
fi
"""


def index_step(**options: Any) -> dict[str, Any]:
    return {"name": "write index", "code": 8, "render": {
        "template": "demo/index.conf.j2", "path": "{{ vars.root }}/index.conf", "scope": "all",
        "on_change": ["apply-index", "{{ path }}", "{{ vars.root }}"], **options}}


def program(tmp_path: Path, name: str, text: str) -> Path:
    """A hook directory in `tmp_path` holding the program `name`; the directory."""
    hooks = tmp_path / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / name).write_text(text)
    (hooks / name).chmod(0o755)
    return hooks


class Site:
    """The demo kind whose only step writes the index of all entries and applies it."""

    def __init__(self, tmp_path: Path, slapd: Slapd) -> None:
        self.root = tmp_path / "root"
        self.root.mkdir()
        hooks = program(tmp_path, "apply-index", APPLY)
        self.cfg = tmp_path / "cfg"
        services = demo_service(self.root, steps={
            "add": [index_step()], "modify": "add", "delete": [index_step()]})
        self.config_path = write_config(self.cfg, slapd, services, hooks={"path": [str(hooks)]})
        self.state = self.cfg / "state"
        self.index = self.root / "index.conf"
        self.prev = self.root / "index.conf.prev"

    def applies(self) -> list[int]:
        """The entries the file listed at each run of the apply command."""
        log = self.root / "applies.log"
        return [int(line) for line in log.read_text().splitlines()] if log.exists() else []

    def fail(self, status: int, once: bool = False) -> None:
        (self.root / "apply.fail").write_text(f"{status}\n")
        if once:
            (self.root / "apply.once").touch()

    def fix(self) -> None:
        (self.root / "apply.fail").unlink(missing_ok=True)
        (self.root / "apply.once").unlink(missing_ok=True)

    def pending(self) -> bool:
        return PendingApplies(self.state).pending(self.index.resolve())


def added(conn: Any, dns: list[str], timeout: float = 30) -> None:
    for dn in dns:
        wait_for(lambda dn=dn: mode_of(conn, dn) == "added", timeout, f"{dn} added")


def failed_with(conn: Any, dns: list[str], code: str) -> None:
    for dn in dns:
        wait_for(lambda dn=dn: read(conn, dn).get("provisiondReturnValue") == code, 30,
                 f"{dn} failed with {code}")


# -- a burst: one apply per render that changed the file ---------------------------------------


@pytest.mark.slow
def test_300_entries_at_once_apply_once_per_render_that_changed_the_file(
        slapd: Slapd, tmp_path: Path) -> None:
    site = Site(tmp_path, slapd)
    conn = connect(slapd)
    dns = [add_item(conn, f"item{i:03d}") for i in range(300)]  # all waiting when it starts
    syslog = SyslogCapture(site.cfg / "syslog.sock")
    try:
        with running(site.config_path) as engine:
            added(conn, dns, timeout=180)
            renders = engine.aggregates.coalescer(site.index.resolve()).runs
            before = len(site.applies())
            engine.refresh_aggregates()  # an unchanged file: nothing to apply
            assert len(site.applies()) == before
        log = syslog.text()
    finally:
        syslog.close()
    applies = site.applies()
    assert applies[-1] == 300  # the last apply saw every entry
    # each render that changed the file, and only those, ran the command once, after it
    events = [("wrote" if "event=wrote" in line else "ran") for line in log.splitlines()
              if (f"event=wrote service=demo step=\"write index\" path={site.index}" in line
                  or ("event=ran" in line and "apply-index" in line))]
    assert events == ["wrote", "ran"] * len(applies), events
    assert 1 <= len(applies) <= renders < 300, (len(applies), renders)
    assert not site.pending()
    environment = dict(line.split("=", 1) for line in
                       (site.root / "apply.env").read_text().splitlines() if "=" in line)
    assert environment["PROVISIOND_SERVICE"] == "demo"
    assert not [name for name in environment if "PASSWORD" in name or "SECRET" in name]


# -- a failed apply: every entry of the render fails, the previous file is kept ----------------


def test_a_failing_apply_fails_every_entry_of_its_render_and_keeps_the_previous_file(
        slapd: Slapd, tmp_path: Path) -> None:
    site = Site(tmp_path, slapd)
    conn = connect(slapd)
    syslog = SyslogCapture(site.cfg / "syslog.sock")
    try:
        with running(site.config_path):
            first = [add_item(conn, f"first{i}") for i in range(3)]
            added(conn, first)
            applied = site.index.read_bytes()
            assert not site.pending()
            site.fail(3)
            burst = [add_item(conn, f"burst{i:02d}") for i in range(20)]
            failed_with(conn, burst, "8")
            for dn in burst:
                entry = read(conn, dn)
                assert entry["provisiondMode"] == "adding"
                assert entry["provisiondMessage"].startswith("write index: ")
                assert "exited 3" in entry["provisiondMessage"]
                assert "in use, it won't be updated" in entry["provisiondMessage"]
            assert site.prev.read_bytes() == applied  # the last file whose apply succeeded
            assert site.index.read_bytes() != applied  # the new file stays, unapplied
            assert site.pending()
            runs_failed = len(site.applies())

            site.fix()
            config = load_config(site.config_path)
            for dn in burst:
                retry(config, dn)
            added(conn, burst)
            assert site.applies()[-1] == 23 and len(site.applies()) > runs_failed
            assert not site.pending()
        log = syslog.text()
    finally:
        syslog.close()
    failed = [line for line in log.splitlines() if "event=step-failed" in line]
    assert len({line.split("uuid=")[1].split()[0] for line in failed}) == 20
    assert all("rc=8" in line for line in failed)
    assert any("event=output" in line and "in use" in line for line in log.splitlines())


def test_a_pending_apply_runs_again_although_the_file_is_unchanged(
        slapd: Slapd, tmp_path: Path) -> None:
    site = Site(tmp_path, slapd)
    conn = connect(slapd)
    with running(site.config_path) as engine:
        dn = add_item(conn, "alpha")
        added(conn, [dn])
        before = site.index.read_bytes()
        assert site.applies() == [1]
        site.fail(1)
        request(conn, dn, "modify", provisiondSize="20M")
        failed_with(conn, [dn], "8")
        assert mode_of(conn, dn) == "modifying"
        changed = site.index.read_bytes()
        assert changed != before and site.prev.read_bytes() == before and site.pending()
        assert site.applies() == [1, 1]

        site.fix()
        retry(load_config(site.config_path), dn)
        wait_for(lambda: mode_of(conn, dn) == "modified", what="modified")
        assert site.index.read_bytes() == changed  # the retry's render changed nothing...
        assert site.applies() == [1, 1, 1]  # ...and applied it, since it was pending
        assert not site.pending()
        assert site.prev.read_bytes() == before
        engine.refresh_aggregates()  # unchanged, nothing pending: no apply
        assert site.applies() == [1, 1, 1]


def test_a_crash_between_install_and_apply_is_applied_after_a_restart(
        slapd: Slapd, tmp_path: Path) -> None:
    site = Site(tmp_path, slapd)
    conn = connect(slapd)
    with running(site.config_path):
        dns = [add_item(conn, f"item{i}") for i in range(2)]
        added(conn, dns)
    assert site.applies()[-1] == 2
    runs = len(site.applies())
    # what a crash after the install and before the apply leaves: the marker
    PendingApplies(site.state).mark(site.index.resolve())
    syslog = SyslogCapture(site.cfg / "syslog.sock")
    try:
        with running(site.config_path) as engine:  # the daemon restarted
            engine.refresh_aggregates()  # the periodic refresh: unchanged file, but pending
            assert len(site.applies()) == runs + 1 and not site.pending()
            engine.refresh_aggregates()
            assert len(site.applies()) == runs + 1

            site.index.write_text("edited by hand\n")  # the refresh renders it back...
            engine.refresh_aggregates()
            assert len(site.applies()) == runs + 2  # ...and applies it
            assert site.prev.read_text() == "edited by hand\n"

            site.fail(1)
            site.index.write_text("edited again\n")
            engine.refresh_aggregates()  # a failure there is logged, and stays pending
            assert len(site.applies()) == runs + 3 and site.pending()
            assert site.prev.read_text() == "edited again\n"  # what was there before
            site.index.write_text("edited once more\n")
            engine.refresh_aggregates()
            assert len(site.applies()) == runs + 4 and site.pending()
            assert site.prev.read_text() == "edited again\n"  # kept while the apply is pending
        log = syslog.text()
    finally:
        syslog.close()
    assert "event=aggregate-refresh-failed service=demo" in log


# -- per entry, transient failures, the command line -------------------------------------------


ITEM_APPLY = """#!/bin/sh
printf '%s\\n' "$1" >> "$2/applies.log"
code="$(cat "$2/apply.exit" 2>/dev/null || echo 0)"
[ "$code" = 75 ] && echo "apply-item: the target is in use by a session"
exit "$code"
"""


def entry_pipeline(tmp_path: Path) -> tuple[Pipeline, Any, Path]:
    root = tmp_path / "root"
    root.mkdir()
    hooks = program(tmp_path, "apply-item", ITEM_APPLY)
    config = offline_config(tmp_path, {"unit": {
        "base": "ou=unit,dc=example,dc=org", "filter": "(objectClass=provisiondDemoItem)",
        "values": {"name": {"attribute": "cn", "type": "posix_name"},
                   "size": {"attribute": "provisiondSize", "type": "bytes"},
                   "owner": {"attribute": "provisiondOwner", "type": "posix_name"},
                   "note": {"attribute": "description", "type": "string", "required": False}},
        "roots": [str(root)],
        "steps": {"add": [{"name": "write item", "code": 4, "render": {
            "template": "demo/item.conf.j2", "path": str(root) + "/{{ values.name }}.conf",
            "on_change": ["apply-item", "{{ path }}", str(root)]}}], "modify": "add"},
    }}, hooks={"path": [str(hooks)], "timeout": 20, "kill_grace": 0.2})
    pipeline = Pipeline(make_environment(config.templates), config.hooks,
                        Aggregates(ConnectionFactory(config.ldap), config.services,
                                   config.state_dir))
    return pipeline, config, root


def job(config: Any, name: str, size: int, request: str = "add") -> Job:
    return Job(service=config.services[0], uuid=f"00000000-0000-4000-8000-{sum(map(ord, name)):012d}",
               dn=f"cn={name},ou=unit,dc=example,dc=org", request=request,
               values={"name": name, "size": size, "owner": "root", "note": None})


def test_an_entry_file_applies_per_entry_when_it_changed(tmp_path: Path) -> None:
    pipeline, config, root = entry_pipeline(tmp_path)

    def applies() -> list[str]:
        log = root / "applies.log"
        return log.read_text().splitlines() if log.exists() else []

    pipeline.run(job(config, "alpha", 2**20))
    pipeline.run(job(config, "bravo", 2**20))
    assert applies() == [str(root / "alpha.conf"), str(root / "bravo.conf")]
    pipeline.run(job(config, "alpha", 2**20, "modify"))  # same file: no apply
    assert len(applies()) == 2
    first = (root / "alpha.conf").read_bytes()

    (root / "apply.exit").write_text("75\n")  # the target is busy: try again later
    with pytest.raises(StepFailed) as caught:
        pipeline.run(job(config, "alpha", 2 * 2**20, "modify"))
    assert caught.value.transient and caught.value.code == 4
    assert caught.value.message.endswith("the target is in use by a session")  # why it waits
    assert (root / "alpha.conf.prev").read_bytes() == first
    (root / "apply.exit").write_text("2\n")
    with pytest.raises(StepFailed) as caught:
        pipeline.run(job(config, "alpha", 2 * 2**20, "modify"))  # unchanged, but pending
    assert not caught.value.transient and caught.value.code == 4
    assert "exited 2" in caught.value.message
    (root / "apply.exit").unlink()
    pipeline.run(job(config, "alpha", 2 * 2**20, "modify"))
    assert applies()[2:] == [str(root / "alpha.conf")] * 3
    pipeline.run(job(config, "alpha", 2 * 2**20, "modify"))  # applied: nothing pending
    assert len(applies()) == 5
    assert (root / "alpha.conf.prev").read_bytes() == first
    assert not (root / "bravo.conf.prev").exists()  # there was no file before it


def test_render_shows_the_apply_command_and_check_checks_its_program(
        slapd: Slapd, tmp_path: Path) -> None:
    site = Site(tmp_path, slapd)
    config = load_config(site.config_path)
    dn = add_item(connect(slapd), "alpha")
    out = io.StringIO()
    assert preview.main(config, dn, out) == 0
    program = str(tmp_path / "hooks" / "apply-index")
    assert f"then runs {program} {site.index.resolve()} {site.root}" in out.getvalue()
    out = io.StringIO()
    assert preview.main(config, dn, out, as_json=True) == 0
    shown = json.loads(out.getvalue())["steps"][0]
    assert shown["on_change"] == [program, str(site.index.resolve()), str(site.root)]
    assert not site.index.exists() and not site.applies()  # a preview runs nothing

    (tmp_path / "hooks" / "apply-index").unlink()
    out = io.StringIO()
    run_checks(config, out)
    assert "FAIL  on_change program apply-index is executable" in out.getvalue()


@pytest.mark.parametrize(("on_change", "key", "reason"), [
    ("tgt-admin --update ALL", "services.x.steps.add[0].render.on_change", "argv"),
    (["{{ values.name }}", "{{ path }}"], "services.x.steps.add[0].render.on_change[0]",
     "program"),
    (["{{ path }}"], "services.x.steps.add[0].render.on_change[0]", "program"),
    (["tgt-admin", "{{ path"], "services.x.steps.add[0].render.on_change[1]", "syntax"),
])
def test_a_bad_apply_command_stops_the_load(tmp_path: Path, on_change: Any, key: str,
                                            reason: str) -> None:
    path = write(tmp_path, {"services": {"x": {
        "base": "dc=example,dc=org", "roots": ["/srv/provisiond-test"],
        "steps": {"add": [{"name": "r", "code": 1, "render": {
            "template": "demo/index.conf.j2", "path": "/srv/provisiond-test/a", "scope": "all",
            "on_change": on_change}}]}}}})
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.key == key and reason in caught.value.reason, caught.value


def test_the_apply_program_is_named_from_vars_at_load(tmp_path: Path) -> None:
    path = write(tmp_path, {"services": {"x": {
        "base": "dc=example,dc=org", "roots": ["/srv/provisiond-test"],
        "vars": {"tool": "/usr/sbin/tgt-admin"},
        "steps": {"add": [{"name": "r", "code": 1, "render": {
            "template": "demo/index.conf.j2", "path": "/srv/provisiond-test/a", "scope": "all",
            "on_change": ["{{ vars.tool }}", "--update", "ALL"]}}]}}}})
    (spec,) = (spec for spec in load_config(path).services if spec.name == "x")
    step = spec.steps["add"][0]
    assert step.action.on_change == ("/usr/sbin/tgt-admin", "--update", "ALL")  # type: ignore[union-attr]


# -- the coalescer hands one render's error to every job it covered -----------------------------


def test_a_failed_render_fails_every_request_that_waited_for_it() -> None:
    coalescer = Coalescer()
    outcomes: list[str] = []
    waiting: list[threading.Thread] = []

    def apply() -> None:
        if not waiting:  # while the first run applies, ten more jobs ask for the file
            waiting.extend(threading.Thread(target=ask) for _ in range(10))
            for thread in waiting:
                thread.start()
            wait_for(lambda: coalescer._requested == 11, what="ten requests waiting")
        raise OSError("apply failed")

    def ask() -> None:
        try:
            coalescer.run(apply)
        except OSError as exc:
            outcomes.append(str(exc))
        else:
            outcomes.append("ok")

    ask()
    for thread in waiting:
        thread.join(10)
    assert coalescer.runs == 2  # the first, and one shared by the ten that waited
    assert outcomes == ["apply failed"] * 11
