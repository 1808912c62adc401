"""The daemon as a process: crashes, two daemons racing, slapd restarts, signals."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import ldap3
import psutil
import pytest

from provisiond.core.journal import Journal
from provisiond.testing.slapd import Slapd
from tests.support import (
    DEMO_BASE,
    add_item,
    connect,
    demo_service,
    mode_of,
    read,
    request,
    run_cli,
    runs,
    start_daemon,
    stop_daemon,
    wait_for,
    write_config,
)


def slow_service(root: Path, hooks: Path) -> dict[str, Any]:
    """render a large file, then a hook that announces itself and takes two seconds."""
    (hooks / "slow").parent.mkdir(parents=True, exist_ok=True)
    (hooks / "slow").write_text(
        '#!/bin/sh\ntouch "$2/started.$PROVISIOND_ENTRYUUID"\nsleep 2\n'
        'echo "$PROVISIOND_ENTRYUUID $1" >> "$2/runs.log"\n'
    )
    (hooks / "slow").chmod(0o755)
    templates = hooks.parent / "templates"
    templates.mkdir(exist_ok=True)
    (templates / "big.j2").write_text(
        "{% for i in range(20000) %}{{ values.name }} line {{ i }}\n{% endfor %}end\n"
    )
    return {"slow": {
        "base": DEMO_BASE, "filter": "(objectClass=provisiondDemoItem)",
        "attributes": {"mode": "provisiondMode", "state": "provisiondState",
                       "execution_date": "provisiondExecutionDate",
                       "return_value": "provisiondReturnValue", "message": "provisiondMessage"},
        "values": {"name": {"attribute": "cn", "type": "posix_name"}},
        "roots": [str(root)],
        "steps": {"add": [
            {"name": "big file", "code": 7,
             "render": {"template": "big.j2", "path": str(root) + "/{{ values.name }}.txt"}},
            {"name": "slow hook", "code": 5, "hook": ["slow", "add", str(root)]},
        ]},
    }}


def slow_config(tmp_path: Path, slapd: Slapd, root: Path) -> Path:
    hooks = tmp_path / "hooks"
    return write_config(tmp_path / "cfg", slapd, slow_service(root, hooks),
                        hooks={"path": [str(hooks)]}, templates=[str(tmp_path / "templates")])


def expected_big(name: str) -> str:
    return "".join(f"{name} line {i}\n" for i in range(20000)) + "end\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


def test_sigkill_mid_pipeline_then_restart_completes(
    slapd: Slapd, tmp_path: Path, root: Path
) -> None:
    config = slow_config(tmp_path, slapd, root)
    conn = connect(slapd)
    daemon = start_daemon(config, log=tmp_path / "daemon.log")
    try:
        dn = add_item(conn, "crashy")
        uuid = wait_for(lambda: read(conn, dn).get("entryUUID"))
        wait_for(lambda: (root / f"started.{uuid}").exists(), what="hook started")
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=10)
        entry = read(conn, dn)
        assert entry["provisiondMode"] == "adding" and "provisiondReturnValue" not in entry
        state = tmp_path / "cfg" / "state"
        assert Journal(state, "slow").holds(uuid), "the claim must be in the journal"

        daemon = start_daemon(config, log=tmp_path / "daemon.log")
        wait_for(lambda: mode_of(conn, dn) == "added", timeout=30, what="resumed and added")
        assert read(conn, dn)["provisiondReturnValue"] == "0"
        assert (root / "crashy.txt").read_text() == expected_big("crashy")
        assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]
        assert not Journal(state, "slow").holds(uuid)
    finally:
        stop_daemon(daemon)
    assert "event=resume" in (tmp_path / "daemon.log").read_text()


def test_two_daemons_500_entries_each_runs_exactly_once(
    slapd: Slapd, tmp_path: Path, root: Path
) -> None:
    # Two hosts: each writes its own files (one daemon per aggregate file per host).
    roots = [root / "a", root / "b"]
    first = write_config(tmp_path / "a", slapd, demo_service(roots[0]))
    second = write_config(tmp_path / "b", slapd, demo_service(roots[1]))
    daemons = [start_daemon(first, log=tmp_path / "a.log"),
               start_daemon(second, log=tmp_path / "b.log")]
    conn = connect(slapd)
    try:
        time.sleep(0.5)  # both streams connected before the burst (not an assertion)
        for number in range(500):
            add_item(conn, f"item{number:03d}")

        def added() -> bool:
            conn.search(DEMO_BASE, "(provisiondMode=added)", attributes=["1.1"])
            return len(conn.response) == 500

        wait_for(added, timeout=180, what="500 entries added")
    finally:
        codes = [stop_daemon(daemon) for daemon in daemons]  # every one, before asserting
    assert codes == [0, 0]
    lines = [line.split() for host in roots for line in runs(host)]
    assert len(lines) == 500
    assert len({line[0] for line in lines}) == 500
    assert {line[1] for line in lines} == {"add"}
    claims = [(tmp_path / n).read_text().count("event=claimed") for n in ("a.log", "b.log")]
    assert sum(claims) == 500


def test_slapd_restarts_during_a_stream_of_changes_nothing_lost(
    slapd: Slapd, tmp_path: Path, root: Path
) -> None:
    config = write_config(tmp_path / "cfg", slapd, demo_service(root))
    daemon = start_daemon(config, log=tmp_path / "daemon.log")
    written: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        number = 0
        conn = None
        while not stop.is_set() and number < 150:
            try:
                if conn is None or conn.closed:
                    conn = connect(slapd)
                written.append(add_item(conn, f"w{number:03d}"))
                number += 1
            except (ldap3.core.exceptions.LDAPException, AssertionError, OSError):
                conn = None
                if added_anyway(f"cn=w{number:03d},{DEMO_BASE}"):  # the answer was lost
                    written.append(f"cn=w{number:03d},{DEMO_BASE}")
                    number += 1
                time.sleep(0.05)
            time.sleep(0.01)

    def added_anyway(dn: str) -> bool:
        try:
            return bool(read(connect(slapd), dn))
        except (ldap3.core.exceptions.LDAPException, OSError):
            return False

    thread = threading.Thread(target=writer)
    try:
        thread.start()
        wait_for(lambda: len(written) >= 40)
        slapd.restart()  # in-memory session log lost
        wait_for(lambda: len(written) >= 80)
        slapd.stop()
        time.sleep(1.5)  # the daemon sees the server gone and backs off
        slapd.start()
        thread.join(timeout=120)
        conn = connect(slapd)

        def all_added() -> bool:
            return all(mode_of(conn, dn) == "added" for dn in written)

        wait_for(all_added, timeout=90, what="every entry written added")
    finally:
        stop.set()
        thread.join(timeout=10)
        stop_daemon(daemon)
    lines = [line.split()[0] for line in runs(root)]
    assert len(written) == 150
    assert len(lines) == len(set(lines)) == 150
    log = (tmp_path / "daemon.log").read_text()
    assert "event=disconnected" in log and log.count("event=connected") >= 2


def test_sigterm_finishes_in_flight_work_and_saves_the_cookie(
    slapd: Slapd, tmp_path: Path, root: Path
) -> None:
    config = slow_config(tmp_path, slapd, root)
    conn = connect(slapd)
    daemon = start_daemon(config, log=tmp_path / "daemon.log")
    dn = add_item(conn, "graceful")
    uuid = wait_for(lambda: read(conn, dn).get("entryUUID"))
    wait_for(lambda: (root / f"started.{uuid}").exists())
    assert stop_daemon(daemon, signal.SIGTERM) == 0
    assert mode_of(conn, dn) == "added"
    assert (tmp_path / "cfg" / "state" / "slow.cookie").read_text().startswith("rid=")


def test_sighup_with_a_broken_config_keeps_the_running_one(
    slapd: Slapd, tmp_path: Path, root: Path
) -> None:
    config = write_config(tmp_path / "cfg", slapd, demo_service(root))
    good = config.read_text()
    conn = connect(slapd)
    daemon = start_daemon(config, log=tmp_path / "daemon.log")
    try:
        dn = add_item(conn, "before")
        wait_for(lambda: mode_of(conn, dn) == "added")
        config.write_text(good.replace("workers: 4", "workers: nine"))
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload-rejected" in (tmp_path / "daemon.log").read_text())
        dn = add_item(conn, "during")
        wait_for(lambda: mode_of(conn, dn) == "added")

        other = tmp_path / "other"
        other.mkdir()
        config.write_text(good.replace(str(root), str(other)))
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: "event=reloaded" in (tmp_path / "daemon.log").read_text())
        dn = add_item(conn, "after")
        wait_for(lambda: mode_of(conn, dn) == "added")
        assert (other / "items" / "after.conf").exists()
        assert daemon.poll() is None
    finally:
        assert stop_daemon(daemon) == 0


def threads_and_connections(process: psutil.Process) -> tuple[int, int]:
    time.sleep(0.05)
    return process.num_threads(), len(process.net_connections(kind="inet"))


def test_reloads_leave_no_threads_or_connections_behind(
    slapd: Slapd, tmp_path: Path, root: Path
) -> None:
    """Each SIGHUP builds a new engine; the old one's threads must all end (a batcher thread
    left behind kept the whole old engine alive: one more thread per reload, for ever) and
    the connections its threads and mirrors opened be closed (not left to the garbage
    collector, which let slapd hold them open for a while: 2-4 more per reload here)."""
    config = write_config(tmp_path / "cfg", slapd, demo_service(root))
    log = tmp_path / "daemon.log"
    conn = connect(slapd)
    daemon = start_daemon(config, log=log)
    process = psutil.Process(daemon.pid)

    def reload_and_provision(reloads: int) -> None:
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: log.read_text().count("event=reloaded") == reloads)
        dn = add_item(conn, f"after-reload-{reloads}")
        wait_for(lambda: mode_of(conn, dn) == "added")

    try:
        dn = add_item(conn, "before")  # the daemon is up, its signal handlers set
        wait_for(lambda: mode_of(conn, dn) == "added")
        reload_and_provision(1)
        samples = [threads_and_connections(process) for _ in range(20)]
        threads, connections = (min(column) for column in zip(*samples, strict=True))
        for reloads in range(2, 12):
            reload_and_provision(reloads)
        wait_for(lambda: process.num_threads() <= threads, 10,
                 f"the threads of 10 replaced engines to end (settled: {threads})")
        wait_for(lambda: threads_and_connections(process)[1] <= connections, 10,
                 f"the connections of 10 replaced engines closed (settled: {connections})")
    finally:
        assert stop_daemon(daemon) == 0


def test_run_daemon_writes_pid_file_and_detects_stale_and_live_ones(
    slapd: Slapd, tmp_path: Path, root: Path
) -> None:
    config = write_config(tmp_path / "cfg", slapd, demo_service(root))
    pid_file = tmp_path / "cfg" / "state" / "provisiond.pid"
    pid_file.parent.mkdir(parents=True)
    dead = subprocess.Popen(["/bin/true"])
    dead.wait()
    pid_file.write_text(f"{dead.pid}\n")  # stale: that process is gone
    result = run_cli("--config", str(config), "run", "--daemon")
    assert result.returncode == 0, result.stderr
    pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text().strip()
                       and pid_file.read_text().strip() != str(dead.pid) and pid_file.read_text()))
    try:
        conn = connect(slapd)
        dn = add_item(conn, "detached")
        wait_for(lambda: mode_of(conn, dn) == "added")
        again = run_cli("--config", str(config), "run", "--daemon")
        assert again.returncode == 75 and "already running" in again.stderr
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not pid_file.exists(), what="pid file removed on exit")


def test_check_reports_each_check(slapd: Slapd, tmp_path: Path, root: Path) -> None:
    config = write_config(tmp_path / "cfg", slapd, demo_service(root))
    result = run_cli("--config", str(config), "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok    server supports LDAP Content Synchronization (RFC 4533)" in result.stdout
    assert "ok    hook demo-hook is executable" in result.stdout
    assert "ok    service demo: base ou=demo,dc=example,dc=org exists" in result.stdout
    slapd.stop()
    result = run_cli("--config", str(config), "check")
    assert result.returncode == 69  # only the directory failed: EX_UNAVAILABLE
    assert "FAIL  bind to" in result.stdout


def test_hook_scripts_are_executable() -> None:
    scripts = Path(__file__).resolve().parents[2] / "scripts"
    for script in scripts.iterdir():
        if script.is_file() and not script.name.endswith((".md", ".txt")):
            assert script.stat().st_mode & stat.S_IXUSR, script


def test_changes_while_down_and_session_log_lost_are_all_handled(
    tmp_path: Path, root: Path
) -> None:
    """The daemon is stopped, the directory changes, slapd restarts (its in-memory session log
    is gone, and it is tiny anyway): the stored cookie forces a present phase on restart."""
    from provisiond.testing.slapd import destroy, start_private_slapd
    from tests.conftest import DEMO_OU, require_slapd

    require_slapd()
    server = start_private_slapd(extra_ldif=DEMO_OU, session_log=5)
    try:
        config = write_config(tmp_path / "cfg", server, demo_service(root))
        conn = connect(server)
        daemon = start_daemon(config, log=tmp_path / "daemon.log")
        settled = [add_item(conn, f"old{n}") for n in range(10)]
        wait_for(lambda: all(mode_of(conn, dn) == "added" for dn in settled))
        assert stop_daemon(daemon) == 0

        fresh = [add_item(conn, f"new{n:02d}") for n in range(30)]
        for dn in settled[:5]:
            request(conn, dn, "modify", provisiondSize="2G")
        for dn in settled[5:]:
            conn.delete(dn)
        server.restart()

        daemon = start_daemon(config, log=tmp_path / "daemon.log")
        conn = connect(server)
        wait_for(lambda: all(mode_of(conn, dn) == "added" for dn in fresh), timeout=60)
        wait_for(lambda: all(mode_of(conn, dn) == "modified" for dn in settled[:5]))
        assert stop_daemon(daemon) == 0
    finally:
        destroy(server)
    pairs = [tuple(line.split()[:2]) for line in runs(root)]
    assert len(pairs) == len(set(pairs)) == 10 + 30 + 5
    assert "event=present-phase" in (tmp_path / "daemon.log").read_text() or \
        "event=full-refresh" in (tmp_path / "daemon.log").read_text()
