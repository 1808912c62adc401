"""What the benchmark runs on: a private slapd, the daemon as a subprocess, a syslog socket that
timestamps the daemon's own events, and cleanup.

The daemon logs every outcome to syslog (`event=claimed ... dn=...`, `event=added ...`). The
benchmark points `logging.syslog_address` at its own AF_UNIX datagram socket and stamps each
datagram with `time.monotonic()` on arrival: that is how it learns, without adding any LDAP
traffic or polling, when the daemon finished an entry.

The daemon logs as it does under its systemd unit: to syslog only. Under systemd its stderr is
the journal, and `JOURNAL_STREAM` names that stream's device and inode; the daemon then leaves
stderr alone, since syslog reaches the journal already (`process/notify.stderr_is_journal`).
The benchmark sets `JOURNAL_STREAM` to its log file's device and inode, which takes the same
code path; the file then only gets what bypasses logging (a traceback, a warning).
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import psutil

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import ldap3

from bench.workload import directory_ldif
from provisiond.testing.slapd import Slapd

REPO = Path(__file__).resolve().parents[1]
# Events that make a figure meaningless: the run stops with them. (`disconnected` is not one:
# stream reconnects are counted and reported, since they are part of what the daemon costs.)
PROBLEM_EVENTS = ("failed", "step-failed", "internal-error", "retry", "claim-failed",
                  "report-failed", "report-retry", "hook-timeout")
# What a service manager hands its services: the daemon must not talk to the benchmark's own.
MANAGER_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM",
                     "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")

warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"pyasn1\..*")


class BenchError(Exception):
    """The benchmark cannot produce a trustworthy figure (the message says why)."""


# -- cleanup ------------------------------------------------------------------------------------


class Cleanup:
    """Callbacks run once, last in first out: from `finally`, atexit, or a signal."""

    def __init__(self) -> None:
        self._callbacks: list[tuple[str, Callable[[], Any]]] = []
        self._lock = threading.Lock()

    def add(self, what: str, callback: Callable[[], Any]) -> None:
        with self._lock:
            self._callbacks.append((what, callback))

    def run(self) -> None:
        while True:
            with self._lock:
                if not self._callbacks:
                    return
                what, callback = self._callbacks.pop()
            try:
                callback()
            except Exception as exc:  # noqa: BLE001 - keep cleaning up the rest
                print(f"bench: cleanup of {what} failed: {exc}", file=sys.stderr)

    def install(self) -> None:
        atexit.register(self.run)

        def on_signal(signum: int, frame: object) -> None:
            del frame
            raise SystemExit(128 + signum)  # unwinds through every `finally`

        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, on_signal)


# -- the directory ------------------------------------------------------------------------------


def start_slapd(directory: Path, pending: Mapping[str, Iterable[str]],
                provisioned: Mapping[str, Iterable[str]], cleanup: Cleanup) -> Slapd:
    """A private slapd with the project schema and the entries of `workload.directory_ldif`,
    loaded with slapadd before slapd starts. This is `start_private_slapd` spelled out, so
    that the stop is registered before the start."""
    directory.mkdir(parents=True, exist_ok=True)
    server = Slapd(directory=directory)
    cleanup.add("slapd", server.stop)
    server.create(directory_ldif(pending, provisioned))
    server.start()
    return server


def connect_to(uri: str, bind_dn: str, password: str) -> ldap3.Connection:
    return ldap3.Connection(
        ldap3.Server(uri, get_info=ldap3.NONE, connect_timeout=5), bind_dn, password,
        auto_bind=True, raise_exceptions=False, receive_timeout=10)


def connect(server: Slapd) -> ldap3.Connection:
    return connect_to(server.uri, server.root_dn, server.root_password)


def count(conn: ldap3.Connection, base: str, search_filter: str) -> int:
    conn.search(base, search_filter, search_scope=ldap3.LEVEL, attributes=["1.1"],
                dereference_aliases=ldap3.DEREF_NEVER, paged_size=None)
    if conn.result["result"] not in (0, 4):
        raise BenchError(f"search under {base} failed: {conn.result}")
    return sum(1 for r in conn.response or [] if r.get("type") == "searchResEntry")


def slapd_version() -> str:
    try:
        result = subprocess.run(["/usr/sbin/slapd", "-VV"], capture_output=True, text=True,
                                timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    match = re.search(r"slapd (\S+)", result.stderr + result.stdout)
    return match.group(1) if match else "unknown"


# -- the daemon's events ------------------------------------------------------------------------

_LINE = re.compile(rb"^<\d+>[^\[\]:]*\[(\d+)\]: (?:event=(\S+)(.*))?", re.S)
_DN = re.compile(r"(?:^| )dn=(\S+)")
Record = tuple[float, str | None, str]  # arrival time, dn (lowercased) or None, the rest


class SyslogCapture:
    """An AF_UNIX datagram socket standing in for /dev/log; every `event=` line is kept as
    (arrival time, dn, text) per (pid, event), every line as it came per pid."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.settimeout(0.2)
        self._lock = threading.Lock()
        self._events: dict[tuple[int, str], list[Record]] = defaultdict(list)
        self._lines: dict[int, list[bytes]] = defaultdict(list)
        self._first: dict[tuple[int, str], Callable[[], None]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="syslog", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            arrived = time.monotonic()
            line = data.rstrip(b"\0\n")
            match = _LINE.match(line)
            if not match:
                continue
            pid = int(match.group(1))
            if match.group(2) is None:
                with self._lock:
                    self._lines[pid].append(line)
                continue
            event = match.group(2).decode()
            callback = self._first.pop((pid, event), None)
            if callback is not None:  # on this thread, microseconds after the daemon logged
                try:
                    callback()
                except Exception as exc:  # noqa: BLE001 - the reader must go on
                    print(f"bench: on {event} from {pid}: {exc!r}", file=sys.stderr)
            rest = match.group(3).decode(errors="replace")
            dn = _DN.search(rest)
            record = (arrived, dn.group(1).lower() if dn else None, rest)
            with self._lock:
                self._events[(pid, event)].append(record)
                self._lines[pid].append(line)

    def on_first(self, pid: int, event: str, callback: Callable[[], None]) -> None:
        """Call `callback` on the reader thread as soon as `pid`'s first `event` arrives
        (register it before the daemon can log it)."""
        self._first[(pid, event)] = callback

    def events(self, pid: int, event: str) -> list[Record]:
        with self._lock:
            return list(self._events.get((pid, event), ()))

    def count(self, pid: int, event: str) -> int:
        with self._lock:
            return len(self._events.get((pid, event), ()))

    def lines(self, pid: int) -> list[bytes]:
        with self._lock:
            return list(self._lines.get(pid, ()))

    def problems(self, pid: int) -> list[str]:
        with self._lock:
            return [f"event={name}{record[2]}" for name in PROBLEM_EVENTS
                    for record in self._events.get((pid, name), ())]

    def wait(self, pid: int, event: str, number: int, timeout: float,
             alive: Callable[[], bool] | None = None, what: str = "") -> None:
        """Until `number` `event`s from `pid`; BenchError on a timeout, a problem event or
        the daemon exiting."""
        deadline = time.monotonic() + timeout
        while self.count(pid, event) < number:
            problems = self.problems(pid)
            if problems:
                raise BenchError(f"{what or event}: the daemon reported trouble: "
                                 + " | ".join(problems[:3]))
            if alive is not None and not alive():
                raise BenchError(f"{what or event}: the daemon exited")
            if time.monotonic() > deadline:
                raise BenchError(f"{what or event}: timed out after {timeout:g}s with "
                                 f"{self.count(pid, event)} of {number} `{event}` events")
            time.sleep(0.01)

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(timeout=2)


# -- the daemon process -------------------------------------------------------------------------


class Daemon:
    """`python -m provisiond --config CONFIG run` in the foreground, as its systemd unit runs
    it: logging to syslog only (see the module doc)."""

    def __init__(self, config: Path, log: Path, capture: SyslogCapture,
                 cleanup: Cleanup) -> None:
        env = {key: value for key, value in os.environ.items() if key not in MANAGER_VARIABLES}
        env["PYTHONPATH"] = str(REPO)
        self.log = log
        self.capture = capture
        with open(log, "ab") as out:
            info = os.fstat(out.fileno())
            env["JOURNAL_STREAM"] = f"{info.st_dev}:{info.st_ino}"
            self.process = subprocess.Popen(
                [sys.executable, "-m", "provisiond", "--config", str(config), "run"],
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=str(REPO))
        self.spawned = time.monotonic()
        self.pid = self.process.pid
        self.ps = psutil.Process(self.pid)
        cleanup.add(f"daemon {self.pid}", self.stop)

    def alive(self) -> bool:
        return self.process.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU seconds (psutil; the kernel counts them in 10 ms ticks)."""
        times = self.ps.cpu_times()
        return times.user + times.system

    def cpu_ns(self) -> int | None:
        """CPU time of all its threads, live and ended, on the scheduler's nanosecond clock:
        clock_gettime of the process's CPU clock, the clockid clock_getcpuclockid(3) would
        give (Linux: ((~pid) << 3) | CPUCLOCK_SCHED). None where that is not available."""
        try:
            return time.clock_gettime_ns(((~self.pid) << 3) | 2)
        except OSError:
            return None

    def peak_rss_kib(self) -> int:
        """VmHWM: the kernel's high-water mark of this process's RSS (what ru_maxrss reports)."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        raise BenchError("no VmHWM in /proc/PID/status")

    def stop(self, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
                raise BenchError(f"the daemon did not stop within {timeout:g}s") from None
        return self.process.returncode

    def keep_syslog(self) -> None:
        """Write what the daemon sent to syslog beside its stderr file (`--keep` shows it)."""
        with open(self.log.with_name("syslog.log"), "wb") as out:
            out.writelines(line + b"\n" for line in self.capture.lines(self.pid))

    def stderr_records(self) -> list[str]:
        """Log records the daemon wrote to stderr: with syslog reachable there must be none."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if " event=" in line]

    def tail(self, lines: int = 15) -> str:
        try:
            stderr = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            stderr = []
        syslog = [line.decode(errors="replace")
                  for line in self.capture.lines(self.pid)[-lines:]]
        return "\n".join([*(["syslog:", *syslog] if syslog else []),
                          *(["stderr:", *stderr] if stderr else [])])


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
