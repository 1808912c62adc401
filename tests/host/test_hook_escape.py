"""No hook descendant escapes the timeout kill: not even one that double-forks, calls setsid and
closes its standard file descriptors (it is out of the hook's group and off its pipes, and
orphaned before anyone could see it in the tree). The daemon is a child subreaper, so such a
process is adopted by the daemon instead of init, where it is found by its hook's token."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

from provisiond.host.hooks import run_hook
from provisiond.host.subreaper import ADOPTION
from tests.host.test_hooks import ENV, cleanup, read_pids, script, sh  # noqa: F401 - fixture

DAEMONISER = """\
import os, sys, time
if os.fork():
    os._exit(0)
os.setsid()
if os.fork():
    os._exit(0)
for fd in (0, 1, 2):
    os.close(fd)
with open(sys.argv[1], "a") as out:
    out.write(f"{os.getpid()}\\n")
time.sleep(300)
"""


def marked(mark: str) -> list[psutil.Process]:
    """Live processes (not zombies) whose environment carries TEST_MARK=mark."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get("TEST_MARK") == mark:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def gone_entirely(pid: int, within: float = 3.0) -> bool:
    """Dead and reaped: a zombie child would stay in the process table for ever."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.slow
def test_double_forking_daemon_is_killed_at_the_timeout(tmp_path: Path,
                                                        cleanup: list[int]) -> None:  # noqa: F811
    daemoniser = script(tmp_path, "daemonise", f"#!{sys.executable} -I\n{DAEMONISER}")
    escaped = []
    for loop in range(8):
        pids = tmp_path / f"pids{loop}"
        hook = sh(tmp_path, f"{daemoniser} {pids}\necho started\nsleep 300\n", f"hook{loop}")
        mark = uuid.uuid4().hex
        result = run_hook([hook], env={**ENV, "TEST_MARK": mark}, timeout=0.5, kill_grace=0.3)
        assert result.timed_out and "started" in result.output_tail
        daemon = read_pids(pids, 1)[0]
        cleanup.append(daemon)
        survivors = marked(mark)
        cleanup.extend(p.pid for p in survivors)
        if survivors or not gone_entirely(daemon):
            escaped.append((loop, daemon, [p.pid for p in survivors]))
    assert escaped == []


def test_the_daemon_is_a_child_subreaper(tmp_path: Path) -> None:
    # an orphan of a hook is adopted by this process, not by init
    pids = tmp_path / "pids"
    hook = sh(tmp_path, f"sh -c 'sleep 300 </dev/null >/dev/null 2>&1 & echo $! > {pids}'\n")
    run_hook([hook], env=ENV, timeout=5)
    orphan = read_pids(pids, 1)[0]
    try:
        assert psutil.Process(orphan).ppid() == os.getpid()
    finally:
        psutil.Process(orphan).kill()
    assert gone_entirely(orphan)  # and reaped once it dies


def test_adopted_processes_are_told_apart_by_hook(tmp_path: Path,
                                                  cleanup: list[int]) -> None:  # noqa: F811
    # Two hooks at once, both daemonising: the one that exits normally keeps its daemon (a
    # properly detached helper is left alone); the one that times out loses its own.
    daemoniser = script(tmp_path, "daemonise", f"#!{sys.executable} -I\n{DAEMONISER}")
    kept, killed = tmp_path / "kept", tmp_path / "killed"
    quick = sh(tmp_path, f"{daemoniser} {kept}\nsleep 1\n", "quick")
    slow = sh(tmp_path, f"{daemoniser} {killed}\nsleep 300\n", "slow")
    results = {}
    thread = threading.Thread(target=lambda: results.update(
        quick=run_hook([quick], env=ENV, timeout=30)))
    thread.start()
    results["slow"] = run_hook([slow], env=ENV, timeout=1.5, kill_grace=0.3)
    thread.join()
    helper, victim = read_pids(kept, 1)[0], read_pids(killed, 1)[0]
    cleanup.extend([helper, victim])
    assert results["quick"].returncode == 0 and results["slow"].timed_out
    assert gone_entirely(victim)
    assert psutil.Process(helper).status() != psutil.STATUS_ZOMBIE
    assert psutil.Process(helper).ppid() == os.getpid()  # adopted, alive


@pytest.mark.slow
def test_reaping_never_takes_an_exit_status(tmp_path: Path) -> None:
    # Sweeps as often as they can run, while hooks and other children exit with 7: each
    # status reaches the one waiting for it (a stolen one would read 0).
    run_hook([sh(tmp_path, "true\n")], env=ENV, timeout=5)  # become the subreaper
    stop = threading.Event()

    def sweeping() -> None:
        while not stop.is_set():
            ADOPTION.sweep()

    sweeper = threading.Thread(target=sweeping)
    sweeper.start()
    try:
        hook = sh(tmp_path, "(sleep 0.01 &)\nexit 7\n", "seven")  # and an orphan each time
        for number in range(40):
            done = subprocess.run(["/bin/sh", "-c", "exit 7"], check=False,
                                  start_new_session=bool(number % 2))
            assert done.returncode == 7
            assert run_hook([hook], env=ENV, timeout=10).returncode == 7
    finally:
        stop.set()
        sweeper.join()
