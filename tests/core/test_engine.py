"""The engine in-process against a real slapd: the whole add/modify/delete life of entries."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest

from provisiond.config import load_config
from provisiond.core.clock import FakeClock
from provisiond.core.engine import Engine
from provisiond.testing.slapd import Slapd
from tests.support import (
    DEMO_BASE,
    SyslogCapture,
    add_item,
    connect,
    demo_service,
    mode_of,
    read,
    request,
    running,
    runs,
    wait_for,
    write_config,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


def test_add_modify_delete(slapd: Slapd, tmp_path: Path, root: Path) -> None:
    conn = connect(slapd)
    config = write_config(tmp_path / "cfg", slapd, demo_service(root))
    with running(config):
        dn = add_item(conn, "alpha", size="10M")
        add_item(conn, "beta", size="1G")
        wait_for(lambda: mode_of(conn, dn) == "added", what="alpha added")
        wait_for(lambda: mode_of(conn, f"cn=beta,{DEMO_BASE}") == "added", what="beta added")
        entry = read(conn, dn)
        assert entry["provisiondReturnValue"] == "0"
        datetime.strptime(entry["provisiondState"], "%Y%m%dT%H%M%SZ")
        assert entry["provisiondPath"] == f"{root}/data/alpha"
        assert (root / "data" / "alpha").is_dir()
        assert "size\t10485760\n" in (root / "items" / "alpha.conf").read_text()
        index = (root / "index.conf").read_text()
        assert "alpha\t10485760" in index and "beta\t1073741824" in index

        request(conn, dn, "modify", provisiondSize="20M")
        wait_for(lambda: mode_of(conn, dn) == "modified", what="alpha modified")
        assert "size\t20971520\n" in (root / "items" / "alpha.conf").read_text()
        assert "alpha\t20971520" in (root / "index.conf").read_text()

        beta = f"cn=beta,{DEMO_BASE}"  # a rejected modify keeps beta in the index
        request(conn, beta, "modify", description="x\nbackup\t/etc/\tstolen/")
        wait_for(lambda: read(conn, beta).get("provisiondReturnValue") == "2")

        request(conn, dn, "delete", provisiondIsActive="FALSE")
        wait_for(lambda: mode_of(conn, dn) == "deleted", what="alpha deleted")
        assert not (root / "items" / "alpha.conf").exists()
        assert not (root / "data" / "alpha").exists()
        index = (root / "index.conf").read_text()
        assert "alpha" not in index and "beta" in index
    uuid = entry["entryUUID"]
    assert [line.split()[:2] for line in runs(root) if line.startswith(uuid)] == [
        [uuid, "add"], [uuid, "modify"], [uuid, "delete"],
    ]


def test_delete_waits_for_precondition(slapd: Slapd, tmp_path: Path, root: Path) -> None:
    conn = connect(slapd)
    config = write_config(tmp_path / "cfg", slapd, demo_service(root))
    with running(config) as engine:
        dn = add_item(conn, "gamma")
        wait_for(lambda: mode_of(conn, dn) == "added")
        request(conn, dn, "delete")  # still active: must not be touched
        wait_for(lambda: engine.idle(), what="engine idle")
        assert mode_of(conn, dn) == "delete"
        request(conn, dn, "delete", provisiondIsActive="FALSE")
        wait_for(lambda: mode_of(conn, dn) == "deleted")


def test_future_execution_date_is_acted_on_when_due(
    slapd: Slapd, tmp_path: Path, root: Path
) -> None:
    conn = connect(slapd)
    clock = FakeClock()
    tomorrow = (clock.now() + timedelta(days=1)).strftime("%Y%m%d")
    config = write_config(tmp_path / "cfg", slapd, demo_service(root))
    with running(config, clock) as engine:
        dn = add_item(conn, "later", execution_date=tomorrow)
        wait_for(lambda: engine.scheduler.pending() == 1, what="entry scheduled")
        assert mode_of(conn, dn) == "add"
        assert runs(root) == []
        clock.advance(timedelta(days=1))
        wait_for(lambda: mode_of(conn, dn) == "added", what="added once due")


def test_future_date_survives_restart(slapd: Slapd, tmp_path: Path, root: Path) -> None:
    """The cookie moves past a scheduled entry; the next start must find it again."""
    conn = connect(slapd)
    clock = FakeClock()
    tomorrow = (clock.now() + timedelta(days=1)).strftime("%Y%m%d")
    config = write_config(tmp_path / "cfg", slapd, demo_service(root))
    with running(config, clock) as engine:
        dn = add_item(conn, "later", execution_date=tomorrow)
        wait_for(lambda: engine.scheduler.pending() == 1)
        add_item(conn, "now")
        wait_for(lambda: mode_of(conn, f"cn=now,{DEMO_BASE}") == "added")
    assert (tmp_path / "cfg" / "state" / "demo.cookie").exists()
    clock.advance(timedelta(days=1))
    with running(config, clock):
        wait_for(lambda: mode_of(conn, dn) == "added", what="scheduled entry after restart")


HOSTILE = [
    ("provisiondOwner", "bad\nname"),
    ("provisiondOwner", "../etc"),
    ("provisiondOwner", "`id`"),
    ("description", "x\nbackup\t/etc/\tstolen/"),
    ("description", 'quote " brace }'),
    ("description", "$(touch /tmp/pwned)"),
    ("description", "tab\there"),
    ("provisiondSize", "10M; rm -rf /"),
]


@pytest.mark.parametrize(("attribute", "value"), HOSTILE)
def test_hostile_values_are_rejected_with_code_and_message(
    slapd: Slapd, tmp_path: Path, root: Path, attribute: str, value: str
) -> None:
    conn = connect(slapd)
    config = write_config(tmp_path / "cfg", slapd, demo_service(root))
    with running(config):
        if attribute == "provisiondSize":
            dn = add_item(conn, "hostile", size=value)
        else:
            dn = add_item(conn, "hostile", **{attribute: value})
        wait_for(lambda: read(conn, dn).get("provisiondReturnValue"), what="a return value")
        entry = read(conn, dn)
        assert entry["provisiondMode"] == "adding"
        assert entry["provisiondState"] == "0"
        assert entry["provisiondReturnValue"] == "2"
        assert entry["provisiondMessage"].startswith("validate: ")
        assert attribute in entry["provisiondMessage"]
        assert "\n" not in entry["provisiondMessage"] and "\t" not in entry["provisiondMessage"]
    assert list(root.rglob("*")) == []  # nothing rendered, no hook ran
    assert not os.path.exists("/tmp/pwned")


def _hook(directory: Path, name: str, body: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def hook_service(root: Path, hook: str, code: int = 5, timeout: float | None = None) -> dict:
    step: dict[str, Any] = {"name": "custom hook", "code": code,
                            "hook": [hook, "{{ values.name }}", str(root)]}
    if timeout:
        step["timeout"] = timeout
    return {"custom": {
        "base": DEMO_BASE, "filter": "(objectClass=provisiondDemoItem)",
        "attributes": {"mode": "provisiondMode", "state": "provisiondState",
                       "execution_date": "provisiondExecutionDate",
                       "return_value": "provisiondReturnValue", "message": "provisiondMessage"},
        "values": {"name": {"attribute": "cn", "type": "posix_name"},
                   "size": {"attribute": "provisiondSize", "type": "bytes"}},
        "roots": [str(root)],
        "steps": {"add": [step], "modify": "add"},
    }}


def test_hanging_hook_is_killed_with_its_children(
    slapd: Slapd, tmp_path: Path, root: Path
) -> None:
    hooks = tmp_path / "hooks"
    _hook(hooks, "hang", 'sleep 300 & echo $! > "$2/child.pid"\n'
                         'setsid sleep 300 & echo $! > "$2/grandchild.pid"\n'
                         'echo $$ > "$2/hook.pid"\nsleep 300\n')
    conn = connect(slapd)
    config = write_config(tmp_path / "cfg", slapd, hook_service(root, "hang", timeout=1),
                          hooks={"path": [str(hooks)]})
    with running(config):
        dn = add_item(conn, "sleepy")
        wait_for(lambda: read(conn, dn).get("provisiondReturnValue") == "5", what="failure")
    assert "timed out" in read(conn, dn)["provisiondMessage"]
    pids = [int((root / f).read_text()) for f in ("hook.pid", "child.pid", "grandchild.pid")]

    def all_gone() -> bool:
        return not any(
            psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
            for p in pids
        )

    wait_for(all_gone, timeout=10, what="hook processes killed")


def test_failed_hook_then_retry_completes(slapd: Slapd, tmp_path: Path, root: Path) -> None:
    hooks = tmp_path / "hooks"
    _hook(hooks, "flaky", '[ -e "$2/allow" ] || { echo "not yet allowed" >&2; exit 3; }\n')
    conn = connect(slapd)
    config = write_config(tmp_path / "cfg", slapd, hook_service(root, "flaky"),
                          hooks={"path": [str(hooks)]})
    with running(config):
        dn = add_item(conn, "flaky")
        wait_for(lambda: read(conn, dn).get("provisiondReturnValue") == "5")
        entry = read(conn, dn)
        assert entry["provisiondMode"] == "adding" and entry["provisiondState"] == "0"
        assert "not yet allowed" in entry["provisiondMessage"]
        (root / "allow").touch()
        request(conn, dn, "add")  # what `provisiond retry` / an operator does
        wait_for(lambda: mode_of(conn, dn) == "added")
        assert read(conn, dn)["provisiondReturnValue"] == "0"


def test_transient_exit_75_is_retried(slapd: Slapd, tmp_path: Path, root: Path) -> None:
    hooks = tmp_path / "hooks"
    _hook(hooks, "busy", 'n=$(cat "$2/count" 2>/dev/null || echo 0); n=$((n+1))\n'
                         'echo $n > "$2/count"; [ $n -ge 3 ] || exit 75\n')
    conn = connect(slapd)
    config = write_config(tmp_path / "cfg", slapd, hook_service(root, "busy"),
                          hooks={"path": [str(hooks)]})
    with running(config) as engine:
        dn = add_item(conn, "busy")
        wait_for(lambda: mode_of(conn, dn) == "added")
        assert (root / "count").read_text().strip() == "3"
        assert engine.counters.retried >= 2


def test_transient_gives_up_after_the_limit(slapd: Slapd, tmp_path: Path, root: Path) -> None:
    hooks = tmp_path / "hooks"
    _hook(hooks, "never", "exit 75\n")
    conn = connect(slapd)
    config = write_config(tmp_path / "cfg", slapd, hook_service(root, "never", code=9),
                          hooks={"path": [str(hooks)]}, retry={"limit": 2, "initial": 0.05})
    with running(config):
        dn = add_item(conn, "never")
        wait_for(lambda: read(conn, dn).get("provisiondReturnValue") == "9")


def test_password_never_reaches_logs_or_hooks(tmp_path: Path, root: Path) -> None:
    from provisiond.testing.slapd import destroy, start_private_slapd
    from tests.conftest import DEMO_OU, require_slapd

    require_slapd()
    password = "Pw-7f3c9e-never-leak"
    server = start_private_slapd(extra_ldif=DEMO_OU, root_password=password)
    try:
        hooks = tmp_path / "hooks"
        _hook(hooks, "dump", 'env > "$2/env.txt"; printf "%s " "$@" > "$2/argv.txt"\n')
        cfg = tmp_path / "cfg"
        cfg.mkdir()
        syslog = SyslogCapture(cfg / "syslog.sock")
        config = write_config(cfg, server, hook_service(root, "dump"),
                              hooks={"path": [str(hooks)]})
        conn = connect(server)
        with running(config):
            dn = add_item(conn, "leak")
            wait_for(lambda: mode_of(conn, dn) == "added")
        syslog.close()
        assert "claimed" in syslog.text() and "service=custom" in syslog.text()
        for text in (syslog.text(), (root / "env.txt").read_text(),
                     (root / "argv.txt").read_text()):
            assert password not in text
        env_names = {line.split("=", 1)[0] for line in (root / "env.txt").read_text().splitlines()}
        assert "PROVISIOND_ENTRYUUID" in env_names and "PROVISIOND_VALUE_NAME" in env_names
    finally:
        destroy(server)


def test_poll_mode_end_to_end(slapd: Slapd, tmp_path: Path, root: Path) -> None:
    conn = connect(slapd)
    config = write_config(tmp_path / "cfg", slapd, demo_service(root),
                          sync={"mode": "poll", "interval": 0.1})
    with running(config):
        dn = add_item(conn, "polled")
        wait_for(lambda: mode_of(conn, dn) == "added")
        request(conn, dn, "modify", provisiondSize="2G")
        wait_for(lambda: mode_of(conn, dn) == "modified")


def test_once_processes_everything_and_reports_failures(
    slapd: Slapd, tmp_path: Path, root: Path
) -> None:
    conn = connect(slapd)
    good = add_item(conn, "good")
    bad = add_item(conn, "bad", description="tab\there")
    config = load_config(write_config(tmp_path / "cfg", slapd, demo_service(root)))
    assert Engine(config).once() == 1
    assert mode_of(conn, good) == "added"
    assert read(conn, bad)["provisiondReturnValue"] == "2"
    conn.delete(bad)
    add_item(conn, "other")
    assert Engine(config).once() == 0


def test_state_timestamp_is_utc(slapd: Slapd, tmp_path: Path, root: Path) -> None:
    conn = connect(slapd)
    before = datetime.now(UTC).replace(microsecond=0)
    config = write_config(tmp_path / "cfg", slapd, demo_service(root))
    with running(config):
        dn = add_item(conn, "utc")
        wait_for(lambda: mode_of(conn, dn) == "added")
    stamp = datetime.strptime(read(conn, dn)["provisiondState"], "%Y%m%dT%H%M%SZ")
    assert abs((stamp.replace(tzinfo=UTC) - before).total_seconds()) < 60


def test_an_idle_stream_stays_connected_longer_than_the_timeout(
    slapd: Slapd, tmp_path: Path, root: Path
) -> None:
    """ldap3 left connect_timeout on the stream's socket, so an idle stream died after it."""
    import time

    conn = connect(slapd)
    config = write_config(tmp_path / "cfg", slapd, demo_service(root), ldap={"timeout": 1})
    with running(config) as engine:
        runtime = engine.services["demo"]
        wait_for(lambda: runtime.connected, what="stream connected")
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:
            assert runtime.connected, "the idle stream was dropped"
            time.sleep(0.1)
        dn = add_item(conn, "after-idle")
        wait_for(lambda: mode_of(conn, dn) == "added", timeout=5)


def test_a_retry_survives_the_entry_leaving_the_stream(
    slapd: Slapd, tmp_path: Path, root: Path
) -> None:
    """Our own claim takes the entry out of the sync filter (a present phase reports it gone);
    that must cancel a wait for an execution date, never a pending retry."""
    from types import MappingProxyType

    from provisiond.directory.stream import Change

    hooks = tmp_path / "hooks"
    _hook(hooks, "busy", 'n=$(cat "$2/count" 2>/dev/null || echo 0); n=$((n+1))\n'
                         'echo $n > "$2/count"; [ $n -ge 2 ] || exit 75\n')
    conn = connect(slapd)
    config = write_config(tmp_path / "cfg", slapd, hook_service(root, "busy"),
                          hooks={"path": [str(hooks)]}, retry={"initial": 1})
    with running(config) as engine:
        dn = add_item(conn, "left")
        wait_for(lambda: engine.counters.retried == 1, what="a retry scheduled")
        uuid = read(conn, dn)["entryUUID"]
        runtime = engine.services["custom"]
        engine.handle_change(runtime, Change(10**6, uuid, None, False, MappingProxyType({})))
        wait_for(lambda: mode_of(conn, dn) == "added", timeout=10, what="retried and added")
