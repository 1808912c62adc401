"""Hooks run as real processes: exit codes, settings, a clean environment, and no survivors."""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from provisiond.host.hooks import (
    EXIT_RETRY,
    STANDARD_PATH,
    HookError,
    hook_environment,
    resolve_program,
    run_hook,
)
from tests.support import REPO

ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


def script(directory: Path, name: str, body: str, mode: int = 0o755) -> Path:
    path = directory / name
    path.write_text(body)
    path.chmod(mode)
    return path


def sh(directory: Path, body: str, name: str = "hook") -> str:
    return str(script(directory, name, "#!/bin/sh\n" + body))


def dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_dead(pids: list[int], within: float = 2.0) -> list[int]:
    """The pids still alive (and not zombies) after up to `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and not all(map(dead, pids)):
        time.sleep(0.02)
    return [pid for pid in pids if not dead(pid)]


def read_pids(path: Path, count: int, within: float = 2.0) -> list[int]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        pids = [int(p) for p in path.read_text().split()] if path.exists() else []
        if len(pids) >= count:
            return pids
        time.sleep(0.02)
    raise AssertionError(f"expected {count} pids in {path}")


@pytest.fixture
def cleanup() -> Iterator[list[int]]:
    """Pids to SIGKILL after the test, whatever happened."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass


@pytest.mark.parametrize("code", [0, 1, EXIT_RETRY])
def test_exit_code_is_passed_through(tmp_path: Path, code: int) -> None:
    hook = sh(tmp_path, f"echo out; echo err >&2; exit {code}\n")
    result = run_hook([hook, "arg"], env=ENV, timeout=5)
    assert result.returncode == code
    assert not result.timed_out and result.settings_lost == ""
    assert result.argv == (hook, "arg")
    assert "out\n" in result.output_tail and "err\n" in result.output_tail
    assert 0 <= result.duration_ms < 5000


def test_killed_by_signal_is_negative(tmp_path: Path) -> None:
    result = run_hook([sh(tmp_path, "kill -9 $$\n")], env=ENV, timeout=5)
    assert result.returncode == -signal.SIGKILL and not result.timed_out


def test_settings_come_from_stdout_only(tmp_path: Path) -> None:
    hook = sh(
        tmp_path,
        "echo 'provisiond-set size=10G'\n"
        "echo 'provisiond-set size=20G'\n"
        "echo 'provisiond-set note=a b=c  '\n"
        "echo 'provisiond-set Bad=1'\n"
        "echo ' provisiond-set indented=1'\n"
        "echo 'provisiond-set noequals'\n"
        "echo 'provisiond-set fromerr=1' >&2\n"
        "printf 'provisiond-set crlf=x\\r\\n'\n"
        "printf 'provisiond-set last=no-newline'\n",
    )
    result = run_hook([hook], env=ENV, timeout=5)
    assert dict(result.settings) == {
        "size": ("10G", "20G"),  # every value, in order: the step decides (steps/outputs.py)
        "note": ("a b=c  ",),
        "crlf": ("x",),
        "last": ("no-newline",),
    }
    assert "2 not NAME=VALUE, the first 'Bad=1'" in result.settings_lost


def test_environment_is_built_from_scratch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROVISIOND_BIND_PASSWORD", "hunter2-not-for-hooks")
    monkeypatch.setenv("LD_PRELOAD", "/nonexistent.so")
    env = hook_environment(
        search_path=[str(tmp_path)],
        service="demo",
        mode="add",
        dn="cn=a,ou=demo,dc=example,dc=org",
        uuid="0a0b",
        values={"size": "10G", "owner_name": "alice smith"},
    )
    dump = script(
        tmp_path,
        "dump",
        f"#!{sys.executable} -I\nimport os\n"
        "for k, v in sorted(os.environ.items()):\n    print(f'{k}={v}')\n",
    )
    result = run_hook([str(dump)], env=env, timeout=10)
    assert result.returncode == 0, result.output_tail
    seen = dict(line.split("=", 1) for line in result.output_tail.splitlines())
    assert re.fullmatch(r"[0-9a-f]{16}", seen.pop("PROVISIOND_HOOK_ID"))  # finds its orphans
    assert seen == {
        "PATH": ":".join([str(tmp_path), *STANDARD_PATH]),
        "LANG": "C.UTF-8",
        "PROVISIOND_SERVICE": "demo",
        "PROVISIOND_MODE": "add",
        "PROVISIOND_DN": "cn=a,ou=demo,dc=example,dc=org",
        "PROVISIOND_ENTRYUUID": "0a0b",
        "PROVISIOND_VALUE_SIZE": "10G",
        "PROVISIOND_VALUE_OWNER_NAME": "alice smith",
    }
    assert "hunter2-not-for-hooks" not in result.output_tail


