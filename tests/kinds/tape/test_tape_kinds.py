"""The tape-library and tape-operation kinds end to end: a real slapd, the real engine (the
daemon process where it is killed), the real tape-mtx hook, the fake mtx (no changer here:
shared/notes/targets.md). Inventory written back; load, unload, transfer and their re-runs
after a SIGKILL; 20 operations on one library one at a time in order of arrival, two
libraries in parallel; a failed load still refreshes the library; hostile values refused
with nothing moved."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ldap3
import psutil
import pytest

from provisiond.testing.slapd import Slapd
from tests.kinds.tape.support import (
    MESSAGE,
    RETURN,
    Site,
    add_library,
    add_operation,
    calls,
    library_dn,
    library_state,
    moves,
    no_two_at_once,
    set_state,
    state_of,
    values_of,
    wait_added,
    wait_done,
    wait_failed,
)
from tests.support import (
    connect,
    read,
    request,
    running,
    start_daemon,
    stop_daemon,
    wait_for,
    write_config,
)

STAMP = re.compile(r"\d{8}T\d{6}Z")


def drives(site: Site, count: int = 2) -> list[str]:
    return [f"{i} {site.dev}/nst{i}" for i in range(count)]


def config(tmp_path: Path, slapd: Slapd, site: Site, **services: dict[str, object]) -> Path:
    return write_config(tmp_path / "cfg", slapd, site.services(**services))


@contextmanager
def one_library(tmp_path: Path, slapd: Slapd, site: Site, slots: list[str],
                loaded: list[str] | None = None, **state: Any,
                ) -> Iterator[tuple[ldap3.Connection, str, Path]]:
    """The engine running with library lib1 (its add done) on a fake changer."""
    changer = site.changer("changer1", library_state(slots, loaded, **state))
    conn = connect(slapd)
    with running(config(tmp_path, slapd, site)):
        library = add_library(conn, "lib1", changer, drives(site))
        wait_added(conn, library)
        yield conn, library, changer


def library_status(conn: ldap3.Connection, dn: str) -> tuple[list[str], list[str]]:
    return (values_of(conn, dn, "provisiondSlotStatus"),
            values_of(conn, dn, "provisiondDriveStatus"))


# -- the library: inventory written back ---------------------------------------------------------


def test_a_library_add_writes_its_inventory_back_modify_reads_it_again_delete_drops_it(
        tape_slapd: Slapd, tmp_path: Path, site: Site) -> None:
    changer = site.changer("changer1", library_state(
        ["A00001L8", "A00002L8", "", "ie:"], ["3:A00003L8", ""], pad=True))
    conn = connect(tape_slapd)
    with running(config(tmp_path, tape_slapd, site)):
        dn = add_library(conn, "lib1", changer, drives(site))
        entry = wait_added(conn, dn)
        slots, drive_status = library_status(conn, dn)
        assert slots == ["1 Full A00001L8", "2 Full A00002L8", "3 Empty", "4 Empty import-export"]
        assert drive_status == ["0 Full 3 A00003L8", "1 Empty"]
        assert STAMP.fullmatch(entry["provisiondInventoryTime"])
        assert entry[MESSAGE] == "inventory: 4 slots (2 full), 2 drives (1 loaded)"
        assert [c.argv for c in calls(changer)] == [("inventory",), ("status",)]

        # Someone takes the tape out of slot 2 at the library's panel: a modify reads again.
        state = state_of(changer)
        state["slots"][1] = {"full": False}
        changer.write_text(json.dumps(state))
        request(conn, dn, "modify")
        wait_for(lambda: read(conn, dn).get("provisiondMode") == "modified", what="modified")
        assert library_status(conn, dn)[0][:2] == ["1 Full A00001L8", "2 Empty"]

        request(conn, dn, "delete", provisiondIsActive="FALSE")
        wait_for(lambda: read(conn, dn).get("provisiondMode") == "deleted", what="deleted")
    assert moves(changer) == []  # inventories move no tape


# -- operations -----------------------------------------------------------------------------------


def test_load_transfer_unload_report_to_the_library_and_say_what_moved(
        tape_slapd: Slapd, tmp_path: Path, site: Site) -> None:
    with one_library(tmp_path, tape_slapd, site, ["A00001L8", "A00002L8", "", ""]) as (
            conn, library, changer):
        load = wait_added(conn, add_operation(conn, library, "op1", "load", slot="1", drive="0"))
        assert load[MESSAGE] == "loaded slot 1 (A00001L8) into drive 0"
        assert library_status(conn, library) == (
            ["1 Empty", "2 Full A00002L8", "3 Empty", "4 Empty"], ["0 Full 1 A00001L8", "1 Empty"])
        move = wait_added(conn, add_operation(conn, library, "op2", "transfer", slot="2",
                                              target="4"))
        assert move[MESSAGE] == "moved slot 2 (A00002L8) to slot 4"
        unload = wait_added(conn, add_operation(conn, library, "op3", "unload", drive="0"))
        assert unload[MESSAGE] == "unloaded drive 0 (A00001L8) into slot 1"
        again = wait_added(conn, add_operation(conn, library, "op4", "unload", drive="0"))
        assert again[MESSAGE] == "drive 0 is already empty: nothing moved"
        status = wait_added(conn, add_operation(conn, library, "op5", "status"))
        assert status[MESSAGE] == "status: 4 slots (2 full), 2 drives (0 loaded)"
        assert library_status(conn, library) == (
            ["1 Full A00001L8", "2 Empty", "3 Empty", "4 Full A00002L8"], ["0 Empty", "1 Empty"])
        # the status attributes are the library's, never the operation's
        assert "provisiondSlotStatus" not in read(conn, f"cn=op1,{library}")
    assert moves(changer) == ["load 1 0", "transfer 2 4", "unload 1 0"]


def test_a_failed_load_still_refreshes_the_library(
        tape_slapd: Slapd, tmp_path: Path, site: Site) -> None:
    with one_library(tmp_path, tape_slapd, site, ["A00001L8", "", "", ""]) as (
            conn, library, changer):
        # a tape put into slot 3 by hand; the changer then fails every move
        state = state_of(changer)
        state["slots"][2] = {"full": True, "tag": "C00003L8"}
        state["sense"] = {"load": 99}
        changer.write_text(json.dumps(state))
        failed = wait_failed(conn, add_operation(conn, library, "op1", "load", slot="1",
                                                 drive="0"))
        assert failed[RETURN] == "42"
        assert "mtx load 1 0 failed (after 5 tries)" in failed[MESSAGE], failed[MESSAGE]
        assert library_status(conn, library)[0][:3] == ["1 Full A00001L8", "2 Empty",
                                                        "3 Full C00003L8"]
    assert moves(changer) == ["load 1 0"] * 5


def test_a_refused_request_moves_nothing_and_still_refreshes_the_library(
        tape_slapd: Slapd, tmp_path: Path, site: Site) -> None:
    with one_library(tmp_path, tape_slapd, site, ["A00001L8", "A00002L8"], ["2:B", ""]) as (
            conn, library, changer):
        set_state(changer, drives=[{"full": True, "source": 2, "tag": "A00002L8"},
                                   {"full": False}])
        cases = {  # request -> what the message says
            ("load", "1", "0", None): "drive 0 is full (A00002L8, from slot 2): unload it first",
            ("load", "3", "1", None): "slot 3 is outside the library (slots 1-2)",
            ("load", "1", "5", None): "drive index 5 is not one of the library's drives",
            ("unload", None, "0", "1"): "slot 1 is full",
            ("transfer", "1", None, None): "the request needs provisiondTargetSlot",
        }
        for i, ((action, slot, drive, target), reason) in enumerate(cases.items()):
            failed = wait_failed(conn, add_operation(conn, library, f"op{i}", action, slot=slot,
                                                     drive=drive, target=target))
            assert failed[RETURN] == "40", failed
            assert reason in failed[MESSAGE], failed[MESSAGE]
        assert library_status(conn, library)[1][0] == "0 Full 2 A00002L8"
    assert moves(changer) == []


@pytest.mark.slow
def test_20_operations_on_one_library_run_one_at_a_time(
        tape_slapd: Slapd, tmp_path: Path, site: Site) -> None:
    """20 transfers submitted at once (each succeeds in any order): the fake's log shows
    each operation's mtx calls (its check's status; status, transfer, status) together,
    never mixed with another's."""
    slots = [f"A{i:05d}L8" for i in range(1, 21)] + [""] * 20
    with one_library(tmp_path, tape_slapd, site, slots, delay=0.05) as (conn, library, changer):
        dns = [add_operation(conn, library, f"op{i:02d}", "transfer", slot=str(i),
                             target=str(20 + i)) for i in range(1, 21)]
        for dn in dns:
            wait_added(conn, dn, timeout=120)
    assert sorted(moves(changer)) == sorted(f"transfer {i} {20 + i}" for i in range(1, 21))
    no_two_at_once(changer)  # the fake's lock sees to that; whole operations did not mix:
    every = [c.argv for c in calls(changer)][2:]  # after the library's inventory and status
    operations = [every[i:i + 4] for i in range(0, len(every), 4)]  # check; status, move, status
    assert len(operations) == 20, every
    for one in operations:
        assert [one[0], one[1], one[2][0], one[3]] == [("status",), ("status",), "transfer",
                                                       ("status",)], every


