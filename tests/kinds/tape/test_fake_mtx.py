"""The fake mtx is faithful to what the notes measured of Debian's mtx 1.3.12
(shared/notes/targets.md "mtx"): the status text to the space, which stream each message
goes to, exit 1 for every error, partial output when a move fails, and one call at a time
per changer (the state file is locked)."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

from tests.kinds.tape.support import (
    FAKE_MTX,
    calls,
    library_state,
    no_two_at_once,
    set_state,
    state_of,
)
from tests.kinds.tape.test_tape_mtx import SAMPLE


def fake(changer: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(FAKE_MTX), "-f", str(changer), *args], capture_output=True,
                          text=True, timeout=30, check=False)


def sample(tmp_path: Path) -> Path:
    """The library of the notes' sample output, as /dev/sg3."""
    changer = tmp_path / "sg3"
    state = library_state(["", "A00002L6", "", "", "", "", "", "", "ie:"], ["1:A00001L6", ""])
    changer.write_text(json.dumps(state))
    return changer


def test_status_is_the_notes_sample_to_the_space(tmp_path: Path) -> None:
    changer = sample(tmp_path)
    result = fake(changer, "status")
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout == SAMPLE.replace("/dev/sg3", str(changer))


def test_real_libraries_pad_their_tags(tmp_path: Path) -> None:
    changer = sample(tmp_path)
    set_state(changer, pad=True)
    lines = fake(changer, "status").stdout.splitlines()
    assert lines[1] == "Data Transfer Element 0:Full (Storage Element 1 Loaded):VolumeTag = " \
        + "A00001L6".ljust(36)
    assert lines[4] == "      Storage Element 2:Full :VolumeTag=" + "A00002L6".ljust(36)


def test_moves_print_their_words_on_stdout(tmp_path: Path) -> None:
    changer = sample(tmp_path)
    load = fake(changer, "load", "2", "1")
    assert (load.returncode, load.stdout, load.stderr) == (
        0, "Loading media from Storage Element 2 into drive 1...done\n", "")
    unload = fake(changer, "unload", "3", "1")
    assert (unload.returncode, unload.stdout, unload.stderr) == (
        0, "Unloading drive 1 into Storage Element 3...done\n", "")
    transfer = fake(changer, "transfer", "3", "4")
    assert (transfer.returncode, transfer.stdout, transfer.stderr) == (0, "", "")
    assert state_of(changer)["slots"][3] == {"full": True, "tag": "A00002L6", "ie": False}


def test_every_error_is_argv0_colon_message_on_stderr_and_exit_1(tmp_path: Path) -> None:
    changer = sample(tmp_path)
    cases = {
        ("load", "1", "0"): "Drive 0 Full (Storage Element 1 loaded)",
        ("load", "99", "1"): "Invalid <storage-element-number> argument '99' to 'load' command",
        ("unload", "1", "1"): "Data Transfer Element 1 is Empty",
        ("unload", "2", "0"): "Storage Element 2 is Already Full",
        ("transfer", "4", "5"): "Source Element Address 4099 is Empty",
        ("transfer", "2", "2"): "Destination Element Address 4097 is Already Full",
    }
    for args, message in cases.items():
        result = fake(changer, *args)
        assert (result.returncode, result.stdout, result.stderr) == (
            1, "", f"{FAKE_MTX}: {message}\n"), args


def test_a_failed_load_leaves_its_first_words_on_stdout(tmp_path: Path) -> None:
    changer = sample(tmp_path)
    empty = fake(changer, "load", "3", "1")  # slot 3 is empty: the move itself fails
    assert empty.returncode == 1
    assert empty.stdout == "Loading media from Storage Element 3 into drive 1..."
    assert empty.stderr == f"{FAKE_MTX}: Source Element Address 4098 is Empty\n"
    set_state(changer, sense={"load": 1})
    sense = fake(changer, "load", "2", "1")
    assert sense.returncode == 1 and sense.stdout.endswith("into drive 1...")
    assert "Request Sense: Error Code=70 (Current)" in sense.stderr
    assert sense.stderr.splitlines()[-1] == \
        f"{FAKE_MTX}: MOVE MEDIUM from Element Address 4097 to 257 Failed"
    assert not state_of(changer)["drives"][1]["full"]  # nothing moved
    assert fake(changer, "load", "2", "1").returncode == 0  # the sense was transient


def test_commands_chain_and_a_missing_device_is_refused(tmp_path: Path) -> None:
    changer = sample(tmp_path)
    chained = fake(changer, "unload", "1", "0", "load", "2", "0", "status")
    assert chained.returncode == 0
    assert chained.stdout.splitlines()[:3] == [
        "Unloading drive 0 into Storage Element 1...done",
        "Loading media from Storage Element 2 into drive 0...done",
        f"  Storage Changer {changer}:2 Drives, 9 Slots ( 1 Import/Export )"]
    missing = fake(tmp_path / "sg9", "status")
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr == f"cannot open SCSI device '{tmp_path / 'sg9'}' - No such file or directory\n"


def test_calls_on_one_changer_never_overlap_and_are_logged(tmp_path: Path) -> None:
    changer = sample(tmp_path)
    set_state(changer, delay=0.3)
    threads = [threading.Thread(target=fake, args=(changer, *args)) for args in
               (("load", "2", "1"), ("transfer", "4", "5"), ("status",))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done = calls(changer)
    assert len(done) == 3
    no_two_at_once(changer)
    assert sorted(c.rc or 0 for c in done) == [0, 0, 1]  # slot 4 is empty: that transfer fails
