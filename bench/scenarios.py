"""The benchmark's phases against one private slapd, each with a fresh daemon and state dir.

- latency: entries written one every `gap` seconds while the daemon runs (persist, poll);
- throughput: a daemon started on entries queued before it, then idle (CPU, peak RSS);
- burst: the `scope: all` scenario, provisioned entries plus a queued burst, once without the
  aggregate render step and once with it (throughput, renders of the aggregate file);
- the bound (bound.py): the throughput run's minimal LDAP operations and spawns, no daemon.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench import bound
from bench.accounting import Cpu, ProcessSampler, cpu_now
from bench.harness import (
    BenchError,
    Cleanup,
    Daemon,
    SyslogCapture,
    connect,
    count,
    start_slapd,
)
from bench.workload import (
    AGGREGATE_FILE,
    AGGREGATE_STEP,
    ALL_BASE,
    BOUND_BASE,
    DEMO_BASE,
    ITEM_CLASSES,
    PLAIN_BASE,
    QUEUE_BASE,
    item_attributes,
    write_config,
)

ENTRY_EVENTS = ("claimed", "added", "resume", "scheduled")  # none may appear when idle


@dataclass(frozen=True)
class Plan:
    latency_entries: int  # measured entries per sync mode
    warmup: int  # written first, not measured (first render compiles the template, ...)
    gap: float  # seconds between two latency writes
    poll_interval: float
    queued: int  # throughput entries (and as many for the bound)
    settle: float  # seconds after the throughput run before the idle window
    idle: float  # the idle window
    provisioned: int  # `scope: all` scenario: entries already `added`
    burst: int  # ... and entries queued in mode add
    workers: int = 4


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile: the smallest value with at least pct% of values <= it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


@dataclass
class Latency:
    mode: str
    samples: list[float]  # seconds, write acknowledged -> `added` event
    detect: list[float]  # seconds, write acknowledged -> `claimed` event
    behind: float  # how far the writer fell behind its schedule at worst (s)
    peak_rss_kib: int
    reconnects: int  # `disconnected` events of the stream during the phase


@dataclass
class Drain:
    """A daemon started on `entries` queued entries, up to its last `added`."""

    entries: int
    elapsed: float  # `started` event -> last `added` event
    startup: float  # process spawn -> `started` event
    first_claim: float  # `started` -> first `claimed`
    cpu: Cpu  # `started` -> last `added`
    startup_cpu: float  # the daemon's CPU seconds, spawn -> `started`
    processes: int  # the daemon's processes (itself and workers running the same program)
    sampled_rss: int  # bytes, psutil every 0.1 s during the run
    reconnects: int  # stream `disconnected` events from spawn to the last `added`

    @property
    def rate(self) -> float:
        return self.entries / self.elapsed

    def per_entry_ms(self, seconds: float) -> float:
        return seconds * 1000 / self.entries


@dataclass
class Throughput:
    drain: Drain
    peak_rss_kib: int = 0  # VmHWM after the run and the idle window
    idle_cpu_pct: float = 0.0  # the process CPU clock (ns) when available, else psutil
    idle_cpu_psutil_pct: float = 0.0  # psutil cpu_times (10 ms ticks)
    idle_seconds: float = 0.0
    idle_slapd_pct: float = 0.0
    idle_reconnects: int = 0  # stream `disconnected` events during the idle window


@dataclass
class Burst:
    aggregate: bool  # with the `scope: all` render step
    provisioned: int
    drain: Drain
    writes: int = 0  # `event=wrote` of the aggregate file during the drain
    step_ms: list[float] = field(default_factory=list)  # the aggregate step per entry


@dataclass
class Bench:
    plan: Plan
    workdir: Path
    cleanup: Cleanup
    keep: bool = False

    def __post_init__(self) -> None:
        plan = self.plan
        self.queue_names = [f"q{i:05d}" for i in range(plan.queued)]
        self.bound_names = [f"b{i:05d}" for i in range(plan.queued)]
        self.burst_names = [f"n{i:05d}" for i in range(plan.burst)]
        provisioned = [f"a{i:05d}" for i in range(plan.provisioned)]
        started = time.monotonic()
        self.server = start_slapd(
            self.workdir / "slapd",
            pending={QUEUE_BASE: self.queue_names, BOUND_BASE: self.bound_names,
                     PLAIN_BASE: self.burst_names, ALL_BASE: self.burst_names},
            provisioned={PLAIN_BASE: provisioned, ALL_BASE: provisioned},
            cleanup=self.cleanup)
        total = 2 * plan.queued + 2 * (plan.provisioned + plan.burst)
        self.note(f"slapd ready with {total} preloaded entries "
                  f"in {time.monotonic() - started:.1f}s")
        self.capture = SyslogCapture(self.workdir / "syslog.sock")
        self.cleanup.add("syslog socket", self.capture.close)
        self.conn = connect(self.server)
        self.cleanup.add("ldap connection", self.conn.unbind)
        assert self.server.process is not None
        self.slapd = psutil.Process(self.server.process.pid)

    def note(self, text: str) -> None:
        print(f"  .. {text}", file=sys.stderr, flush=True)

    def daemon(self, label: str, mode: str, interval: float, base: str,
               aggregate: bool = False) -> Daemon:
        directory = self.workdir / label
        config = write_config(directory, self.server, mode=mode, interval=interval, base=base,
                              syslog=self.capture.path, workers=self.plan.workers,
                              aggregate=aggregate)
        return Daemon(config, directory / "daemon.log", self.capture, self.cleanup)

    def _stop(self, daemon: Daemon, what: str) -> None:
        code = daemon.stop()
        if self.keep:
            daemon.keep_syslog()
        if code != 0:
            raise BenchError(f"{what}: the daemon exited with {code}:\n{daemon.tail()}")
        leaked = daemon.stderr_records()
        if leaked:
            raise BenchError(f"{what}: the daemon logged to stderr too, not as its unit "
                             f"does ({len(leaked)} records, first: {leaked[0]})")

    # -- latency -------------------------------------------------------------------------------

    def latency(self, mode: str) -> Latency:
        plan = self.plan
        interval = plan.poll_interval if mode == "poll" else 60.0
        daemon = self.daemon(f"latency-{mode}", mode, interval, DEMO_BASE)
        what = f"latency ({mode})"
        try:
            self.capture.wait(daemon.pid, "connected", 1, timeout=30, alive=daemon.alive,
                              what=f"{what}: daemon start")
            time.sleep(0.2)
            prefix = "lp" if mode == "persist" else "lq"
            dns = [f"cn={prefix}{i:05d},{DEMO_BASE}" for i in range(plan.warmup
                                                                    + plan.latency_entries)]
            written: dict[str, float] = {}
            behind = 0.0
            start = time.monotonic() + 0.05
            for i, dn in enumerate(dns):
                due = start + i * plan.gap
                now = time.monotonic()
                if due > now:
                    time.sleep(due - now)
                else:
                    behind = max(behind, now - due)
                name = dn.split(",")[0][3:]
                if not self.conn.add(dn, ITEM_CLASSES, item_attributes(name)):
                    raise BenchError(f"{what}: add {dn} failed: {self.conn.result}")
                written[dn.lower()] = time.monotonic()
            self.capture.wait(daemon.pid, "added", len(dns), timeout=60, alive=daemon.alive,
                              what=what)
            added = {dn: t for t, dn, _ in self.capture.events(daemon.pid, "added")}
            claimed = {dn: t for t, dn, _ in self.capture.events(daemon.pid, "claimed")}
            measured = [dn.lower() for dn in dns[plan.warmup:]]
            missing = [dn for dn in measured if dn not in added or dn not in claimed]
            if missing:
                raise BenchError(f"{what}: no events for {missing[:3]}")
            result = Latency(
                mode=mode,
                samples=[added[dn] - written[dn] for dn in measured],
                detect=[claimed[dn] - written[dn] for dn in measured],
                behind=behind,
                peak_rss_kib=daemon.peak_rss_kib(),
                reconnects=self.capture.count(daemon.pid, "disconnected"),
            )
        finally:
            self._stop(daemon, what)
        self.note(f"latency {mode}: {len(result.samples)} entries, "
                  f"p50 {percentile(result.samples, 50) * 1000:.1f} ms")
        return result

    # -- a daemon started on queued entries ----------------------------------------------------

    def drain(self, daemon: Daemon, base: str, entries: int, done: int, what: str) -> Drain:
        """Wait until `daemon` has added `entries` entries under `base`; `done`: how many
        entries there must then read `added` in LDAP. CPU is counted from its `started` event
        (taken on the syslog thread as the datagram arrives), so the interpreter's start and
        imports are not charged to the entries."""
        at_start: list[Cpu] = []
        self.capture.on_first(daemon.pid, "started",
                              lambda: at_start.append(cpu_now(daemon, self.slapd)))
        sampler = ProcessSampler(daemon.ps)
        try:
            self.capture.wait(daemon.pid, "started", 1, timeout=60, alive=daemon.alive,
                              what=f"{what}: daemon start")
            self.capture.wait(daemon.pid, "added", entries, timeout=max(60.0, entries / 10),
                              alive=daemon.alive, what=what)
            at_end = cpu_now(daemon, self.slapd)
        finally:
            sampled = sampler.stop()
        if not at_start:
            raise BenchError(f"{what}: no CPU reading at the `started` event")
        started = self.capture.events(daemon.pid, "started")[0][0]
        last = max(t for t, _, _ in self.capture.events(daemon.pid, "added"))
        first = min(t for t, _, _ in self.capture.events(daemon.pid, "claimed"))
        found = count(self.conn, base, "(provisiondMode=added)")
        if found != done:
            raise BenchError(f"{what}: {found} of {done} entries read `added` in LDAP")
        return Drain(entries=entries, elapsed=last - started, startup=started - daemon.spawned,
                     first_claim=first - started, cpu=at_end - at_start[0],
                     startup_cpu=at_start[0].daemon, processes=sampler.processes,
                     sampled_rss=sampled,
                     reconnects=self.capture.count(daemon.pid, "disconnected"))

    # -- throughput, peak RSS, idle CPU --------------------------------------------------------

    def throughput(self) -> Throughput:
        plan = self.plan
        total = len(self.queue_names)
        daemon = self.daemon("throughput", "persist", 60.0, QUEUE_BASE)
        what = "throughput"
        try:
            result = Throughput(self.drain(daemon, QUEUE_BASE, total, total, what))
            self.note(f"throughput: {total} entries in {result.drain.elapsed:.1f}s "
                      f"({result.drain.rate:.0f}/s); settling {plan.settle:g}s, "
                      f"idle {plan.idle:g}s")
            self.idle(daemon, result, what)
        finally:
            self._stop(daemon, what)
        return result

    def idle(self, daemon: Daemon, result: Throughput, what: str) -> None:
        plan = self.plan
        time.sleep(plan.settle)
        events_before = sum(self.capture.count(daemon.pid, e) for e in ENTRY_EVENTS)
        cpu_before, slapd_before = daemon.cpu_seconds(), sum(self.slapd.cpu_times()[:2])
        ns_before = daemon.cpu_ns()
        drops_before = self.capture.count(daemon.pid, "disconnected")
        window_start = time.monotonic()
        time.sleep(plan.idle)
        ns_after = daemon.cpu_ns()
        cpu_after, slapd_after = daemon.cpu_seconds(), sum(self.slapd.cpu_times()[:2])
        window = time.monotonic() - window_start
        events_after = sum(self.capture.count(daemon.pid, e) for e in ENTRY_EVENTS)
        problems = self.capture.problems(daemon.pid)
        if events_after != events_before or problems:
            raise BenchError(f"{what}: the daemon was not idle during the idle window "
                             f"({events_after - events_before} new events; "
                             f"{' | '.join(problems[:3]) or 'no problem events'})")
        result.idle_seconds = window
        result.idle_reconnects = self.capture.count(daemon.pid, "disconnected") - drops_before
        result.idle_cpu_psutil_pct = (cpu_after - cpu_before) / window * 100
        result.idle_cpu_pct = (
            (ns_after - ns_before) / 1e9 / window * 100
            if ns_before is not None and ns_after is not None
            else result.idle_cpu_psutil_pct)
        result.idle_slapd_pct = (slapd_after - slapd_before) / window * 100
        result.peak_rss_kib = daemon.peak_rss_kib()

    # -- the `scope: all` scenario -------------------------------------------------------------

    def burst(self, aggregate: bool) -> Burst:
        """`plan.provisioned` entries already `added` and `plan.burst` queued: the bench
        service, with or without a `scope: all` render of a file listing every active entry."""
        plan = self.plan
        label = "burst-scope-all" if aggregate else "burst-plain"
        base = ALL_BASE if aggregate else PLAIN_BASE
        what = f"burst ({'with' if aggregate else 'without'} scope: all)"
        daemon = self.daemon(label, "persist", 60.0, base, aggregate=aggregate)
        path = self.workdir / label / "root" / AGGREGATE_FILE
        total = plan.provisioned + plan.burst
        try:
            result = Burst(aggregate, plan.provisioned,
                           self.drain(daemon, base, plan.burst, total, what))
            if aggregate:
                self.count_renders(daemon, path, total, result, what)
        finally:
            self._stop(daemon, what)
        self.note(f"{what}: {plan.burst} entries in {result.drain.elapsed:.1f}s "
                  f"({result.drain.rate:.0f}/s)"
                  + (f", {result.writes} writes of {AGGREGATE_FILE}" if aggregate else ""))
        return result

    def count_renders(self, daemon: Daemon, path: Path, total: int, result: Burst,
                      what: str) -> None:
        """The writes of the aggregate file (a render that finds it unchanged logs nothing,
        so those are not counted), and a check that it lists every active entry."""
        wrote = [rest for _, _, rest in self.capture.events(daemon.pid, "wrote")
                 if f" path={path} " in f"{rest} "]
        result.writes = len(wrote)
        if not result.writes:
            raise BenchError(f"{what}: no `event=wrote` for {path}")
        listed = [line for line in path.read_text().splitlines()
                  if line and not line.startswith("#")]
        if len(listed) != total:
            raise BenchError(f"{what}: {path.name} lists {len(listed)} entries, not {total}")
        step = f'"{AGGREGATE_STEP}"'  # kv() quotes a value with a space
        for _, _, rest in self.capture.events(daemon.pid, "step"):
            if f" step={step} " in rest and " ms=" in rest:
                result.step_ms.append(float(rest.rsplit(" ms=", 1)[1].split()[0]))

    # -- the bound -----------------------------------------------------------------------------

    def bound(self, processes: int) -> bound.Bound:
        server = self.server
        result = bound.run(server.uri, server.root_dn, server.root_password, BOUND_BASE,
                           self.bound_names, processes, self.plan.workers,
                           timeout=max(60.0, len(self.bound_names) / 25))
        done = count(self.conn, BOUND_BASE, "(provisiondMode=added)")
        if done != len(self.bound_names):
            raise BenchError(f"bound: {done} of {len(self.bound_names)} entries read `added`")
        self.note(f"bound: {result.entries} entries in {result.elapsed:.1f}s "
                  f"({result.rate:.0f}/s, {processes} process(es) x {self.plan.workers} "
                  "threads)")
        return result