@pytest.mark.slow
def test_operations_on_one_library_run_in_order_of_arrival(
        tape_slapd: Slapd, tmp_path: Path, site: Site) -> None:
    """Each load is followed by the unload of that drive: only the order of arrival makes
    all 20 succeed as asked."""
    slots = [f"A{i:05d}L8" for i in range(1, 11)]
    with one_library(tmp_path, tape_slapd, site, slots, delay=0.05) as (conn, library, changer):
        dns = []
        for i in range(20):
            slot = str(i // 2 + 1)
            dns.append(add_operation(conn, library, f"op{i:02d}", "load", slot=slot, drive="0")
                       if i % 2 == 0 else
                       add_operation(conn, library, f"op{i:02d}", "unload", drive="0"))
        entries = [wait_done(conn, dn, timeout=120) for dn in dns]
    expected = [f"load {i // 2 + 1} 0" if i % 2 == 0 else f"unload {i // 2 + 1} 0"
                for i in range(20)]
    assert moves(changer) == expected
    assert all(entry[RETURN] == "0" for entry in entries), entries
    no_two_at_once(changer)


@pytest.mark.slow
def test_two_libraries_run_in_parallel(tape_slapd: Slapd, tmp_path: Path, site: Site) -> None:
    changers = [site.changer(f"changer{n}", library_state(["A", "B", "C"], delay=0.8))
                for n in (1, 2)]
    conn = connect(tape_slapd)
    with running(config(tmp_path, tape_slapd, site)):
        libraries = [add_library(conn, f"lib{n}", changer, drives(site))
                     for n, changer in enumerate(changers, 1)]
        for library in libraries:
            wait_added(conn, library)
        dns = [add_operation(conn, library, f"op{i}", "load", slot=str(i), drive=str(i - 1))
               for i in (1, 2) for library in libraries]
        for dn in dns:
            wait_added(conn, dn, timeout=60)
    one, two = ([c for c in calls(changer) if c.argv[0] == "load"] for changer in changers)
    assert len(one) == len(two) == 2
    overlap = [(a, b) for a in one for b in two
               if a.end is not None and b.end is not None and a.begin < b.end and b.begin < a.end]
    assert overlap, (one, two)  # the libraries' loads ran at the same time
    for own in (one, two):  # and each library's one after the other
        assert own[0].end is not None and own[0].end <= own[1].begin


# -- bacula-sd ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_operation_waits_while_bacula_sd_is_in_use(
        tape_slapd: Slapd, tmp_path: Path, site: Site) -> None:
    """A TCP connection to sd_port stands for a job on bacula-sd (the same test as
    bacula-sd-apply's before a restart): the load waits, retried, and runs once it is gone."""
    changer = site.changer("changer1", library_state(["A00001L8", ""]))
    conn = connect(tape_slapd)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        path = write_config(tmp_path / "cfg", tape_slapd, site.services(
            library={"sd_port": port}),
            retry={"limit": 100, "initial": 0.2, "maximum": 0.5})
        with running(path):
            library = add_library(conn, "lib1", changer, drives(site))
            wait_added(conn, library)
            job = socket.create_connection(("127.0.0.1", port))
            accepted, _ = server.accept()
            op = add_operation(conn, library, "op1", "load", slot="1", drive="0")
            time.sleep(2)
            assert moves(changer) == [] and read(conn, op)["provisiondMode"] != "added"
            job.close()
            accepted.close()
            entry = wait_added(conn, op)
    assert entry[MESSAGE] == "loaded slot 1 (A00001L8) into drive 0"
    assert moves(changer) == ["load 1 0"]


