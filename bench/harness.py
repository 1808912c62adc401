"""What the benchmark runs on: a private slapd, a generated config, the daemon as a
subprocess, a syslog socket that timestamps the daemon's own events, and cleanup.

The daemon logs every outcome to syslog (`event=claimed ... dn=...`, `event=added ...`). The
benchmark points `logging.syslog_address` at its own AF_UNIX datagram socket and stamps each
datagram with `time.monotonic()` on arrival: that is how it learns, without adding any LDAP
traffic or polling, when the daemon finished an entry.
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
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psutil
import yaml

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import ldap3

from provisiond.testing.slapd import Slapd

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = Path(__file__).resolve().parent / "templates"
SUFFIX = "dc=example,dc=org"
DEMO_BASE = f"ou=demo,{SUFFIX}"  # latency entries (written while the daemon runs)
QUEUE_BASE = f"ou=queue,{SUFFIX}"  # throughput entries (loaded before the daemon starts)
BOUND_BASE = f"ou=bound,{SUFFIX}"  # entries the bound loop claims and reports
# Events that make a figure meaningless: the run stops with them. (`disconnected` is not one:
# stream reconnects are counted and reported, since they are part of what the daemon costs.)
PROBLEM_EVENTS = ("failed", "step-failed", "internal-error", "retry", "claim-failed",
                  "report-failed", "report-retry", "hook-timeout")

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


def ou_ldif(base: str) -> str:
    name = base.split(",")[0].split("=", 1)[1]
    return f"dn: {base}\nobjectClass: organizationalUnit\nou: {name}\n"


def item_attributes(name: str) -> dict[str, Any]:
    return {
        "cn": name,
        "provisiondMode": "add",
        "provisiondState": "0",
        "provisiondExecutionDate": "0",
        "provisiondSize": "10M",
    }


ITEM_CLASSES = ["provisiondDemoItem", "provisiondProvisioning"]


def item_ldif(name: str, base: str) -> str:
    lines = [f"dn: cn={name},{base}", *(f"objectClass: {c}" for c in ITEM_CLASSES)]
    lines += [f"{key}: {value}" for key, value in item_attributes(name).items()]
    return "\n".join(lines) + "\n"


def start_slapd(directory: Path, preload: dict[str, Iterable[str]], cleanup: Cleanup) -> Slapd:
    """A private slapd with the project schema, `ou=demo` (as in tests/conftest.py) and the
    OUs in `preload`, whose entries are loaded with slapadd before slapd starts. This is
    `start_private_slapd` spelled out, so that the stop is registered before the start."""
    parts = [ou_ldif(DEMO_BASE)]
    for base, names in preload.items():
        parts.append(ou_ldif(base))
        parts += [item_ldif(name, base) for name in names]
    directory.mkdir(parents=True, exist_ok=True)
    server = Slapd(directory=directory)
    cleanup.add("slapd", server.stop)
    server.create("\n".join(parts))
    server.start()
    return server


def connect(server: Slapd) -> ldap3.Connection:
    return ldap3.Connection(
        ldap3.Server(server.uri, get_info=ldap3.NONE, connect_timeout=5), server.root_dn,
        server.root_password, auto_bind=True, raise_exceptions=False, receive_timeout=10)


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


# -- configuration ------------------------------------------------------------------------------


def bench_service(base: str, root: Path) -> dict[str, Any]:
    """The bench-only service: one per-entry render and a no-op hook (/bin/true) per entry."""
    return {
        "base": base,
        "filter": "(objectClass=provisiondDemoItem)",
        "scope": "one",
        "attributes": {
            "mode": "provisiondMode", "state": "provisiondState",
            "execution_date": "provisiondExecutionDate",
            "return_value": "provisiondReturnValue", "message": "provisiondMessage",
        },
        "values": {
            "name": {"attribute": "cn", "type": "posix_name"},
            "size": {"attribute": "provisiondSize", "type": "bytes", "min": "1M", "max": "1P"},
        },
        "vars": {"root": str(root)},
        "roots": ["{{ vars.root }}"],
        "invalid_code": 2,
        "steps": {
            "add": [
                {"name": "write item file", "code": 7,
                 "render": {"template": "bench/item.conf.j2",
                            "path": "{{ vars.root }}/items/{{ values.name }}.conf"}},
                {"name": "no-op hook", "code": 5, "hook": ["/bin/true", "{{ values.name }}"]},
            ],
        },
    }


def write_config(directory: Path, server: Slapd, *, mode: str, interval: float, base: str,
                 syslog: Path, workers: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    root = directory / "root"
    root.mkdir(exist_ok=True)
    secret = server.write_password_file(directory / "bind.secret")
    config = {
        "ldap": {"uri": server.uri, "bind_dn": server.root_dn,
                 "bind_password_file": str(secret)},  # shipped default timeout (10 s)
        "sync": {"mode": mode, "interval": interval},
        "state_dir": str(directory / "state"),
        "workers": workers,
        "shutdown_grace": 10,
        "templates": [str(TEMPLATES)],
        "logging": {"syslog_address": str(syslog), "level": "info"},
        "retry": {"limit": 3, "initial": 0.2, "maximum": 1},
        "hooks": {"timeout": 20, "kill_grace": 1},
        "services": {"bench": bench_service(base, root)},
    }
    path = directory / "provisiond.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# -- the daemon's events ------------------------------------------------------------------------

_LINE = re.compile(rb"^<\d+>[^\[\]:]*\[(\d+)\]: event=(\S+)(.*)$", re.S)
_DN = re.compile(r"(?:^| )dn=(\S+)")


class SyslogCapture:
    """An AF_UNIX datagram socket standing in for /dev/log; every `event=` line is kept as
    (arrival time, dn, text) per (pid, event)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.settimeout(0.2)
        self._lock = threading.Lock()
        self._events: dict[tuple[int, str], list[tuple[float, str | None, str]]] = (
            defaultdict(list))
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
            match = _LINE.match(data.rstrip(b"\0\n"))
            if not match:
                continue
            rest = match.group(3).decode(errors="replace")
            dn = _DN.search(rest)
            record = (arrived, dn.group(1).lower() if dn else None, rest)
            with self._lock:
                self._events[(int(match.group(1)), match.group(2).decode())].append(record)

    def events(self, pid: int, event: str) -> list[tuple[float, str | None, str]]:
        with self._lock:
            return list(self._events.get((pid, event), ()))

    def count(self, pid: int, event: str) -> int:
        with self._lock:
            return len(self._events.get((pid, event), ()))

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
    """`python -m provisiond --config CONFIG run` in the foreground, as systemd runs it."""

    def __init__(self, config: Path, log: Path, cleanup: Cleanup) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.log = log
        with open(log, "ab") as out:
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

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class RssSampler:
    """psutil RSS of a process every `interval` seconds, as a cross-check of VmHWM."""

    def __init__(self, process: psutil.Process, interval: float = 0.1) -> None:
        self.process = process
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=2)
        return self.peak


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)

