"""The tape-mtx hook: its pure functions (the strict `mtx status` parser, device and drive
checks, what a request means in a library's state) loaded as a module, then the hook run as
a process against the fake mtx: retries on a SCSI sense, a move found done, per-action
timeouts, the status written out after a failure, nothing moved on a refused request."""

from __future__ import annotations

import datetime
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.kinds.tape.support import (
    FAKE_MTX,
    TAPE_MTX,
    calls,
    library_state,
    load_hook,
    moves,
    set_state,
    state_of,
)

mtx = load_hook()

# The notes' sample (shared/notes/targets.md), exact spacing.
SAMPLE = """\
  Storage Changer /dev/sg3:2 Drives, 9 Slots ( 1 Import/Export )
Data Transfer Element 0:Full (Storage Element 1 Loaded):VolumeTag = A00001L6
Data Transfer Element 1:Empty
      Storage Element 1:Empty
      Storage Element 2:Full :VolumeTag=A00002L6
      Storage Element 3:Empty
      Storage Element 4:Empty
      Storage Element 5:Empty
      Storage Element 6:Empty
      Storage Element 7:Empty
      Storage Element 8:Empty
      Storage Element 9 IMPORT/EXPORT:Empty
"""
DRIVES = {0: "/dev/nst0", 1: "/dev/nst1"}


# -- parsing `mtx status` -----------------------------------------------------------------------


def test_the_notes_sample_parses_exactly() -> None:
    status = mtx.parse_status(SAMPLE)
    assert status.drives == (mtx.Element(0, True, "A00001L6", 1), mtx.Element(1, False))
    assert len(status.slots) == 9
    assert status.slot(2) == mtx.Element(2, True, "A00002L6")
    assert status.slot(9) == mtx.Element(9, False, import_export=True)
    now = datetime.datetime(2026, 12, 3, 10, 15, tzinfo=datetime.UTC)
    lines = mtx.status_settings(status, now)
    assert lines[:2] == ["provisiond-set slots=1 Empty", "provisiond-set slots=2 Full A00002L6"]
    assert "provisiond-set slots=9 Empty import-export" in lines
    assert lines[-3:] == ["provisiond-set drive_status=0 Full 1 A00001L6",
                          "provisiond-set drive_status=1 Empty",
                          "provisiond-set inventory_time=20261203T101500Z"]


def test_padded_tags_untagged_tapes_and_unknown_sources_parse() -> None:
    text = (
        "  Storage Changer /dev/sg3:2 Drives, 3 Slots ( 1 Import/Export )\n"
        "Data Transfer Element 0:Full (Unknown Storage Element Loaded):VolumeTag = "
        "A00009L8                            \n"
        "Data Transfer Element 1:Full (Storage Element 2 Loaded)\n"
        "      Storage Element 1:Full :VolumeTag=A00001L8                            \n"
        "      Storage Element 2:Empty\n"
        "      Storage Element 3 IMPORT/EXPORT:Full \n")
    status = mtx.parse_status(text)
    assert status.drives == (mtx.Element(0, True, "A00009L8", None),
                             mtx.Element(1, True, "", 2))
    assert status.slot(1).tag == "A00001L8"
    assert status.slot(3) == mtx.Element(3, True, "", import_export=True)
    settings = mtx.status_settings(status, datetime.datetime.now(datetime.UTC))
    assert "provisiond-set drive_status=0 Full unknown A00009L8" in settings
    assert "provisiond-set drive_status=1 Full 2" in settings
    assert "provisiond-set slots=3 Full import-export" in settings


@pytest.mark.parametrize("text, reason", [
    ("", "no 'Storage Changer' line"),
    (SAMPLE.replace("9 Slots", "8 Slots"), "the summary says 2 drives, 8 slots"),
    (SAMPLE.replace("( 1 Import", "( 0 Import"), "0 import/export; the lines show 2, 9, 1"),
    (SAMPLE + "mtx: Request Sense: Error Code=70 (Current)\n", "unexpected line"),
    (SAMPLE.replace("Storage Element 5:", "Storage Element 15:"), "the lines show"),
    (SAMPLE.replace("Element 1:Empty\n", "Element 1:Emptyish\n"), "unexpected line"),
])
def test_anything_unexpected_in_a_status_is_an_error(text: str, reason: str) -> None:
    with pytest.raises(mtx.MtxFailed, match=reason):
        mtx.parse_status(text)


def test_a_tag_outside_the_output_charset_is_left_out() -> None:
    status = mtx.parse_status(SAMPLE.replace("VolumeTag=A00002L6", "VolumeTag=A0 {x}"))
    assert status.slot(2) == mtx.Element(2, True, "")