# -- a crash in the middle of a move --------------------------------------------------------------


def kill_in_move(daemon: subprocess.Popen[bytes], changer: Path, command: str) -> None:
    """SIGKILL the daemon, then the orphaned hook and mtx while mtx is moving: a power cut
    in the middle of an operation."""
    wait_for(lambda: any(c.argv[0] == command and c.end is None for c in calls(changer)),
             timeout=30, what=f"mtx {command} running")
    fake = psutil.Process(next(c.pid for c in calls(changer)
                               if c.argv[0] == command and c.end is None))
    hook = fake.parent()
    daemon.send_signal(signal.SIGKILL)
    daemon.wait(timeout=10)
    for process in (hook, fake):
        if process is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGKILL)
    wait_for(lambda: not fake.is_running() or fake.status() == psutil.STATUS_ZOMBIE,
             what="mtx killed")


@pytest.mark.slow
@pytest.mark.parametrize("action, at, setup, request_, after, expected_moves", [
    # the robot finished the load: the re-run finds drive 0 holding slot 1
    ("load", "start", ["A00001L8", "", ""], {"slot": "1", "drive": "0"},
     "drive 0 already holds slot 1 (A00001L8): nothing moved", ["load 1 0"]),
    # the unload never happened: the re-run does it
    ("unload", "end", ["", "", ""], {"drive": "0"},
     "unloaded drive 0 (A00001L8) into slot 1", ["unload 1 0", "unload 1 0"]),
    # the transfer happened: the record written before it says it was this operation's
    ("transfer", "start", ["A00001L8", "", ""], {"slot": "1", "target": "3"},
     "slot 3 already holds the tape (A00001L8) moved from slot 1: nothing moved",
     ["transfer 1 3"]),
])
def test_a_sigkill_in_the_middle_of_a_move_converges_on_restart(
        tape_slapd: Slapd, tmp_path: Path, site: Site, action: str, at: str,
        setup: list[str], request_: dict[str, str], after: str,
        expected_moves: list[str]) -> None:
    loaded = ["1:A00001L8", ""] if action == "unload" else ["", ""]
    changer = site.changer("changer1", library_state(setup, loaded, moves_at=at))
    conn = connect(tape_slapd)
    path = config(tmp_path, tape_slapd, site)
    daemon = start_daemon(path, log=tmp_path / "daemon1.log")
    try:
        library = add_library(conn, "lib1", changer, drives(site))
        wait_added(conn, library)
        set_state(changer, delay=4)
        op = add_operation(conn, library, "op1", action, **request_)
        kill_in_move(daemon, changer, action)
    finally:
        stop_daemon(daemon, signal.SIGKILL)
    assert read(conn, op)["provisiondMode"] == "adding"  # claimed, never reported
    set_state(changer, delay=0)
    again = start_daemon(path, log=tmp_path / "daemon2.log")
    try:
        entry = wait_added(conn, op, timeout=60)
    finally:
        stop_daemon(again)
    assert entry[MESSAGE] == after
    assert moves(changer) == expected_moves
    if action == "unload":
        assert state_of(changer)["drives"][0] == {"full": False}


