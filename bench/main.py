"""The benchmark's phases and its report; run it as `bench/run [--quick] [--keep]`.

Phases, in order, against one private slapd:
1. latency, sync mode persist: a daemon subprocess; entries written one every `gap` seconds;
2. latency, sync mode poll (interval 0.05 s): a fresh daemon, the same;
3. throughput: a fresh daemon started on entries loaded before it (slapadd); then, with that
   daemon idle, its CPU over `idle` seconds and its peak RSS;
4. the bound: the throughput run's LDAP operations and process spawns in a tight loop, with
   the same number of threads, while no daemon runs.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import queue
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import ldap3
import psutil

from bench.harness import (
    BOUND_BASE,
    DEMO_BASE,
    ITEM_CLASSES,
    QUEUE_BASE,
    BenchError,
    Cleanup,
    Daemon,
    RssSampler,
    SyslogCapture,
    connect,
    count,
    item_attributes,
    remove_tree,
    slapd_version,
    start_slapd,
    write_config,
)
from provisiond.directory.controls import assertion_control
from provisiond.model import lifecycle
from provisiond.model.settings import StateAttributes

NAMES = StateAttributes(mode="provisiondMode", state="provisiondState",
                        execution_date="provisiondExecutionDate",
                        return_value="provisiondReturnValue", message="provisiondMessage")
READ_ATTRIBUTES = [*NAMES.names(), "cn", "provisiondSize", "entryUUID"]


@dataclass(frozen=True)
class Plan:
    latency_entries: int  # measured entries per sync mode
    warmup: int  # written first, not measured (first render compiles the template, ...)
    gap: float  # seconds between two latency writes
    poll_interval: float
    queued: int  # throughput entries (and as many for the bound)
    settle: float  # seconds after the throughput run before the idle window
    idle: float  # the idle window
    workers: int = 4


# gap: 40 ms (25 writes/s) keeps the offered load well under what the engine sustains on two
# cores (about 65 entries/s), so the figure is the path of one entry, not a queue.
FULL = Plan(latency_entries=500, warmup=10, gap=0.040, poll_interval=0.05, queued=5000,
            settle=2.0, idle=10.0)
QUICK = Plan(latency_entries=100, warmup=5, gap=0.040, poll_interval=0.05, queued=500,
             settle=1.0, idle=3.0)


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
class Throughput:
    entries: int
    elapsed: float  # `started` event -> last `added` event
    startup: float  # process spawn -> `started` event
    first_claim: float  # `started` -> first `claimed`
    daemon_cpu: float  # CPU seconds of the daemon itself, spawn to last `added`
    hook_cpu: float  # CPU seconds of its reaped children (the /bin/true hooks)
    slapd_cpu: float  # CPU seconds of slapd over the same span
    sampled_rss: int  # bytes, psutil every 0.1 s during the run
    peak_rss_kib: int = 0  # VmHWM after the run and the idle window
    idle_cpu_pct: float = 0.0  # the process CPU clock (ns) when available, else psutil
    idle_cpu_psutil_pct: float = 0.0  # psutil cpu_times (10 ms ticks)
    idle_seconds: float = 0.0
    idle_slapd_pct: float = 0.0
    reconnects: int = 0  # stream `disconnected` events from spawn to the last `added`
    idle_reconnects: int = 0  # ... during the idle window

    @property
    def rate(self) -> float:
        return self.entries / self.elapsed


@dataclass
class Bound:
    entries: int
    elapsed: float
    threads: int

    @property
    def rate(self) -> float:
        return self.entries / self.elapsed


@dataclass
class Bench:
    plan: Plan
    workdir: Path
    cleanup: Cleanup
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.queue_names = [f"q{i:05d}" for i in range(self.plan.queued)]
        self.bound_names = [f"b{i:05d}" for i in range(self.plan.queued)]
        started = time.monotonic()
        self.server = start_slapd(self.workdir / "slapd",
                                  {QUEUE_BASE: self.queue_names, BOUND_BASE: self.bound_names},
                                  self.cleanup)
        self.note(f"slapd ready with {2 * self.plan.queued} preloaded entries "
                  f"in {time.monotonic() - started:.1f}s")
        self.capture = SyslogCapture(self.workdir / "syslog.sock")
        self.cleanup.add("syslog socket", self.capture.close)
        self.conn = connect(self.server)
        self.cleanup.add("ldap connection", self.conn.unbind)

    def note(self, text: str) -> None:
        print(f"  .. {text}", file=sys.stderr, flush=True)

    def daemon(self, label: str, mode: str, interval: float, base: str) -> Daemon:
        directory = self.workdir / label
        config = write_config(directory, self.server, mode=mode, interval=interval, base=base,
                              syslog=self.capture.path, workers=self.plan.workers)
        return Daemon(config, directory / "daemon.log", self.cleanup)

    def _stop(self, daemon: Daemon, what: str) -> None:
        code = daemon.stop()
        if code != 0:
            raise BenchError(f"{what}: the daemon exited with {code}:\n{daemon.tail()}")

    # -- (a) latency ---------------------------------------------------------------------------

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

    # -- (b) throughput, (c) peak RSS, (d) idle CPU --------------------------------------------

    def throughput(self) -> Throughput:
        plan = self.plan
        total = len(self.queue_names)
        assert self.server.process is not None
        slapd = psutil.Process(self.server.process.pid)
        slapd_before = sum(slapd.cpu_times()[:2])
        daemon = self.daemon("throughput", "persist", 60.0, QUEUE_BASE)
        sampler = RssSampler(daemon.ps)
        what = "throughput"
        try:
            self.capture.wait(daemon.pid, "started", 1, timeout=60, alive=daemon.alive,
                              what=f"{what}: daemon start")
            self.capture.wait(daemon.pid, "added", total, timeout=max(60.0, total / 25),
                              alive=daemon.alive, what=what)
            cpu = daemon.ps.cpu_times()
            slapd_after = sum(slapd.cpu_times()[:2])
            sampled = sampler.stop()
            started = self.capture.events(daemon.pid, "started")[0][0]
            last = max(t for t, _, _ in self.capture.events(daemon.pid, "added"))
            first = min(t for t, _, _ in self.capture.events(daemon.pid, "claimed"))
            done = count(self.conn, QUEUE_BASE, "(provisiondMode=added)")
            if done != total:
                raise BenchError(f"{what}: {done} of {total} entries read `added` in LDAP")
            result = Throughput(
                entries=total, elapsed=last - started, startup=started - daemon.spawned,
                first_claim=first - started, daemon_cpu=cpu.user + cpu.system,
                hook_cpu=cpu.children_user + cpu.children_system,
                slapd_cpu=slapd_after - slapd_before, sampled_rss=sampled,
                reconnects=self.capture.count(daemon.pid, "disconnected"))
            self.note(f"throughput: {total} entries in {result.elapsed:.1f}s "
                      f"({result.rate:.0f}/s); settling {plan.settle:g}s, idle {plan.idle:g}s")

            time.sleep(plan.settle)
            events_before = sum(self.capture.count(daemon.pid, e)
                                for e in ("claimed", "added", "resume", "scheduled"))
            cpu_before, slapd_before = daemon.cpu_seconds(), sum(slapd.cpu_times()[:2])
            ns_before = daemon.cpu_ns()
            drops_before = self.capture.count(daemon.pid, "disconnected")
            window_start = time.monotonic()
            time.sleep(plan.idle)
            ns_after = daemon.cpu_ns()
            cpu_after, slapd_after = daemon.cpu_seconds(), sum(slapd.cpu_times()[:2])
            window = time.monotonic() - window_start
            events_after = sum(self.capture.count(daemon.pid, e)
                               for e in ("claimed", "added", "resume", "scheduled"))
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
        finally:
            sampler.stop()
            self._stop(daemon, what)
        return result

    # -- (b) the bound -------------------------------------------------------------------------

    def bound(self) -> Bound:
        """Per entry what the engine cannot avoid, in `workers` threads of one process: a read,
        the claim (with its Assertion control), one spawn of /bin/true, the report."""
        threads = self.plan.workers
        work: queue.SimpleQueue[str] = queue.SimpleQueue()
        for name in self.bound_names:
            work.put(name)
        ready = threading.Barrier(threads + 1, timeout=30)
        errors: list[str] = []
        hook_env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}

        def one(read: ldap3.Connection, write: ldap3.Connection, name: str) -> None:
            dn = f"cn={name},{BOUND_BASE}"
            read.search(dn, "(objectClass=*)", search_scope=ldap3.BASE,
                        attributes=READ_ATTRIBUTES, dereference_aliases=ldap3.DEREF_NEVER)
            if read.result["result"] != 0 or not read.response:
                raise BenchError(f"bound: read {dn}: {read.result['description']}")
            raw = read.response[0]["raw_attributes"]
            attributes = {k.lower(): tuple(v.decode() for v in vs) for k, vs in raw.items()}
            state = lifecycle.read_state(NAMES, attributes)
            write.modify(dn, lifecycle.claim_changes(NAMES, state, "add"),
                         controls=[assertion_control(lifecycle.claim_filter(NAMES, "add"))])
            if write.result["result"] != 0:
                raise BenchError(f"bound: claim {dn}: {write.result['description']}")
            hook = subprocess.run(["/bin/true", name], stdin=subprocess.DEVNULL,
                                  capture_output=True, env=hook_env, cwd="/", close_fds=True,
                                  start_new_session=True, timeout=20, check=False)
            if hook.returncode != 0:
                raise BenchError(f"bound: /bin/true exited {hook.returncode}")
            write.modify(dn, lifecycle.success_changes(NAMES, "add", datetime.now(UTC), {},
                                                       "ok"))
            if write.result["result"] != 0:
                raise BenchError(f"bound: report {dn}: {write.result['description']}")

        def worker() -> None:
            connections: list[ldap3.Connection] = []
            try:
                connections = [connect(self.server), connect(self.server)]  # read, write
                ready.wait()
                while not errors:
                    try:
                        name = work.get_nowait()
                    except queue.Empty:
                        return
                    one(*connections, name)
            except Exception as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(f"bound: {exc}")
                ready.abort()
            finally:
                for connection in connections:
                    connection.unbind()

        pool = [threading.Thread(target=worker, name=f"bound-{i}", daemon=True)
                for i in range(threads)]
        for thread in pool:
            thread.start()
        try:
            ready.wait()
        except threading.BrokenBarrierError:
            raise BenchError(errors[0] if errors else "bound: workers did not start") from None
        started = time.monotonic()
        deadline = started + max(60.0, len(self.bound_names) / 25)
        for thread in pool:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))
        elapsed = time.monotonic() - started
        if errors:
            raise BenchError(errors[0])
        if any(thread.is_alive() for thread in pool):
            raise BenchError("bound: timed out")
        done = count(self.conn, BOUND_BASE, "(provisiondMode=added)")
        if done != len(self.bound_names):
            raise BenchError(f"bound: {done} of {len(self.bound_names)} entries read `added`")
        result = Bound(entries=len(self.bound_names), elapsed=elapsed, threads=threads)
        self.note(f"bound: {result.entries} entries in {elapsed:.1f}s ({result.rate:.0f}/s)")
        return result


# -- the report ---------------------------------------------------------------------------------


def machine() -> str:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = psutil.virtual_memory().total / 2**30
    return (f"{os.cpu_count()} CPUs ({model}), {memory:.1f} GiB RAM, "
            f"Linux {platform.release()}, Python {platform.python_version()}, "
            f"ldap3 {ldap3.__version__}, slapd {slapd_version()}")


def report(plan: Plan, quick: bool, latencies: list[Latency], tp: Throughput,
           bound: Bound, runtime: float, load_before: float) -> None:
    def ms(value: float) -> str:
        return f"{value * 1000:8.1f}"

    out: list[str] = []
    out.append(f"provisiond benchmark{' (--quick)' if quick else ''}: {machine()}")
    out.append(f"workers={plan.workers}; service: one per-entry render + hook /bin/true; "
               "daemon = `python -m provisiond run` subprocess, log level info")
    out.append("")
    out.append(f"(a) latency: LDAP add (mode add) acknowledged -> daemon logs `added`; "
               f"{plan.latency_entries} entries per mode, one every {plan.gap * 1000:g} ms "
               f"(+{plan.warmup} warm-up, not counted)")
    out.append(f"    {'sync mode':<16}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}   "
               f"{'claimed p50':>12}{'p99':>8}   (ms)")
    for lat in latencies:
        label = lat.mode if lat.mode == "persist" else f"poll ({plan.poll_interval:g} s)"
        out.append(f"    {label:<16}{ms(percentile(lat.samples, 50))}"
                   f"{ms(percentile(lat.samples, 95))}{ms(percentile(lat.samples, 99))}"
                   f"{ms(max(lat.samples))}   {ms(percentile(lat.detect, 50)):>12}"
                   f"{ms(percentile(lat.detect, 99))}")
    out.append("    (`claimed p50/p99`: write -> the daemon's `claimed` event, i.e. detection, "
               "read and claim)")
    for lat in latencies:
        if lat.reconnects:
            out.append(f"    stream reconnects during the {lat.mode} run: {lat.reconnects}")
    worst = max(lat.behind for lat in latencies)
    out.append(f"    offered load {1 / plan.gap:.0f} entries/s = {100 / plan.gap / tp.rate:.0f} % "
               f"of the measured throughput; writer behind schedule at worst "
               f"{worst * 1000:.1f} ms")
    out.append("")
    out.append(f"(b) throughput: {tp.entries} entries queued before the daemon starts "
               f"(sync persist, {plan.workers} workers)")
    out.append(f"    engine   {tp.elapsed:7.2f} s  {tp.rate:8.1f} entries/s   "
               "(`started` -> last `added`)")
    out.append(f"    bound    {bound.elapsed:7.2f} s  {bound.rate:8.1f} entries/s   "
               f"(read + claim + report + spawn /bin/true, {bound.threads} threads)")
    out.append(f"    ratio    engine/bound = {tp.rate / bound.rate:.3f}")
    out.append(f"    startup (spawn -> `started`) {tp.startup:.2f} s; first claim "
               f"{tp.first_claim * 1000:.0f} ms after `started`")
    per = 1000 / tp.entries
    if tp.reconnects:
        out.append(f"    stream reconnects during the run: {tp.reconnects}")
    out.append(f"    CPU per entry: daemon {tp.daemon_cpu * per:.2f} ms, hooks "
               f"{tp.hook_cpu * per:.2f} ms, slapd {tp.slapd_cpu * per:.2f} ms")
    out.append("")
    out.append("(c) peak RSS of the daemon process (VmHWM = ru_maxrss, read from /proc before "
               "it stops)")
    out.append(f"    after throughput + idle: {tp.peak_rss_kib / 1024:.1f} MiB   (psutil sampled "
               f"max during the run: {tp.sampled_rss / 2**20:.1f} MiB)")
    for lat in latencies:
        out.append(f"    latency daemon ({lat.mode}): {lat.peak_rss_kib / 1024:.1f} MiB")
    out.append("")
    out.append(f"(d) idle CPU (persist, nothing to do, {tp.idle_seconds:.1f} s window after a "
               f"{plan.settle:g} s settle)")
    out.append(f"    daemon {tp.idle_cpu_pct:.3f} % of one CPU (process CPU clock, ns); psutil cpu_times: "
               f"{tp.idle_cpu_psutil_pct:.2f} % (10 ms ticks); slapd {tp.idle_slapd_pct:.2f} %")
    out.append(f"    stream reconnects in the window: {tp.idle_reconnects}")
    out.append("")
    out.append(f"total runtime {runtime:.1f} s; 1-minute load average {load_before:.2f} before, "
               f"{os.getloadavg()[0]:.2f} after (well above 1 on 2 CPUs: other work competed)")
    out.append("")
    metrics = []
    for lat in latencies:
        for pct in (50, 95, 99):
            metrics.append((f"latency_{lat.mode}_p{pct}", f"{percentile(lat.samples, pct) * 1000:.2f}",
                            "ms"))
    metrics += [
        ("throughput", f"{tp.rate:.1f}", "entries/s"),
        ("throughput_bound", f"{bound.rate:.1f}", "entries/s"),
        ("throughput_ratio", f"{tp.rate / bound.rate:.3f}", "ratio"),
        ("peak_rss", f"{tp.peak_rss_kib / 1024:.1f}", "MiB"),
        ("idle_cpu", f"{tp.idle_cpu_pct:.3f}", "%"),
    ]
    out += [f"METRIC {name} {value} {unit}" for name, value, unit in metrics]
    print("\n".join(out), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 100 latency entries per mode, 500 queued, 3 s idle")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (configs, daemon logs, slapd)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL

    began, load_before = time.monotonic(), os.getloadavg()[0]
    cleanup = Cleanup()
    cleanup.install()
    workdir = Path(tempfile.mkdtemp(prefix="pvb-", dir="/tmp"))  # short: ldapi path limit
    if args.keep:
        print(f"bench: keeping {workdir}", file=sys.stderr)
    else:
        cleanup.add("work directory", lambda: remove_tree(workdir))
    try:
        bench = Bench(plan, workdir, cleanup)
        latencies = [bench.latency("persist"), bench.latency("poll")]
        tp = bench.throughput()
        bound = bench.bound()
        report(plan, args.quick, latencies, tp, bound, time.monotonic() - began, load_before)
        return 0
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, SystemExit):
        print("bench: interrupted; stopping the daemon and slapd", file=sys.stderr)
        raise
    finally:
        cleanup.run()
