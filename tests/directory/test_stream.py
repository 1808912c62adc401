"""The change stream against a real slapd: persist, refresh and poll modes, restarts."""

from __future__ import annotations

import datetime
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import ldap3
import pytest

from provisiond.directory.connection import ConnectionFactory
from provisiond.directory.stream import Change, ChangeStream, Mode
from provisiond.testing.slapd import Slapd

OU = "ou=demo,dc=example,dc=org"
FILTER = "(&(objectClass=provisiondProvisioning)(provisiondState=0))"
ATTRIBUTES = ["cn", "provisiondMode"]


class Recorder:
    """A thread-safe listener that tests can wait on."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.changes: list[Change] = []
        self.cookies: list[tuple[str, int]] = []
        self.refreshes = 0
        self.connection: list[tuple[bool, str]] = []

    def on_change(self, change: Change) -> None:
        with self.condition:
            self.changes.append(change)
            self.condition.notify_all()

    def on_cookie(self, cookie: str, covers: int) -> None:
        with self.condition:
            self.cookies.append((cookie, covers))
            self.condition.notify_all()

    def on_refresh_done(self) -> None:
        with self.condition:
            self.refreshes += 1
            self.condition.notify_all()

    def on_connection(self, up: bool, reason: str) -> None:
        with self.condition:
            self.connection.append((up, reason))
            self.condition.notify_all()

    def wait(self, what: str, predicate: Callable[[Recorder], bool], timeout: float = 5.0) -> None:
        with self.condition:
            if not self.condition.wait_for(lambda: predicate(self), timeout):
                raise AssertionError(f"timed out waiting for {what}; changes: {self.changes}")

    def named(self, cn: str) -> list[Change]:
        with self.condition:
            return [c for c in self.changes if c.attributes.get("cn") == (cn,) or c.dn == dn(cn)]

    def last(self, cn: str) -> Change | None:
        found = self.named(cn)
        return found[-1] if found else None

    def mode(self, cn: str) -> str | None:
        """provisiondMode of the last change to `cn`; "" when it was last seen leaving."""
        change = self.last(cn)
        if change is None:
            return None
        return change.attributes.get("provisiondmode", ("",))[0] if change.present else ""


def dn(cn: str) -> str:
    return f"cn={cn},{OU}"


def add(connection: ldap3.Connection, cn: str, mode: str = "add") -> None:
    ok = connection.add(
        dn(cn),
        ["provisiondDemoItem", "provisiondProvisioning"],
        {"provisiondMode": mode, "provisiondState": "0", "provisiondExecutionDate": "0"},
    )
    assert ok, connection.result


def replace(connection: ldap3.Connection, cn: str, **values: str) -> None:
    changes = {name: [(ldap3.MODIFY_REPLACE, [value])] for name, value in values.items()}
    assert connection.modify(dn(cn), changes), connection.result


def delete(connection: ldap3.Connection, cn: str) -> None:
    assert connection.delete(dn(cn)), connection.result


def stream(
    factory: ConnectionFactory, mode: Mode, recorder: Recorder, cookie: str | None = None
) -> ChangeStream:
    return ChangeStream(
        factory,
        base=OU,
        filter=FILTER,
        attributes=ATTRIBUTES,
        mode=mode,
        interval=0.1,
        cookie=cookie,
        listener=recorder,
        backoff_initial=0.05,
        backoff_max=0.2,
        watchdog=0.2,
    )


@contextmanager
def running(change_stream: ChangeStream) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=change_stream.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        assert not thread.is_alive()


def offline_modify(slapd: Slapd, ldif: str) -> None:
    """Change the database with slapmodify while slapd is stopped."""
    result = subprocess.run(
        ["/usr/sbin/slapmodify", "-n1", "-F", str(slapd.directory / "slapd.d")],
        input=ldif.encode(),
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()


def now_csn() -> str:
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y%m%d%H%M%S.%fZ") + "#000000#001#000000"


# -- persist -----------------------------------------------------------------------------------


def test_persist_delivers_adds_modifies_and_entries_leaving_the_filter(
    factory: ConnectionFactory, writer: ldap3.Connection
) -> None:
    add(writer, "old")
    recorder = Recorder()
    with running(stream(factory, "persist", recorder)):
        recorder.wait("initial refresh", lambda r: r.refreshes == 1)
        assert [c.present for c in recorder.named("old")] == [True]
        assert recorder.connection == [(True, "persistent search running")]

        add(writer, "new")
        recorder.wait("the add", lambda r: bool(r.named("new")))
        replace(writer, "new", provisiondMode="modify")
        recorder.wait("the modify", lambda r: r.mode("new") == "modify")
        replace(writer, "old", provisiondState="20240101T000000Z")
        recorder.wait("old leaving the filter", lambda r: r.mode("old") == "")

    gone = recorder.last("old")
    assert gone is not None and gone.dn == dn("old") and gone.attributes == {}
    new = recorder.last("new")
    assert new is not None and new.uuid == new.attributes["entryuuid"][0]
    assert [c.seq for c in recorder.changes] == list(range(1, len(recorder.changes) + 1))
    # Every persist-phase entry carries its cookie; the last one covers the last change.
    assert recorder.cookies[-1][1] == recorder.changes[-1].seq
    assert [covers for _, covers in recorder.cookies] == sorted(covers for _, covers in recorder.cookies)


def test_persist_survives_a_restart_and_resumes_from_its_cookie(
    slapd: Slapd, factory: ConnectionFactory, writer: ldap3.Connection
) -> None:
    for cn in ("keep", "edit", "drop"):
        add(writer, cn)
    writer.unbind()
    recorder = Recorder()
    with running(stream(factory, "persist", recorder)):
        recorder.wait("initial refresh", lambda r: r.refreshes == 1 and len(r.cookies) == 1)
        started = time.monotonic()
        slapd.stop()
        recorder.wait("the outage", lambda r: r.connection[-1][0] is False, timeout=2)
        assert time.monotonic() - started < 1.5  # the watchdog is 0.2 s
        # While it is down, delete an entry offline and move contextCSN on (slapmodify alone
        # leaves it behind): the session log cannot cover that, so slapd sends a present phase.
        offline_modify(
            slapd,
            f"dn: {dn('drop')}\nchangetype: delete\n\n"
            f"dn: dc=example,dc=org\nchangetype: modify\nreplace: contextCSN\n"
            f"contextCSN: {now_csn()}\n-\n",
        )
        slapd.start()
        recorder.wait("the reconnect", lambda r: r.connection[-1][0] is True)
        recorder.wait("the offline delete", lambda r: r.mode("drop") == "")
        writer = factory.open()
        replace(writer, "edit", provisiondMode="modify")
        recorder.wait("a modify after the restart", lambda r: r.mode("edit") == "modify")
        writer.unbind()

        # A plain restart (session log lost again); changes made afterwards arrive too.
        slapd.restart()
        writer = factory.open()
        add(writer, "after")
        recorder.wait("an add after the restart", lambda r: bool(r.named("after")))
        writer.unbind()
    drop = recorder.named("drop")
    assert [(c.uuid, c.dn, c.present) for c in drop] == [
        (drop[0].uuid, dn("drop"), True),
        (drop[0].uuid, dn("drop"), False),  # the DN the stream remembered
    ]
    assert [c.present for c in recorder.named("keep")] == [True]  # not re-delivered
    # Down, then reasons while down (connection lost, then refused), then up again.
    ups = [up for up, _ in recorder.connection]
    assert [up for index, up in enumerate(ups) if index == 0 or up != ups[index - 1]] == [
        True, False, True, False, True]
    assert len(ups) <= 7


# -- refresh -----------------------------------------------------------------------------------


def test_refresh_with_a_stored_cookie_returns_only_later_changes(
    factory: ConnectionFactory, writer: ldap3.Connection
) -> None:
    for cn in ("a", "b", "c", "d"):
        add(writer, cn)
    first = Recorder()
    stream(factory, "refresh", first).run_once()
    assert sorted(c.attributes["cn"][0] for c in first.changes) == ["a", "b", "c", "d"]
    assert first.refreshes == 1 and first.cookies[-1][1] == 4
    cookie = first.cookies[-1][0]

    replace(writer, "a", provisiondMode="modify")
    delete(writer, "b")
    replace(writer, "c", provisiondState="20240101T000000Z")  # stops matching
    later = Recorder()
    stream(factory, "refresh", later, cookie).run_once()
    assert {(c.attributes.get("cn", ("?",))[0], c.present) for c in later.changes} == {
        ("a", True),
        ("?", False),
        ("?", False),
    }
    assert {c.uuid for c in later.changes if not c.present} == {
        c.uuid for c in first.changes if c.attributes["cn"][0] in ("b", "c")
    }
    assert later.cookies[-1][1] == len(later.changes) and later.refreshes == 1

    nothing = Recorder()
    stream(factory, "refresh", nothing, later.cookies[-1][0]).run_once()
    assert nothing.changes == [] and nothing.refreshes == 1


def test_refresh_after_restart_uses_the_present_phase(
    slapd: Slapd, factory: ConnectionFactory, writer: ldap3.Connection
) -> None:
    for cn in ("a", "b", "c"):
        add(writer, cn)
    recorder = Recorder()
    refresh = stream(factory, "refresh", recorder)
    refresh.run_once()
    assert len(recorder.changes) == 3
    delete(writer, "b")
    replace(writer, "c", provisiondMode="modify")
    writer.unbind()
    slapd.restart()  # the session log is gone: slapd lists the survivors instead
    refresh.run_once()  # on a new connection: the kept one died with the server
    assert [(c.dn, c.present) for c in recorder.changes[3:]] == [
        (dn("c"), True),
        (dn("b"), False),  # not among the survivors; the DN is the one last seen
    ]
    assert recorder.cookies[-1][1] == 5


def test_refresh_mode_runs_until_stopped(
    factory: ConnectionFactory, writer: ldap3.Connection
) -> None:
    recorder = Recorder()
    with running(stream(factory, "refresh", recorder)):
        recorder.wait("a pass", lambda r: r.refreshes >= 1)
        add(writer, "x")
        recorder.wait("the add", lambda r: bool(r.named("x")))


def test_full_reload_reports_known_entries_that_are_gone(
    factory: ConnectionFactory, writer: ldap3.Connection
) -> None:
    add(writer, "a")
    vanished = "00000000-0000-4000-8000-000000000001"
    recorder = Recorder()
    full_reload = ChangeStream(
        factory,
        base=OU,
        filter=FILTER,
        attributes=ATTRIBUTES,
        mode="refresh",
        interval=1,
        cookie=None,  # no cookie: all content is sent, so what is not sent is gone
        listener=recorder,
        known=[vanished],
    )
    full_reload.run_once()
    assert [(c.dn, c.present) for c in recorder.changes] == [(dn("a"), True), (None, False)]
    assert recorder.changes[1].uuid == vanished


# -- poll --------------------------------------------------------------------------------------


def test_poll_delivers_modifications_and_resumes_from_its_cookie(
    factory: ConnectionFactory, writer: ldap3.Connection
) -> None:
    add(writer, "a")
    add(writer, "b")
    recorder = Recorder()
    poll = stream(factory, "poll", recorder)
    poll.run_once()
    assert [c.attributes["cn"] for c in recorder.changes] == [("a",), ("b",)]
    cookie, covers = recorder.cookies[-1]
    assert cookie.startswith("csn=") and covers == 2
    poll.run_once()  # the entry at exactly the newest CSN is not delivered twice
    assert len(recorder.changes) == 2 and recorder.refreshes == 2

    replace(writer, "a", provisiondMode="modify")
    poll.run_once()
    assert recorder.changes[-1].attributes["provisiondmode"] == ("modify",)
    assert len(recorder.changes) == 3

    resumed = Recorder()
    again = stream(factory, "poll", resumed, recorder.cookies[-1][0])
    again.run_once()
    assert resumed.changes == []
    replace(writer, "b", provisiondMode="delete")
    again.run_once()
    assert [(c.dn, c.attributes["provisiondmode"]) for c in resumed.changes] == [
        (dn("b"), ("delete",))
    ]
    assert resumed.cookies[-1][1] == 1


def test_poll_accepts_a_multi_provider_cookie(
    factory: ConnectionFactory, writer: ldap3.Connection
) -> None:
    add(writer, "a")
    first = Recorder()
    stream(factory, "refresh", first).run_once()
    syncrepl_cookie = first.cookies[-1][0]
    assert syncrepl_cookie.startswith("rid=")
    old = "20000101000000.000000Z#000000#002#000000"
    multi = f"{syncrepl_cookie.split(',delcsn=')[0]};{old}"
    add(writer, "b")
    recorder = Recorder()
    stream(factory, "poll", recorder, multi).run_once()
    assert [c.dn for c in recorder.changes] == [dn("b")]


def test_unreachable_server_raises_directory_unavailable(slapd: Slapd, factory: ConnectionFactory) -> None:
    from provisiond.directory.connection import DirectoryUnavailable

    slapd.stop()
    with pytest.raises(DirectoryUnavailable):
        stream(factory, "refresh", Recorder()).run_once()
