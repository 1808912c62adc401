"""What a hook that exits by itself leaves running is reported (`hook-left-running`) and left
alone, and finding that out is cheap when it left nothing: no scan of every pid in /proc."""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

import psutil
import pytest

from provisiond.host.hooks import run_hook
from tests.host.test_hooks import ENV, cleanup, dead, read_pids, script, sh  # noqa: F401 - fixture

QUIET = "</dev/null >/dev/null 2>&1"  # off the hook's pipes: not a stray, never killed


def left_running(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The `pids=` of every hook-left-running line."""
    return [record.getMessage().rpartition("pids=")[2] for record in caplog.records
            if "event=hook-left-running" in record.getMessage()]


def run_and_collect(hook: str, pids: Path, cleanup: list[int],  # noqa: F811
                    caplog: pytest.LogCaptureFixture, in_thread: bool = False) -> int:
    """Run `hook` (in another thread than the main one: as the daemon's workers do) and
    return the pid it wrote to `pids`, alive."""
    results = []
    with caplog.at_level(logging.INFO, logger="provisiond"):
        def run() -> None:
            results.append(run_hook([hook], env=ENV, timeout=10, kill_grace=0.5))
        if in_thread:
            thread = threading.Thread(target=run)
            thread.start()
            thread.join()
        else:
            run()
    [result] = results
    pid = read_pids(pids, 1)[0]
    cleanup.append(pid)
    assert result.returncode == 0 and not result.timed_out
    assert not dead(pid)  # reported, not killed
    return pid


def test_clean_exit_with_nothing_left_does_not_scan_proc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    run_hook(["/bin/true"], env=ENV, timeout=5)  # become the subreaper first
    scans = []
    real_pids = psutil.pids
    monkeypatch.setattr(psutil, "pids", lambda: scans.append(1) or real_pids())
    with caplog.at_level(logging.INFO, logger="provisiond"):
        for hook in (["/bin/true"], [sh(tmp_path, "echo out; true | cat\n")]):
            assert run_hook(hook, env=ENV, timeout=5).returncode == 0
    assert scans == []
    assert left_running(caplog) == []


def leftover(tmp_path: Path, how: str, pids: Path) -> str:
    """A shell line starting a process that stays: it writes its pid to `pids` once set up
    (`how`: `setsid` leaves the group; `env -i` drops the hook's token), off the hook's pipes;
    the hook waits for that, so each test sees the process as it will stay."""
    program = script(tmp_path, "leftover", f"#!{sys.executable} -I\nimport os, sys, time\n"
                     "if sys.argv[2] == 'setsid':\n    os.setsid()\n"
                     "with open(sys.argv[1], 'w') as out:\n    out.write(str(os.getpid()))\n"
                     "time.sleep(300)\n")
    setsid = "setsid" if "setsid" in how else "stay"
    clear = "env -i " if "env -i" in how else ""
    return f"{clear}{program} {pids} {setsid} {QUIET} &\nwhile [ ! -s {pids} ]; do sleep 0.01; done\n"


def test_child_left_in_the_group_is_reported(
    tmp_path: Path, cleanup: list[int], caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    # in the hook's group, adopted by us without the hook's token: only the group finds it
    pids = tmp_path / "pids"
    hook = sh(tmp_path, leftover(tmp_path, "env -i", pids))
    pid = run_and_collect(hook, pids, cleanup, caplog)
    assert left_running(caplog) == [str(pid)]


def test_grandchild_left_in_the_group_is_reported(
    tmp_path: Path, cleanup: list[int], caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    pids = tmp_path / "pids"
    inner = sh(tmp_path, leftover(tmp_path, "env -i", pids), "inner")
    hook = sh(tmp_path, f"{inner}\n")  # the grandchild's parent has exited before the hook
    pid = run_and_collect(hook, pids, cleanup, caplog)
    assert left_running(caplog) == [str(pid)]


@pytest.mark.parametrize("in_thread", [False, True], ids=["main-thread", "worker-thread"])
def test_adopted_child_out_of_the_group_is_reported(
    tmp_path: Path, cleanup: list[int], caplog: pytest.LogCaptureFixture,  # noqa: F811
    in_thread: bool,
) -> None:
    # its own session, orphaned: found only as an adopted child carrying the hook's token
    pids = tmp_path / "pids"
    hook = sh(tmp_path, leftover(tmp_path, "setsid", pids))
    pid = run_and_collect(hook, pids, cleanup, caplog, in_thread)
    assert left_running(caplog) == [str(pid)]


def test_tracked_descendant_is_reported(
    tmp_path: Path, cleanup: list[int], caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    # its own session and no token: only the looks at the tree while the hook ran find it
    pids = tmp_path / "pids"
    hook = sh(tmp_path, leftover(tmp_path, "setsid env -i", pids) + "sleep 0.5\n")
    pid = run_and_collect(hook, pids, cleanup, caplog)
    assert left_running(caplog) == [str(pid)]