# -- devices and drives -------------------------------------------------------------------------


@pytest.mark.parametrize("path, ok", [
    ("/dev/sg3", True), ("/dev/sg12", True), ("/dev/tape/by-id/scsi-XYZ", True),
    ("/dev/nst0", True), ("/dev/sga", False), ("/dev/sg", False), ("/dev/sda", False),
    ("/dev/tape/", False), ("/dev/tape/../sda", False), ("/dev/tape/./x", False),
    ("/dev/tape//x", False), ("dev/sg3", False), ("/dev/sg3;reboot", False),
    ("/dev/tape/by-id/a b", False), ("/dev/sg\u0663", False), ("/etc/shadow", False),
])
def test_devices_must_be_under_an_allowed_prefix(path: str, ok: bool) -> None:
    problem = mtx.device_problem(path, ["/dev/tape/", "/dev/sg", "/dev/nst"])
    assert (problem is None) == ok, problem


@pytest.mark.parametrize("drives, reason", [
    ("0 /dev/nst0,0 /dev/nst1", "drive index 0 is given twice"),
    ("0 /dev/nst0,1 /dev/nst0", "device /dev/nst0 is given twice"),
    ("0 /dev/sda", "not under the allowed device prefixes"),
    ("0  /dev/nst0", "is not 'INDEX DEVICE'"),
    ("00 /dev/nst0", "is not 'INDEX DEVICE'"),
    ("100 /dev/nst0", "is not 'INDEX DEVICE'"),
    ("-1 /dev/nst0", "is not 'INDEX DEVICE'"),
    ("0 /dev/nst0 extra", "is not 'INDEX DEVICE'"),
    ("0 /dev/tape/../../etc/passwd", "not an absolute normalized path"),
    ("", "has no provisiondDrive"),
])
def test_drive_lines_are_parsed_strictly(drives: str, reason: str) -> None:
    with pytest.raises(mtx.Invalid, match=reason):
        mtx.parse_drives(drives, ["/dev/tape/", "/dev/nst"])


def test_good_drive_lines_give_index_to_device() -> None:
    assert mtx.parse_drives("1 /dev/nst1,0 /dev/tape/by-id/a-nst", ["/dev/tape/", "/dev/nst"]) \
        == {1: "/dev/nst1", 0: "/dev/tape/by-id/a-nst"}


# -- what a request means in a state ------------------------------------------------------------


def decide(action: str, slot: int | None = None, drive: int | None = None,
           target: int | None = None, text: str = SAMPLE, drives: dict[int, str] = DRIVES,
           record: dict[str, Any] | None = None) -> Any:
    return mtx.decide(mtx.Request(action, slot, drive, target), drives, mtx.parse_status(text),
                      record)


def test_moves_that_fit_become_mtx_commands() -> None:
    assert decide("load", 2, 1).argv == ("load", "2", "1")
    assert decide("load", 2, 1).message == "loaded slot 2 (A00002L6) into drive 1"
    assert decide("unload", drive=0).argv == ("unload", "1", "0")  # back where it came from
    assert decide("unload", drive=0, target=9).argv == ("unload", "9", "0")  # import/export
    assert decide("transfer", 2, target=5).argv == ("transfer", "2", "5")
    assert decide("inventory").argv == () and decide("status").argv == ()


def test_states_already_reached_need_nothing() -> None:
    assert decide("load", 1, 0).argv == ()  # drive 0 holds slot 1: nothing to do
    assert "already holds slot 1" in decide("load", 1, 0).message
    assert decide("unload", drive=1).argv == ()  # drive 1 is empty
    done = SAMPLE.replace("Element 2:Full :VolumeTag=A00002L6", "Element 2:Empty").replace(
        "Element 5:Empty", "Element 5:Full :VolumeTag=A00002L6")
    record = {"action": "transfer", "slot": 2, "target": 5, "tag": "A00002L6"}
    assert decide("transfer", 2, target=5, text=done, record=record).argv == ()