@pytest.mark.parametrize("name", ["Size", "1st", "a-b", "", "_x", "ä"])
def test_environment_rejects_bad_value_names(name: str) -> None:
    with pytest.raises(ValueError, match="value name"):
        hook_environment(search_path=[], service="s", mode="m", dn="", uuid="", values={name: "1"})


def test_environment_rejects_relative_search_path() -> None:
    with pytest.raises(ValueError, match="absolute"):
        hook_environment(search_path=["hooks"], service="s", mode="", dn="", uuid="", values={})


def test_resolve_program(tmp_path: Path) -> None:
    good = script(tmp_path, "good", "#!/bin/sh\n")
    script(tmp_path, "plain", "#!/bin/sh\n", mode=0o644)
    other = tmp_path / "other"
    other.mkdir()
    assert resolve_program("good", [str(other), str(tmp_path)]) == str(good)
    assert resolve_program(str(good), []) == str(good)
    with pytest.raises(HookError, match="not found"):
        resolve_program("sh", [str(tmp_path)])  # /bin/sh exists, but $PATH is not searched
    with pytest.raises(HookError, match="not executable"):
        resolve_program("plain", [str(tmp_path)])
    with pytest.raises(HookError, match="not an executable file"):
        resolve_program(str(tmp_path / "plain"), [])
    with pytest.raises(HookError, match="No such file"):
        resolve_program(str(tmp_path / "missing"), [])
    with pytest.raises(HookError, match="absolute path or a bare name"):
        resolve_program("./good", [str(tmp_path)])


def test_cannot_execute_raises_hook_error(tmp_path: Path) -> None:
    plain = script(tmp_path, "plain", "#!/bin/sh\nexit 0\n", mode=0o644)
    with pytest.raises(HookError, match="Permission denied"):
        run_hook([str(plain)], env=ENV, timeout=5)
    with pytest.raises(HookError, match="No such file"):
        run_hook([str(tmp_path / "missing")], env=ENV, timeout=5)
    broken = script(tmp_path, "broken", "#!/nonexistent/interpreter\n")
    with pytest.raises(HookError, match="interpreter"):
        run_hook([str(broken)], env=ENV, timeout=5)
    with pytest.raises(HookError, match="absolute"):
        run_hook(["sh", "-c", "true"], env=ENV, timeout=5)


