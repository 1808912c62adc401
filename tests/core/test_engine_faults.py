"""Engine guarantees under faults, one test per failure found by the fault issues.

Each test injects the fault at the one place that decides the outcome (a directory read
that fails, a refresh pass that misses a write, a stale journal record, a report the server
refuses) and checks the guarantee from the outside: the entry in LDAP, the files, the hook's
runs.log, the saved cookie. The slow random-kill suite is tests/faults/.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import ldap3
import pytest

from provisiond.config import load_config
from provisiond.core.engine import Engine
from provisiond.core.journal import Claim, Journal
from provisiond.directory.connection import DirectoryUnavailable
from provisiond.testing.slapd import Slapd
from tests.support import (
    DEMO_BASE,
    add_identity,
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


def unavailable(*args: Any, **kwargs: Any) -> Any:
    """Stands in for a directory call while the server is away."""
    raise DirectoryUnavailable("injected outage")


# What a worker asks the directory before it runs anything: the claim itself (on the change's
# values, no re-read), and the reads of a stale claim or a resume.
WORKER_CALLS = ("read", "find_uuid", "modify")


def cut_off(directory: Any) -> None:
    for method in WORKER_CALLS:
        setattr(directory, method, unavailable)


def restore(directory: Any) -> None:
    for method in WORKER_CALLS:
        delattr(directory, method)


def once(config: Path) -> tuple[int, Engine]:
    engine = Engine(load_config(config))
    return engine.once(), engine


def index_names(root: Path) -> set[str]:
    index = root / "index.conf"
    if not index.exists():
        return set()
    return {line.split("\t")[0] for line in index.read_text().splitlines()
            if line and not line.startswith("#")}


# -- 7.1: a request deferred by an outage is not covered by the saved cookie -------------------


def test_a_request_deferred_by_an_outage_survives_a_stop(
    slapd: Slapd, tmp_path: Path, root: Path
) -> None:
    conn = connect(slapd)
    config = write_config(tmp_path / "cfg", slapd, demo_service(root),
                          retry={"initial": 30, "maximum": 60})
    with running(config) as engine:
        cut_off(engine.directory)  # the claim meets the outage
        dn = add_item(conn, "deferred")
        wait_for(lambda: engine.counters.retried >= 1, what="the claim deferred")
        add_item(conn, "later")  # a later change, so a newer cookie arrives
        wait_for(lambda: engine.counters.retried >= 2, what="the second claim deferred")
    assert mode_of(conn, dn) == "add"
    code, _ = once(config)  # a restart: the saved cookie must not cover the two requests
    assert code == 0
    assert mode_of(conn, dn) == "added"
    assert mode_of(conn, f"cn=later,{DEMO_BASE}") == "added"


# -- 7.2: an aggregate never lacks an entry this daemon provisioned ------------------------------


@pytest.mark.parametrize("active", [None, ""], ids=["active-filter", "no-active-filter"])
def test_an_aggregate_keeps_an_entry_a_lagging_refresh_does_not_show(
    slapd: Slapd, tmp_path: Path, root: Path, active: str | None
) -> None:
    """With an `active` filter the entry is read back after its report; without one, the
    mirror takes the entry as the job provisioned it (no read)."""
    conn = connect(slapd)
    overrides = {} if active is None else {"active": active}
    config = write_config(tmp_path / "cfg", slapd, demo_service(root, **overrides))
    with running(config) as engine:
        # slapd's contextCSN lagging behind the entry's entryCSN: the mirror's refresh
        # passes do not show `first`, however often they run
        mirror = engine.aggregates.mirror(engine.services["demo"].spec)
        original = mirror.on_change

        def lagging(change: Any) -> None:
            if change.dn is None or "cn=first," not in change.dn:
                original(change)

        mirror.on_change = lagging  # type: ignore[method-assign]
        dn = add_item(conn, "first")
        wait_for(lambda: mode_of(conn, dn) == "added", what="first added")
        second = add_item(conn, "second")
        wait_for(lambda: mode_of(conn, second) == "added", what="second added")
        third = add_item(conn, "third")
        wait_for(lambda: mode_of(conn, third) == "added", what="third added")
    assert index_names(root) == {"first", "second", "third"}


def test_a_second_daemon_writing_the_same_aggregate_file_is_refused(
    slapd: Slapd, tmp_path: Path, root: Path
) -> None:
    config = write_config(tmp_path / "cfg", slapd, demo_service(root))
    other = write_config(tmp_path / "other", slapd, demo_service(root))
    with running(config):
        engine = Engine(load_config(other))
        with pytest.raises(Exception) as raised:
            engine.start_workers()
        engine.shutdown(grace=1)
    message = str(raised.value)
    assert str(root / "index.conf") in message and "pid" in message


# -- 7.3: stale temp files are removed at start -------------------------------------------------


def test_stale_temp_files_are_removed_at_start_and_nothing_else(
    slapd: Slapd, tmp_path: Path, root: Path
) -> None:
    items = root / "items"
    items.mkdir()
    stale = [items / ".alpha.conf.3f2a9c01d4e5.tmp", root / ".index.conf.00aa11bb22cc.tmp",
             items / f".beta.conf.{2**22 + 7}.0123456789ab.tmp"]  # a pid that cannot exist
    live = items / f".gamma.conf.{os.getpid()}.0123456789ab.tmp"  # a live writer's
    kept = [items / "alpha.conf", items / ".alpha.conf.tmp", items / "notes.3f2a9c01d4e5.tmp",
            live, tmp_path / ".outside.conf.3f2a9c01d4e5.tmp"]
    for path in stale + kept:
        path.write_text("x")
    config = write_config(tmp_path / "cfg", slapd, demo_service(root))
    code, _ = once(config)
    assert code == 0
    assert [p for p in stale if p.exists()] == []
    assert [p for p in kept if not p.exists()] == []


# -- 7.4: resumes go before the pending requests of the initial refresh -------------------------


def test_resumes_go_first(slapd: Slapd, tmp_path: Path, root: Path) -> None:
    conn = connect(slapd)
    config = write_config(tmp_path / "cfg", slapd, demo_service(root), workers=1)
    for number in range(30):
        add_item(conn, f"pending{number:02d}")
    dn = add_item(conn, "stranded", mode="adding")
    uuid = read(conn, dn)["entryUUID"]
    journal = Journal(tmp_path / "cfg" / "state", "demo")
    journal.record(Claim(uuid, dn, "add"))
    journal.confirm(uuid)  # our claim, acknowledged by the server before the crash
    code, _ = once(config)
    assert code == 0
    order = [line.split()[2] for line in runs(root)]
    assert order[0] == "stranded", order[:5]
    assert len(order) == 31


# -- 7.5: recovery proves ownership; a failed report is not a success ---------------------------


def test_a_stale_record_of_a_claim_another_daemon_won_is_not_resumed(
    slapd: Slapd, tmp_path: Path, root: Path
) -> None:
    conn = connect(slapd)
    config = write_config(tmp_path / "cfg", slapd, demo_service(root))
    dn = add_item(conn, "theirs")
    uuid = read(conn, dn)["entryUUID"]
    # Another daemon claimed it (its claim carries its own token) and is running its hooks;
    # this daemon was killed after journalling its own attempt and before the answer.
    assert conn.modify(dn, {"provisiondMode": [(ldap3.MODIFY_REPLACE, ["adding"])],
                            "provisiondMessage": [(ldap3.MODIFY_REPLACE, [
                                "in progress: claim 0123456789abcdef0123"])]})
    # its own claim's token, which never reached the entry
    Journal(tmp_path / "cfg" / "state", "demo").record(
        Claim(uuid, dn, "add", token="ffffeeeeddddccccbbbb"))
    code, _ = once(config)
    assert code == 0
    assert runs(root) == []
    entry = read(conn, dn)
    assert entry["provisiondMode"] == "adding" and "provisiondReturnValue" not in entry


WITHOUT_MESSAGE = {"mode": "provisiondMode", "state": "provisiondState",
                   "execution_date": "provisiondExecutionDate",
                   "return_value": "provisiondReturnValue"}


@pytest.mark.parametrize("winner", ["other", "self"])
def test_an_unconfirmed_claim_is_resumed_only_when_this_daemon_wrote_it(
    slapd: Slapd, tmp_path: Path, root: Path, winner: str
) -> None:
    # No message attribute (stoney's schema): the journal record was written, the claim sent,
    # and the daemon killed before the answer. The server's modifiersName tells who won.
    conn = connect(slapd)
    identities = {name: add_identity(conn, slapd, f"provisiond-{name}", tmp_path / "ids")
                  for name in ("self", "other")}
    config = write_config(tmp_path / "cfg", slapd,
                          demo_service(root, attributes=WITHOUT_MESSAGE),
                          ldap=identities["self"])
    dn = add_item(conn, "contested")
    uuid = read(conn, dn)["entryUUID"]
    Journal(tmp_path / "cfg" / "state", "demo").record(Claim(uuid, dn, "add", token="ab12"))
    claimant = ldap3.Connection(ldap3.Server(slapd.uri), identities[winner]["bind_dn"],
                                f"secret-provisiond-{winner}", auto_bind=True)
    assert claimant.modify(dn, {"provisiondMode": [(ldap3.MODIFY_REPLACE, ["adding"])]})
    code, _ = once(config)
    assert code == 0
    if winner == "self":
        assert [line.split()[2] for line in runs(root)] == ["contested"]
        assert mode_of(conn, dn) == "added"
    else:
        assert runs(root) == []
        assert mode_of(conn, dn) == "adding"
    assert not Journal(tmp_path / "cfg" / "state", "demo").holds(uuid)


def test_a_refused_report_is_reported_as_a_failure(
    slapd: Slapd, tmp_path: Path, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    conn = connect(slapd)
    config = write_config(tmp_path / "cfg", slapd, demo_service(root))
    # The hook's output attribute is part of the RDN: the success report is refused
    # (namingViolation), a report without it is not.
    dn = f"provisiondPath=x+cn=named,{DEMO_BASE}"
    assert conn.add(dn, ["provisiondDemoItem", "provisiondProvisioning"], {
        "cn": "named", "provisiondPath": "x", "provisiondMode": "add", "provisiondState": "0",
        "provisiondExecutionDate": "0", "provisiondSize": "10M"}), conn.result
    with caplog.at_level(logging.INFO, logger="provisiond"):
        code, engine = once(config)
    assert code != 0
    entry = read(conn, dn)
    assert entry["provisiondMode"] == "adding"
    assert entry["provisiondReturnValue"] not in ("", "0")
    assert "report" in entry["provisiondMessage"]
    assert engine.counters.succeeded == 0 and engine.counters.failed == 1
    assert "event=added" not in caplog.text


# -- 7.7: retries are reset on reconnect and jittered; a stop during an outage is no bug --------


def test_retries_waiting_for_the_directory_run_soon_after_it_is_back(
    slapd: Slapd, tmp_path: Path, root: Path
) -> None:
    conn = connect(slapd)
    config = write_config(tmp_path / "cfg", slapd, demo_service(root),
                          retry={"initial": 30, "maximum": 300})
    with running(config) as engine:
        wait_for(lambda: engine.services["demo"].connected, what="connected")
        cut_off(engine.directory)
        dn = add_item(conn, "waiting")
        wait_for(lambda: engine.counters.retried >= 1, what="deferred")
        restore(engine.directory)
        rt = engine.services["demo"]
        rt.on_connection(False, "injected")
        rt.on_connection(True, "back")  # the stream reconnected
        wait_for(lambda: mode_of(conn, dn) == "added", timeout=10,
                 what="added soon after the reconnect, not after 30 s")


def test_a_step_cut_off_by_an_outage_waits_for_the_directory_instead_of_failing(
    slapd: Slapd, tmp_path: Path, root: Path
) -> None:
    """A step that reads the directory (here the render of the file of all entries) during an
    outage longer than the retry budget: the entry is not the cause, so it must not fail (CI
    under load saw one fail with code 8 'directory unavailable' across a slapd restart). It
    waits for the directory like a claim does, and goes on when a stream reconnects."""
    conn = connect(slapd)
    config = write_config(tmp_path / "cfg", slapd, demo_service(root),
                          retry={"limit": 2, "initial": 0.1, "maximum": 0.2})
    with running(config) as engine:
        rt = engine.services["demo"]
        wait_for(lambda: rt.connected, what="connected")
        engine.aggregates.with_overlays = unavailable  # type: ignore[method-assign]
        dn = add_item(conn, "outage")
        wait_for(lambda: engine.counters.retried >= 4, 10,
                 "the step retried past the retry limit (0.3 s of budget)")
        assert read(conn, dn).get("provisiondReturnValue", "0") == "0"  # not failed
        del engine.aggregates.with_overlays
        rt.on_connection(False, "injected")
        rt.on_connection(True, "back")  # the stream reconnected
        wait_for(lambda: mode_of(conn, dn) == "added", 10, "added once the directory is back")
    assert "outage" in index_names(root)


def test_retry_delays_are_jittered(slapd: Slapd, tmp_path: Path, root: Path) -> None:
    config = write_config(tmp_path / "cfg", slapd, demo_service(root),
                          retry={"initial": 8, "maximum": 60})
    engine = Engine(load_config(config))
    delays = {engine.retry_delay(3) for _ in range(50)}
    assert len(delays) > 10
    assert all(30 <= d <= 60 for d in delays)  # half to all of 8 * 2**3, capped at 60
    assert all(16 <= d <= 32 for d in {engine.retry_delay(2) for _ in range(50)})


def collect_log() -> list[str]:
    """Lines of the `provisiond` logger (which `running` detaches from pytest's root), until
    the end of the test (conftest removes the handler)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logging.getLogger("provisiond").addHandler(Collect(level=logging.DEBUG))
    return lines


def test_a_stop_during_an_outage_is_logged_as_an_interruption(
    slapd: Slapd, tmp_path: Path, root: Path
) -> None:
    conn = connect(slapd)
    config = write_config(tmp_path / "cfg", slapd, demo_service(root),
                          hooks={"path": [str(tmp_path / "hooks")]})
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    gate = tmp_path / "gate"
    (hooks / "demo-hook").write_text(
        f"#!/bin/sh\nwhile [ ! -e {gate} ]; do sleep 0.05; done\n"
        f"exec {Path(__file__).resolve().parents[2] / 'scripts' / 'demo-hook'} \"$@\"\n")
    (hooks / "demo-hook").chmod(0o755)
    with running(config) as engine:
        lines = collect_log()
        dn = add_item(conn, "cut")
        wait_for(lambda: mode_of(conn, dn) == "adding", what="claimed")

        engine.directory.modify = unavailable  # type: ignore[method-assign]
        gate.write_text("go")
        wait_for(lambda: "report-retry" in "".join(lines), what="report retrying")
    text = "\n".join(lines)
    assert "internal-error" not in text
    assert "event=interrupted" in text
    uuid = read(conn, dn)["entryUUID"]
    assert Journal(tmp_path / "cfg" / "state", "demo").holds(uuid)


# -- 8.2: an unexpected exception fails the claimed entry ----------------------------------------


def test_an_exception_inside_a_step_fails_the_entry(
    slapd: Slapd, tmp_path: Path, root: Path
) -> None:
    conn = connect(slapd)
    templates = tmp_path / "templates" / "demo"
    templates.mkdir(parents=True)
    (templates / "item.conf.j2").write_text("{{ 1 // (values.size - values.size) }}\n")
    shipped = Path(__file__).resolve().parents[2] / "templates" / "demo" / "index.conf.j2"
    (templates / "index.conf.j2").write_text(shipped.read_text())
    config = write_config(tmp_path / "cfg", slapd, demo_service(root),
                          templates=[str(tmp_path / "templates")])
    dn = add_item(conn, "boom")
    code, engine = once(config)
    assert code != 0
    entry = read(conn, dn)
    assert entry["provisiondMode"] == "adding"
    assert entry["provisiondReturnValue"] == "7"  # the step's code
    assert "ZeroDivisionError" in entry["provisiondMessage"]
    assert engine.counters.failed == 1
    assert Journal(tmp_path / "cfg" / "state", "demo").claims() == []


# -- 8.12: a tenant whose later modify was rejected stays in aggregates across restarts -----------


def test_a_rejected_modify_keeps_the_tenant_in_the_aggregate_after_a_restart(
    slapd: Slapd, tmp_path: Path, root: Path
) -> None:
    conn = connect(slapd)
    config = write_config(tmp_path / "cfg", slapd, demo_service(root))
    dn = add_item(conn, "tenant")
    assert once(config)[0] == 0
    assert index_names(root) == {"tenant"}
    request(conn, dn, "modify", provisiondSize="lots")  # rejected: not a byte size
    assert once(config)[0] != 0
    assert read(conn, dn)["provisiondReturnValue"] == "2"
    add_item(conn, "neighbour")  # any later change re-renders the index after a restart
    assert once(config)[0] == 0
    assert index_names(root) == {"tenant", "neighbour"}


def test_aggregates_follow_a_change_made_elsewhere_without_a_change_here(
    slapd: Slapd, tmp_path: Path, root: Path
) -> None:
    conn = connect(slapd)
    config = write_config(tmp_path / "cfg", slapd, demo_service(root))
    with running(config) as engine:
        dn = add_item(conn, "here")
        wait_for(lambda: mode_of(conn, dn) == "added", what="here added")
        # another host's daemon provisioned this one: nothing here sees a request for it
        add_item(conn, "elsewhere", mode="added")
        engine.refresh_aggregates()  # what the engine does every AGGREGATE_REFRESH_SECONDS
        assert index_names(root) == {"here", "elsewhere"}