@pytest.mark.parametrize("request_, reason", [
    (("load", 99, 1), "slot 99 is outside the library \\(slots 1-9\\)"),
    (("load", 2, 7), "drive index 7 is not one of the library's drives"),
    (("load", 2, 0), "drive 0 is full \\(A00001L6, from slot 1\\): unload it first"),
    (("load", 3, 1), "slot 3 is empty: nothing to load"),
    (("load", None, 1), "needs provisiondSlot"),
    (("load", 2, None), "needs provisiondDriveIndex"),
    (("load", 2, 1, 5), "load takes no target"),
    (("unload", None, 0, 2), "slot 2 is full"),
    (("unload", None, 0, 10), "slot 10 is outside the library"),
    (("unload", 3, 0), "unload takes no slot"),
    (("transfer", 3, None, 5), "slot 3 is empty: nothing to transfer"),
    (("transfer", 2, None, 2), "to itself"),
    (("transfer", 2, None, None), "needs provisiondTargetSlot"),
    (("inventory", 1), "inventory takes no slot"),
])
def test_requests_that_do_not_fit_are_refused(request_: tuple[Any, ...], reason: str) -> None:
    with pytest.raises(mtx.Invalid, match=reason):
        decide(*request_)


def test_a_transfer_found_done_without_its_record_is_refused() -> None:
    """An empty source and a full destination may be anybody's doing: only this operation's
    record (written before it moved) with the same tag makes it a success."""
    done = SAMPLE.replace("Element 2:Full :VolumeTag=A00002L6", "Element 2:Empty").replace(
        "Element 5:Empty", "Element 5:Full :VolumeTag=A00002L6")
    with pytest.raises(mtx.Invalid, match="slot 2 is empty"):
        decide("transfer", 2, target=5, text=done)
    other = {"action": "transfer", "slot": 2, "target": 5, "tag": "B00001L6"}
    with pytest.raises(mtx.Invalid, match="slot 2 is empty"):
        decide("transfer", 2, target=5, text=done, record=other)


def test_a_drive_in_the_entry_but_not_in_the_changer_is_refused() -> None:
    with pytest.raises(mtx.Invalid, match="drive 2 is not in the library"):
        decide("load", 2, 2, drives={0: "/dev/nst0", 2: "/dev/nst2"})


def test_mtx_words_for_already_there() -> None:
    load = mtx.Request("load", 3, 0)
    assert mtx.already_there(load, "mtx: Drive 0 Full (Storage Element 3 loaded)\n")
    assert not mtx.already_there(load, "mtx: Drive 0 Full (Storage Element 1 loaded)\n")
    unload = mtx.Request("unload", None, 0, 3)
    assert mtx.already_there(unload, "mtx: Storage Element 3 is Already Full\n")
    assert mtx.already_there(unload, "mtx: Data Transfer Element 0 is Empty\n")
    assert not mtx.already_there(unload, "mtx: Data Transfer Element 1 is Empty\n")


# -- the hook as a process against the fake mtx -------------------------------------------------


def hook(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(TAPE_MTX), *args], capture_output=True, text=True,
                          timeout=timeout, check=False, env={"PATH": "/usr/bin:/bin"})


def options(library: Path, **more: str) -> list[str]:
    given = {"mtx": str(FAKE_MTX), "changer": str(library), "prefixes": f"{library.parent}/",
             "drives": f"0 {library.parent}/nst0,1 {library.parent}/nst1",
             "id": "0f0e0d0c-1111-2222-3333-444455556666",
             "state-dir": str(library.parent / "state"), "retry-delay": "0", **more}
    return [f"--{name}={value}" for name, value in given.items()]


@pytest.fixture
def changer(tmp_path: Path) -> Path:
    path = tmp_path / "sg3"
    path.write_text(__import__("json").dumps(library_state(
        ["A00001L8", "A00002L8", "", "", "ie:"], ["", ""])))
    return path