def test_timeout_kills_children_and_setsid_grandchildren(
    tmp_path: Path, cleanup: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    pids, orphan_pid = tmp_path / "pids", tmp_path / "orphan.pid"
    grandchild = script(
        tmp_path,
        "grandchild",
        f"#!{sys.executable} -I\nimport os, time\nos.setsid()\n"
        f"with open({str(orphan_pid)!r}, 'w') as f:\n    f.write(str(os.getpid()))\n"
        "time.sleep(300)\n",
    )
    # A setsid grandchild, detached from our pipe and out of the hook's process group: only
    # psutil's view of the process tree finds it. (One whose parent exits between two
    # periodic looks can still escape; under systemd, KillMode=mixed ends it on stop.
    # Testing that window would only test the scheduler's timing.)
    middle = sh(
        tmp_path,
        f"{grandchild} </dev/null >/dev/null 2>&1 &\n"
        f"while [ ! -s {orphan_pid} ]; do sleep 0.02; done\nsleep 300\n",
        "middle",
    )
    hook = sh(
        tmp_path,
        f"sleep 300 & echo $! >> {pids}\n"  # a child in the hook's process group
        f"{middle} &\n"
        # a setsid grandchild orphaned at once but holding stdout: found through the pipe
        f"sh -c 'setsid sleep 300 & echo $! >> {pids}' &\n"
        "echo started\n"
        "sleep 300\n",
    )
    with caplog.at_level(logging.WARNING, logger="provisiond"):
        result = run_hook([hook], env=ENV, timeout=1.0, kill_grace=0.5)
    survivors = [*read_pids(pids, 2), *read_pids(orphan_pid, 1)]
    cleanup.extend(survivors)
    assert result.timed_out and result.returncode is None
    assert "started" in result.output_tail
    assert 1000 <= result.duration_ms < 30000  # killed at the timeout, not after sleep 300
    assert wait_dead(survivors) == []
    assert "hook-timeout" in caplog.text


def test_sigterm_ignored_gets_sigkill(tmp_path: Path, cleanup: list[int]) -> None:
    pids = tmp_path / "pids"
    hook = sh(tmp_path, f"trap '' TERM\nsleep 300 & echo $! >> {pids}\nwhile :; do sleep 1; done\n")
    started = time.monotonic()
    result = run_hook([hook], env=ENV, timeout=0.5, kill_grace=0.3)
    cleanup.extend(read_pids(pids, 1))
    assert result.timed_out and result.returncode is None
    assert time.monotonic() - started < 30  # SIGKILL came; sleep 300 did not run out
    assert wait_dead(cleanup) == []


def test_output_flood_is_capped_without_hanging(tmp_path: Path) -> None:
    hook = sh(
        tmp_path,
        "echo 'provisiond-set early=1'\n"
        "yes | head -c 10000000\n"
        "echo 'provisiond-set late=1'\n"
        "echo done >&2\n",
    )
    # "without hanging": the hook ends by itself, well before the (generous) timeout
    result = run_hook([hook], env=ENV, timeout=120)
    assert result.returncode == 0 and not result.timed_out
    assert dict(result.settings) == {"early": ("1",), "late": ("1",)}  # all lines are inspected
    assert len(result.output_tail.encode()) <= 4096
    assert "done" in result.output_tail[-100:]


def test_utf8_tail(tmp_path: Path) -> None:
    hook = sh(tmp_path, "i=0; while [ $i -lt 2000 ]; do printf 'é'; i=$((i+1)); done\n")
    result = run_hook([hook], env=ENV, timeout=5)
    assert result.returncode == 0
    assert set(result.output_tail) == {"é"}  # the 4 KiB cut does not leave a broken character


def test_background_child_holding_stdout_is_killed_as_stray(
    tmp_path: Path, cleanup: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    pids = tmp_path / "pids"
    hook = sh(tmp_path, f"sleep 300 & echo $! > {pids}\necho 'provisiond-set ok=yes'\n")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="provisiond"):
        result = run_hook([hook], env=ENV, timeout=10, kill_grace=0.5)
    cleanup.extend(read_pids(pids, 1))
    assert result.returncode == 0 and not result.timed_out
    assert dict(result.settings) == {"ok": ("yes",)}
    assert time.monotonic() - started < 30  # the stray was killed, not waited for
    assert wait_dead(cleanup) == []
    assert "hook-stray" in caplog.text


def test_properly_detached_child_is_left_running(tmp_path: Path, cleanup: list[int]) -> None:
    pids = tmp_path / "pids"
    hook = sh(tmp_path, f"sleep 300 </dev/null >/dev/null 2>&1 & echo $! > {pids}\n")
    started = time.monotonic()
    result = run_hook([hook], env=ENV, timeout=10)
    cleanup.extend(read_pids(pids, 1))
    assert result.returncode == 0
    assert time.monotonic() - started < 30  # the detached child was not waited for
    assert not dead(cleanup[0])


def test_runs_in_own_session_with_stdin_devnull(tmp_path: Path) -> None:
    hook = str(
        script(
            tmp_path,
            "ids",
            f"#!{sys.executable} -I\nimport os, sys\n"
            "print(os.getsid(0) == os.getpid(), os.getpgid(0) == os.getpid())\n"
            "print(repr(sys.stdin.read()), os.getcwd())\n",
        )
    )
    result = run_hook([hook], env=ENV, timeout=10)
    assert result.output_tail == "True True\n'' /\n"


# Runs the hooks in a fresh interpreter: in the pytest process, threads left by earlier tests
# (an engine's stream reconnecting, a socket the garbage collector closes) open and close
# descriptors at any moment, and CI saw both ways once.
DESCRIPTOR_CHECK = """
import os, sys
from provisiond.host.hooks import HookError, run_hook

ok, failing, slow, missing = sys.argv[1:]
env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}

def descriptors():
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            found[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the directory listing's own descriptor, closed by now
            pass
    return found

run_hook([ok], env=env, timeout=5)  # the /dev/null kept for every hook is open from now on
before = descriptors()
for _ in range(20):
    run_hook([failing], env=env, timeout=5)
    try:
        run_hook([missing], env=env, timeout=5)
    except HookError:
        pass
    else:
        sys.exit("a missing program ran")
run_hook([slow], env=env, timeout=0.2, kill_grace=0.5)
after = descriptors()
print(sorted(f"{fd} {after[fd]}" for fd in after.keys() - before.keys()))
"""


def test_hooks_leave_no_descriptors_open(tmp_path: Path) -> None:
    """The output pipes, the exit pidfd and stdin's /dev/null: whatever a hook ran with is
    closed afterwards, whether it ran, failed, could not start or timed out (one /dev/null is
    kept for every hook)."""
    hooks = [sh(tmp_path, "echo out; echo err >&2\n", name="ok"),
             sh(tmp_path, "echo out; echo err >&2; exit 3\n", name="failing"),
             sh(tmp_path, "sleep 5\n", name="slow"), str(tmp_path / "missing")]
    result = subprocess.run([sys.executable, "-c", DESCRIPTOR_CHECK, *hooks], cwd=REPO,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n"  # no descriptor left open that was not before


def test_a_hooks_stdin_is_dev_null_on_every_run(tmp_path: Path) -> None:
    hook = sh(tmp_path, "cat; readlink /proc/self/fd/0\n")
    for _ in range(3):
        assert run_hook([hook], env=ENV, timeout=5).output_tail == "/dev/null\n"