# -- hostile values ---------------------------------------------------------------------------------


HOSTILE_LIBRARY = [
    ("provisiondChangerDevice", "/dev/sda"),  # outside the allowed prefixes
    ("provisiondChangerDevice", "{dev}/../changer1"),
    ("provisiondChangerDevice", "{dev}/changer1;reboot"),
    ("provisiondChangerDevice", "{dev}/changer1\n"),
    ("provisiondDrive", "0 /dev/sda"),
    ("provisiondDrive", "0 {dev}/nst0 -f /etc/passwd"),
    ("provisiondDrive", "x {dev}/nst0"),
    ("provisiondDrive", "0 {dev}/nst0$(reboot)"),
    ("provisiondMediaType", 'LTO-8"\n}'),
    ("provisiondMediaType", "LTO 8"),
    ("cn", "lib 1"),
]
HOSTILE_OPERATION = [
    ("cn", "op 1"),
    ("provisiondTapeAction", "load;reboot"),
    ("provisiondTapeAction", "exchange"),
    ("provisiondSlot", "-1"),
    ("provisiondSlot", "99"),  # outside the library
    ("provisiondDriveIndex", "7"),  # not in provisiondDrive
    ("provisiondTargetSlot", "0"),
]


def test_a_hostile_value_in_every_attribute_is_refused_with_nothing_moved(
        tape_slapd: Slapd, tmp_path: Path, site: Site) -> None:
    changer = site.changer("changer1", library_state(["A00001L8", "", ""]))
    conn = connect(tape_slapd)
    with running(config(tmp_path, tape_slapd, site)):
        for i, (attribute, bad) in enumerate(HOSTILE_LIBRARY):
            value = bad.replace("{dev}", str(site.dev))
            given = {attribute: [value, f"1 {site.dev}/nst1"] if attribute == "provisiondDrive"
                     else value}
            entry = wait_failed(conn, add_library(conn, f"bad{i}", changer, drives(site),
                                                  **given))
            assert entry[RETURN] == "40", (attribute, bad, entry)
            # an operation under it waits for nothing: its library's add failed
            failed = wait_failed(conn, add_operation(conn, library_dn(f"bad{i}"), "op", "load",
                                                     slot="1", drive="0"))
            assert failed[RETURN] == "47", failed

        library = add_library(conn, "lib1", changer, drives(site))
        wait_added(conn, library)
        for i, (attribute, bad) in enumerate(HOSTILE_OPERATION):
            request_ = {"name": f"op{i}", "action": "load", "slot": "1", "drive": "0"}
            key = {"cn": "name", "provisiondTapeAction": "action", "provisiondSlot": "slot",
                   "provisiondDriveIndex": "drive", "provisiondTargetSlot": "target"}[attribute]
            request_[key] = bad
            if key == "target":
                request_ = {"name": f"op{i}", "action": "transfer", "slot": "1", "target": bad}
            dn = add_operation(conn, library, request_.pop("name"), request_.pop("action"),
                               **request_)
            entry = wait_failed(conn, dn)
            assert entry[RETURN] == "40", (attribute, bad, entry)
    assert moves(changer) == []
    assert state_of(changer)["slots"][0]["full"]
