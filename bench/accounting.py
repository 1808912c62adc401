"""What a phase costs, by process: CPU seconds of the daemon, of the hooks it ran and of slapd,
and how many processes the daemon runs as (the bound runs in as many).

The daemon's own CPU comes from its process CPU clock (nanoseconds, every thread, ended ones
too); hooks are the children it reaped, whose times the kernel adds to it when it waits for
them. Worker processes, should the daemon ever have any, are its descendants running the same
program: a hook execs another one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import psutil

from bench.harness import Daemon


@dataclass(frozen=True)
class Cpu:
    """CPU seconds (user + system) at one moment, or spent between two (`after - before`)."""

    daemon: float  # the daemon's process(es): all threads, live and ended
    hooks: float  # the processes it spawned and reaped: the /bin/true hooks
    slapd: float

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(self.daemon - other.daemon, self.hooks - other.hooks,
                   self.slapd - other.slapd)


def same_program(process: psutil.Process, exe: str) -> list[psutil.Process]:
    """The descendants of `process` running the same program: worker processes, if the
    daemon has any (hooks exec another program)."""
    found = []
    for child in process.children(recursive=True):
        try:
            if child.exe() == exe:
                found.append(child)
        except psutil.Error:
            continue
    return found


def cpu_now(daemon: Daemon, slapd: psutil.Process) -> Cpu:
    """The daemon's main process on its nanosecond CPU clock, plus any worker processes
    (psutil: 10 ms ticks); hooks are what it and they reaped. Worker processes that ended
    during the span count as hooks: none exist today."""
    ns = daemon.cpu_ns()
    main = daemon.ps.cpu_times()
    own = ns / 1e9 if ns is not None else main.user + main.system
    hooks = main.children_user + main.children_system
    for worker in same_program(daemon.ps, daemon.ps.exe()):
        try:
            times = worker.cpu_times()
        except psutil.Error:
            continue
        own += times.user + times.system
        hooks += times.children_user + times.children_system
    slapd_times = slapd.cpu_times()
    return Cpu(own, hooks, slapd_times.user + slapd_times.system)


class ProcessSampler:
    """Every `interval` seconds: the process's RSS (a cross-check of VmHWM) and how many
    processes it runs as (itself plus descendants running the same program, seen in two
    samples in a row so that a hook between fork and exec does not count)."""

    def __init__(self, process: psutil.Process, interval: float = 0.1) -> None:
        self.process = process
        self.exe = process.exe()
        self.interval = interval
        self.peak = 0
        self.processes = 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        before: set[tuple[int, float]] = set()
        while not self._stop.wait(self.interval):
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
                now = set()
                for child in same_program(self.process, self.exe):
                    try:
                        now.add((child.pid, child.create_time()))
                    except psutil.Error:
                        continue
            except psutil.Error:
                return
            self.processes = max(self.processes, 1 + len(now & before))
            before = now

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=2)
        return self.peak
