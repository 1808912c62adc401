"""The change stream under faults: a server whose state is older than our cookie, binds that
fail, and failures nobody foresaw. Real slapd throughout; slapd is SIGKILLed for real."""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from pathlib import Path

import ldap3
import pytest

from provisiond.config import load_config
from provisiond.core.engine import Engine
from provisiond.directory.connection import ConnectionFactory
from provisiond.directory.controls import sync_request_control
from provisiond.directory.stream import Change, ChangeStream, Mode
from provisiond.model.settings import LdapSettings
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


# -- the stream never dies (issue 8.1) -------------------------------------------------------------


def settings(slapd: Slapd, password_file: Path, **overrides: object) -> LdapSettings:
    values: dict[str, object] = {"uri": slapd.uri, "bind_dn": slapd.root_dn,
                                 "bind_password_file": str(password_file), "timeout": 5}
    values.update(overrides)
    return LdapSettings(**values)  # type: ignore[arg-type]


def down_reasons(recorder: Recorder) -> list[str]:
    with recorder.condition:
        return [reason for up, reason in recorder.connection if not up]


@pytest.mark.parametrize("mode", ["persist", "refresh", "poll"])
def test_a_wrong_password_is_retried_until_the_file_is_fixed(
    slapd: Slapd, tmp_path: Path, mode: Mode
) -> None:
    """ASYNC_STREAM leaves `connection.result` None after a failed bind: reading it raised
    AttributeError, which ended the stream thread for good."""
    secret = tmp_path / "bind.secret"
    secret.write_text("wrong\n")
    factory = ConnectionFactory(settings(slapd, secret))
    recorder = Recorder()
    change_stream = stream(factory, mode, recorder)
    with running(change_stream):
        recorder.wait("the bind failure", lambda r: bool(down_reasons(r)))
        assert "invalidCredentials" in down_reasons(recorder)[0]
        time.sleep(0.6)  # several retries (backoff 0.05-0.2 s): still down, reported once
        assert recorder.connection == [(False, down_reasons(recorder)[0])]
        slapd.write_password_file(secret)  # the file is read again on every attempt
        recorder.wait("the connection", lambda r: r.connection[-1][0] is True)
        writer = factory.open()
        add(writer, "after")
        writer.unbind()
        recorder.wait("the entry", lambda r: bool(r.named("after")))


class Failing(Recorder):
    """A listener with a bug: its first on_change raises."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def on_change(self, change: Change) -> None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("a bug in the listener")
        super().on_change(change)


def test_the_stream_outlives_an_exception_nobody_foresaw(
    factory: ConnectionFactory, writer: ldap3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    add(writer, "a")
    recorder = Failing()
    with running(stream(factory, "persist", recorder)):
        recorder.wait("the change again", lambda r: bool(r.named("a")))
        recorder.wait("the reconnect", lambda r: r.connection[-1][0] is True)
    assert recorder.connection[0][0] is False and "a bug in the listener" in \
        recorder.connection[0][1]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None  # with its traceback
    assert "RuntimeError" in errors[0].getMessage()


@pytest.mark.parametrize("override, reason", [
    ({"uri": "ldap://127.0.0.1:notaport"}, "cannot connect"),
    ({"ca_file": "/nonexistent/ca.pem"}, "cannot connect"),
    ({"timeout": float("nan")}, "cannot connect"),
    ({"bind_password_file": "/nonexistent/bind.pw"}, "bind password file"),
])
@pytest.mark.parametrize("mode", ["persist", "refresh"])
def test_settings_that_fail_at_run_time_keep_the_stream_retrying(
    slapd: Slapd, password_file: Path, mode: Mode, override: dict[str, object], reason: str
) -> None:
    factory = ConnectionFactory(settings(slapd, password_file, **override))
    recorder = Recorder()
    with running(stream(factory, mode, recorder)):
        recorder.wait("the failure", lambda r: bool(down_reasons(r)))
        time.sleep(0.5)  # retried meanwhile, and reported once
    (down,) = down_reasons(recorder)
    assert reason in down, down
    assert slapd.root_password not in down