def settings(result: subprocess.CompletedProcess[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        if line.startswith("provisiond-set "):
            name, _, value = line.removeprefix("provisiond-set ").partition("=")
            found.setdefault(name, []).append(value)
    return found


def test_a_load_moves_and_reports_the_library_and_what_moved(changer: Path) -> None:
    result = hook("move", "--action=load", "--slot=2", "--drive=1", *options(changer))
    assert result.returncode == 0, result.stderr
    out = settings(result)
    assert out["moved"] == ["loaded slot 2 (A00002L8) into drive 1"]
    assert out["drive_status"] == ["0 Empty", "1 Full 2 A00002L8"]
    assert out["slots"][:3] == ["1 Full A00001L8", "2 Empty", "3 Empty"]
    assert moves(changer) == ["load 2 1"]


def test_a_transient_sense_is_tried_again_like_bacula(changer: Path) -> None:
    set_state(changer, sense={"load": 2})
    result = hook("move", "--action=load", "--slot=1", "--drive=0", *options(changer))
    assert result.returncode == 0, result.stderr
    assert moves(changer) == ["load 1 0"] * 3
    assert "SCSI sense" in result.stderr and "try 3 of 5" in result.stderr


def test_a_move_that_happened_despite_its_sense_is_a_success(changer: Path) -> None:
    """The retry's mtx says "Drive 0 Full (Storage Element 1 loaded)": already there."""
    set_state(changer, sense_after={"load": 1})
    result = hook("move", "--action=load", "--slot=1", "--drive=0", *options(changer))
    assert result.returncode == 0, result.stderr
    assert moves(changer) == ["load 1 0", "load 1 0"]
    assert "mtx says it is already so" in result.stderr
    assert settings(result)["moved"] == ["loaded slot 1 (A00001L8) into drive 0"]


def test_a_failed_move_still_reports_the_library_and_says_why(changer: Path) -> None:
    set_state(changer, sense={"load": 9})
    result = hook("move", "--action=load", "--slot=1", "--drive=0", *options(changer))
    assert result.returncode == 69
    assert moves(changer) == ["load 1 0"] * 5  # 5 tries, as Bacula's mtx-changer
    out = settings(result)
    assert "moved" not in out and out["drive_status"] == ["0 Empty", "1 Empty"]
    last = result.stderr.strip().splitlines()[-1]
    assert "mtx load 1 0 failed (after 5 tries)" in last
    assert "MOVE MEDIUM from Element Address 4096 to 256 Failed" in last


def test_a_hard_error_is_not_tried_again(changer: Path) -> None:
    state = state_of(changer)
    state["drives"][0] = {"full": True, "source": 3, "tag": "X"}  # the check said empty
    result = hook("move", "--action=unload", "--drive=1", *options(changer))
    assert result.returncode == 0  # drive 1 is empty: nothing to do
    changer.write_text(__import__("json").dumps(state))
    result = hook("move", "--action=load", "--slot=2", "--drive=0", *options(changer))
    assert result.returncode == 65 and moves(changer) == []
    assert "refused, nothing moved: drive 0 is full" in result.stderr


def test_each_action_has_its_own_timeout(changer: Path) -> None:
    set_state(changer, delay=3, moves_at="end")
    started = time.monotonic()
    result = hook("move", "--action=load", "--slot=1", "--drive=0", "--timeout=0.5",
                  *options(changer))
    assert result.returncode == 69
    assert time.monotonic() - started < 2.5
    assert "mtx load 1 0 timed out after 0.5s" in result.stderr
    assert [c.rc for c in calls(changer) if c.argv[0] == "load"] == [None]  # killed


def test_a_hostile_changer_is_refused_before_mtx_runs(changer: Path) -> None:
    for bad in ("/dev/sda", f"{changer.parent}/../sg3", f"{changer}\n", "sg3"):
        result = hook("move", "--action=load", "--slot=1", "--drive=0",
                      *options(changer, changer=bad))
        assert result.returncode == 65, (bad, result)
        assert "refused, nothing moved: provisiondChangerDevice" in result.stderr
    assert calls(changer) == []


def test_check_library_validates_without_touching_the_changer(changer: Path) -> None:
    good = hook("check-library", f"--changer={changer}", f"--prefixes={changer.parent}/",
                f"--drives=0 {changer.parent}/nst0")
    assert good.returncode == 0, good.stderr
    bad = hook("check-library", f"--changer={changer}", f"--prefixes={changer.parent}/",
               "--drives=0 /dev/nst0")
    assert bad.returncode == 65 and "not under the allowed device prefixes" in bad.stderr
    assert calls(changer) == []


def test_bacula_sd_in_use_means_wait(tmp_path: Path) -> None:
    """A real TCP connection to the port stands for a job on bacula-sd; ss is real."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        args = ("sd-check", "--ss=/usr/bin/ss", f"--port={port}", "--library=lib1")
        assert hook(*args).returncode == 0  # listening, nobody connected: free
        assert hook("sd-check", "--port=0").returncode == 0  # no bacula-sd here
        with socket.create_connection(("127.0.0.1", port)):
            accepted, _ = server.accept()
            busy = hook(*args)
            accepted.close()
    assert busy.returncode == 75
    assert f"bacula-sd is in use (1 connection on port {port}: a job or a console): library " \
        "lib1 waits" in busy.stderr
    broken = hook("sd-check", f"--ss={tmp_path}/none", f"--port={port}", "--library=lib1")
    assert broken.returncode == 1 and "cannot ask" in broken.stderr


def test_usage_errors_exit_64() -> None:
    assert hook("frobnicate").returncode == 64
    assert hook("move", "--slot=x").returncode == 64
