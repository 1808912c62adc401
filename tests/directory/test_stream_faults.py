"""The change stream under faults: a server whose state is older than our cookie, binds that
fail, and failures nobody foresaw. Real slapd throughout; slapd is SIGKILLed for real."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import ldap3

from provisiond.config import load_config
from provisiond.directory.connection import ConnectionFactory
from provisiond.directory.controls import sync_request_control
from provisiond.directory.stream import ChangeStream
from provisiond.engine import Engine
from provisiond.testing.slapd import SLAPADD, Slapd
from tests.directory.test_stream import FILTER, OU, Recorder, add, dn, running, stream
from tests.support import add_item, connect, demo_service, mode_of, write_config

STATE_NEWER = "consumer state is newer than provider"


def kill(slapd: Slapd) -> None:
    """SIGKILL: slapd restarts with its last checkpointed contextCSN, not its newest one."""
    assert slapd.process is not None
    slapd.process.send_signal(signal.SIGKILL)
    slapd.process.wait()
    slapd.process = None


def kill_and_restart(slapd: Slapd) -> None:
    kill(slapd)
    slapd.start()


def sync_result(factory: ConnectionFactory, cookie: str) -> tuple[int, str]:
    """What slapd answers a refreshOnly search with `cookie` (result code, message)."""
    connection = factory.open()
    try:
        connection.search(OU, FILTER, search_scope=ldap3.SUBTREE,
                          dereference_aliases=ldap3.DEREF_NEVER, attributes=["entryUUID"],
                          controls=[sync_request_control("refreshOnly", cookie)])
        return int(connection.result["result"]), str(connection.result["message"])
    finally:
        connection.unbind()


def cookie_older_than_slapd(slapd: Slapd, factory: ConnectionFactory, names: list[str],
                            recorder: Recorder | None = None) -> ChangeStream:
    """Add `names`, run a refresh pass (its cookie covers them), SIGKILL slapd: the restarted
    slapd refuses that cookie with 53 (checked here, so a changed slapd fails loudly).
    Returns the refresh stream, holding that cookie."""
    writer = factory.open()
    for name in names:
        add(writer, name)
    writer.unbind()
    refresh = stream(factory, "refresh", recorder or Recorder())
    refresh.run_once()
    assert refresh.cookie is not None
    kill_and_restart(slapd)
    code, message = sync_result(factory, refresh.cookie)
    assert (code, STATE_NEWER in message) == (53, True), (code, message)
    return refresh


# -- the cookie is newer than the server's state (issue 7.6) ---------------------------------------


def test_refresh_falls_back_to_a_full_refresh_when_the_server_is_older_than_the_cookie(
    slapd: Slapd, factory: ConnectionFactory
) -> None:
    recorder = Recorder()
    refresh = cookie_older_than_slapd(slapd, factory, ["a", "b", "c", "d"], recorder)
    refresh.run_once()
    again = recorder.changes[4:]
    # slapd bounds a refreshOnly answer by its (older) contextCSN: the entries newer than that
    # come from a plain search, and none of the four is taken for deleted.
    assert sorted((c.attributes["cn"][0], c.present) for c in again) == [
        ("a", True), ("b", True), ("c", True), ("d", True)]
    assert recorder.refreshes == 2
    assert refresh.cookie is not None and sync_result(factory, refresh.cookie)[0] == 0


def test_persist_falls_back_to_a_full_refresh_when_the_server_is_older_than_the_cookie(
    slapd: Slapd, factory: ConnectionFactory
) -> None:
    cookie = cookie_older_than_slapd(slapd, factory, ["a", "b", "c", "d"]).cookie
    recorder = Recorder()
    with running(stream(factory, "persist", recorder, cookie)):
        recorder.wait("the full refresh", lambda r: r.refreshes == 1, timeout=5)
        assert sorted(c.attributes["cn"][0] for c in recorder.changes) == ["a", "b", "c", "d"]
        writer = factory.open()
        add(writer, "later")
        recorder.wait("a change after it", lambda r: bool(r.named("later")))
        writer.unbind()
    assert [up for up, _ in recorder.connection] == [True]  # never reported down


def test_once_processes_entries_when_slapd_restarted_older_than_the_saved_cookie(
    slapd: Slapd, tmp_path: Path
) -> None:
    """`once` exited 69 for good: slapd refused the saved cookie with 53 until somebody wrote.
    Here an entry slapd stored but whose CSN its restarted state does not cover waits."""
    root = tmp_path / "root"
    root.mkdir()
    config_path = write_config(tmp_path / "cfg", slapd, demo_service(root))
    config = load_config(config_path)
    conn = connect(slapd)
    for name in ("one", "two", "three"):
        add_item(conn, name)
    conn.unbind()
    assert Engine(config).once() == 0  # claims and reports: the newest writes
    assert Engine(config).once() == 0  # its cookie now covers them
    saved = (config.state_dir / "demo.cookie").read_text().strip()
    kill(slapd)
    late = (f"dn: cn=late,{OU}\nobjectClass: provisiondDemoItem\nobjectClass: provisiondProvisioning\n"
            "cn: late\nprovisiondMode: add\nprovisiondState: 0\nprovisiondExecutionDate: 0\n"
            "provisiondSize: 10M\n")
    added = subprocess.run([SLAPADD, "-q", "-n1", "-F", str(slapd.directory / "slapd.d")],
                           input=late.encode(), capture_output=True, check=False)
    assert added.returncode == 0, added.stderr.decode()
    slapd.start()
    code, message = sync_result(ConnectionFactory(config.ldap), saved.split("\n")[0])
    assert (code, STATE_NEWER in message) == (53, True), (code, message)

    assert Engine(config).once() == 0
    conn = connect(slapd)
    assert mode_of(conn, dn("late")) == "added"
    assert mode_of(conn, dn("one")) == "added"
