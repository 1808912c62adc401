"""Keyed records in one append-only file (host/recordlog.py): what a reader finds after a
crash at any byte of an append, compaction, threads appending at once, and the take-over of
the one-file-per-key layout."""

from __future__ import annotations

import os
import re
import stat
import threading
from pathlib import Path

import pytest

from provisiond.host import recordlog
from provisiond.host.recordlog import RecordLog, encode_delete, encode_put, replay, shared

KEY = re.compile(r"k[0-9]+")


def reopen(log: RecordLog) -> RecordLog:
    """What the next daemon start reads (the writer is neither closed nor flushed)."""
    return RecordLog(log.path, legacy=log.legacy)


@pytest.fixture
def log(tmp_path: Path) -> RecordLog:
    return RecordLog(tmp_path / "state" / "svc" / "records.log", legacy=KEY)


def test_values_with_any_text_read_back_after_a_restart(log: RecordLog) -> None:
    values = {"k1": "line one\nline two\n", "k2": 'quote " brace { tab \t \\ ünïcode', "k3": ""}
    for key, value in values.items():
        log.put(key, value)
    assert dict(reopen(log).items()) == values
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600


def test_deletes_and_overwrites_replay_in_order(log: RecordLog) -> None:
    log.put("k1", "a")
    log.put("k2", "b")
    log.delete("k1")
    log.put("k2", "c")
    log.delete("k9")  # absent: nothing written
    log.put("k1", "d")
    assert dict(reopen(log).items()) == {"k1": "d", "k2": "c"}
    assert len(log.path.read_bytes().splitlines()) == 5


def test_a_crash_at_any_byte_of_an_append_loses_only_that_append(log: RecordLog) -> None:
    """Every prefix of the last line, as a crash can leave it: the earlier records read back
    whole, the torn one is absent, and what the restarted writer appends reads back too."""
    log.put("k1", "first")
    log.put("k2", "second\nwith a newline")
    before = log.path.read_bytes()
    log.put("k3", "torn {\"x\": 1}")
    line = log.path.read_bytes()[len(before):]
    for cut in range(len(line) - 1):  # the whole line without its newline is complete
        log.path.write_bytes(before + line[:cut])
        again = reopen(log)
        assert dict(again.items()) == {"k1": "first", "k2": "second\nwith a newline"}, cut
        again.put("k4", "after")
        assert dict(reopen(log).items())["k4"] == "after", cut


def test_a_tail_of_zeros_is_skipped_and_the_file_repaired(log: RecordLog) -> None:
    log.put("k1", "v")
    with open(log.path, "ab") as handle:
        handle.write(b"\0" * 600)  # a size extended before its data reached the disk
    again = reopen(log)
    assert dict(again.items()) == {"k1": "v"}
    again.put("k2", "w")
    assert dict(reopen(log).items()) == {"k1": "v", "k2": "w"}
    assert b"\0" not in log.path.read_bytes()


def test_lines_of_the_wrong_shape_are_skipped() -> None:
    data = b"".join([encode_put("k1", "v"), b'["put", "k2"]\n', b'["drop", "k1"]\n',
                     b'{"put": 1}\n', b'["put", 3, "x"]\n', encode_put("k3", "w")])
    assert replay(data) == ({"k1": "v", "k3": "w"}, 6, 4)


def test_the_file_is_compacted_once_it_holds_many_more_lines_than_records(
        log: RecordLog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recordlog, "COMPACT_SLACK", 10)
    log.put("keep", "me")
    for number in range(200):
        log.put(f"k{number}", "x" * 50)
        log.delete(f"k{number}")
    lines = log.path.read_bytes().splitlines()
    assert len(lines) <= 2 * 1 + 10 + 1
    assert dict(reopen(log).items()) == {"keep": "me"}
    log.put("k1", "after")  # appends go on in the new file
    assert dict(reopen(log).items()) == {"keep": "me", "k1": "after"}
    assert not [p for p in log.path.parent.iterdir() if p.name.endswith(".tmp")]


def test_threads_appending_at_once_never_mix_their_lines(log: RecordLog) -> None:
    def write(thread: int) -> None:
        for number in range(200):
            log.put(f"k{thread}{number:04d}", f"value {thread} {number}\n" * 3,
                    durable=number % 10 == 0)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records, lines, damaged = replay(log.path.read_bytes())
    assert damaged == 0 and lines == len(records) == 800
    assert records == dict(log.items())


def test_the_one_file_per_key_layout_is_taken_over_then_removed(tmp_path: Path) -> None:
    directory = tmp_path / "svc"
    directory.mkdir()
    (directory / "k1").write_text("old one")
    (directory / "k2").write_text("old two")
    (directory / ".k3.123.abc.tmp").write_text("a temp file")
    (directory / "k4").write_bytes(b"\xff\xfe")  # unreadable: skipped, left for inspection
    log = RecordLog(directory / "records.log", legacy=KEY)
    log.put("k2", "new two")  # first use: the take-over happens before this put
    assert dict(log.items()) == {"k1": "old one", "k2": "new two"}
    assert sorted(p.name for p in directory.iterdir()) == [".k3.123.abc.tmp", "k4",
                                                           "records.log"]
    assert dict(reopen(log).items()) == {"k1": "old one", "k2": "new two"}


def test_a_record_already_in_the_log_wins_over_an_old_file(tmp_path: Path) -> None:
    """A crash after the take-over was made durable, before the old file was removed."""
    directory = tmp_path / "svc"
    directory.mkdir()
    (directory / "records.log").write_bytes(encode_put("k1", "logged") + encode_delete("k2"))
    (directory / "k1").write_text("stale")
    assert dict(RecordLog(directory / "records.log", legacy=KEY).items()) == {"k1": "logged"}
    assert not (directory / "k1").exists()


def test_nothing_is_created_until_something_is_written(tmp_path: Path) -> None:
    log = RecordLog(tmp_path / "a" / "b" / "records.log")
    assert log.items() == [] and log.get("k1") is None and "k1" not in log
    log.delete("k1")
    assert not (tmp_path / "a").exists()


def test_a_symlink_in_place_of_the_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("")
    (tmp_path / "svc").mkdir()
    os.symlink(target, tmp_path / "svc" / "records.log")
    with pytest.raises(OSError):
        RecordLog(tmp_path / "svc" / "records.log").put("k1", "v")
    assert target.read_text() == ""


def test_one_process_has_one_log_per_file_closed_when_unused(tmp_path: Path) -> None:
    """`shared` gives every user of a file the same log (a reload's old and new engine), and
    its descriptor is closed once nobody holds it: a reload leaks none."""
    import gc

    first = shared(tmp_path / "svc" / "records.log")
    assert shared(tmp_path / "svc" / ".." / "svc" / "records.log") is first
    first.put("k1", "v")
    fds = {name for name in os.listdir("/proc/self/fd")
           if os.path.realpath(f"/proc/self/fd/{name}") == str(first.path)}
    assert len(fds) == 1
    del first
    gc.collect()
    assert not [name for name in os.listdir("/proc/self/fd")
                if os.path.realpath(f"/proc/self/fd/{name}") == str(tmp_path / "svc" / "records.log")]
    assert shared(tmp_path / "svc" / "records.log").get("k1") == "v"  # read afresh
