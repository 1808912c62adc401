"""The benchmark's table and its `METRIC name value unit` lines (bench/README.md says what
each figure means)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import ldap3
import psutil

from bench.bound import DEFINITION, Bound
from bench.harness import slapd_version
from bench.scenarios import Burst, Drain, Latency, Plan, Throughput, percentile
from bench.workload import AGGREGATE_FILE

SCOPE_ALL_GOAL = 1.5  # issue 12: with the aggregate file, within 1.5x of without


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


def ms(value: float) -> str:
    return f"{value * 1000:8.1f}"


def cpu_line(drain: Drain) -> str:
    cpu = drain.cpu
    return (f"daemon {drain.per_entry_ms(cpu.daemon):.2f} ms, hooks "
            f"{drain.per_entry_ms(cpu.hooks):.2f} ms, slapd {drain.per_entry_ms(cpu.slapd):.2f} ms")


def latency_lines(plan: Plan, latencies: list[Latency], rate: float) -> list[str]:
    out = [f"(a) latency: LDAP add (mode add) acknowledged -> daemon logs `added`; "
           f"{plan.latency_entries} entries per mode, one every {plan.gap * 1000:g} ms "
           f"(+{plan.warmup} warm-up, not counted)",
           f"    {'sync mode':<16}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}   "
           f"{'claimed p50':>12}{'p99':>8}   (ms)"]
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
    out.append(f"    offered load {1 / plan.gap:.0f} entries/s = {100 / plan.gap / rate:.0f} % "
               f"of the measured throughput; writer behind schedule at worst "
               f"{worst * 1000:.1f} ms")
    return out


def throughput_lines(plan: Plan, tp: Throughput, bound: Bound) -> list[str]:
    drain = tp.drain
    out = [f"(b) throughput: {drain.entries} entries queued before the daemon starts "
           f"(sync persist, {plan.workers} workers, {drain.processes} process(es))",
           f"    engine   {drain.elapsed:7.2f} s  {drain.rate:8.1f} entries/s   "
           "(`started` -> last `added`)",
           f"    bound    {bound.elapsed:7.2f} s  {bound.rate:8.1f} entries/s   "
           f"({DEFINITION}; {bound.processes} process(es) x {bound.threads} threads)",
           f"    ratio    engine/bound = {drain.rate / bound.rate:.3f}",
           f"    startup (spawn -> `started`) {drain.startup:.2f} s, {drain.startup_cpu:.2f} s "
           f"CPU; first claim {drain.first_claim * 1000:.0f} ms after `started`"]
    if drain.reconnects:
        out.append(f"    stream reconnects during the run: {drain.reconnects}")
    out.append(f"    CPU per entry (`started` -> last `added`): {cpu_line(drain)}")
    out.append(f"    CPU per entry of the bound: its processes {bound.cpu * 1000 / bound.entries:.2f}"
               f" ms, /bin/true {bound.spawned_cpu * 1000 / bound.entries:.2f} ms")
    return out


def burst_lines(plan: Plan, bursts: list[Burst]) -> list[str]:
    out = [f"(c) `scope: all`: {plan.provisioned} entries already `added`, a burst of "
           f"{plan.burst} queued (sync persist, {plan.workers} workers); the same service "
           f"without and with a render step of {AGGREGATE_FILE} (scope: all, every active "
           "entry)",
           f"    {'':<18}{'time':>8}{'entries/s':>11}   CPU per entry"]
    for burst in bursts:
        label = "with scope: all" if burst.aggregate else "without"
        out.append(f"    {label:<18}{burst.drain.elapsed:7.2f}s{burst.drain.rate:11.1f}   "
                   f"{cpu_line(burst.drain)}")
    plain, full = scope_all(bursts)
    out.append(f"    ratio    without/with = {plain.drain.rate / full.drain.rate:.2f} "
               f"(goal <= {SCOPE_ALL_GOAL:g}); daemon CPU per entry with/without = "
               f"{cpu_ratio(plain, full):.2f} (steadier on a busy machine)")
    steps = full.step_ms
    out.append(f"    {AGGREGATE_FILE} written {full.writes} times for {plan.burst} entries "
               "(renders that found it unchanged write nothing and are not counted); "
               f"its step per entry p50 {percentile(steps, 50):.0f} ms, "
               f"p99 {percentile(steps, 99):.0f} ms")
    return out


def cpu_ratio(plain: Burst, full: Burst) -> float:
    return full.drain.cpu.daemon / plain.drain.cpu.daemon * plain.drain.entries / full.drain.entries


def scope_all(bursts: list[Burst]) -> tuple[Burst, Burst]:
    """(without, with) the `scope: all` step."""
    return (next(b for b in bursts if not b.aggregate), next(b for b in bursts if b.aggregate))


def metrics(latencies: list[Latency], tp: Throughput, bursts: list[Burst],
            bound: Bound) -> list[tuple[str, str, str]]:
    drain = tp.drain
    found = []
    for lat in latencies:
        for pct in (50, 95, 99):
            found.append((f"latency_{lat.mode}_p{pct}",
                          f"{percentile(lat.samples, pct) * 1000:.2f}", "ms"))
    plain, full = scope_all(bursts)
    found += [
        ("throughput", f"{drain.rate:.1f}", "entries/s"),
        ("throughput_bound", f"{bound.rate:.1f}", "entries/s"),
        ("throughput_ratio", f"{drain.rate / bound.rate:.3f}", "ratio"),
        ("cpu_per_entry_ms", f"{drain.per_entry_ms(drain.cpu.daemon):.2f}", "ms"),
        ("cpu_per_entry_hooks_ms", f"{drain.per_entry_ms(drain.cpu.hooks):.2f}", "ms"),
        ("cpu_per_entry_slapd_ms", f"{drain.per_entry_ms(drain.cpu.slapd):.2f}", "ms"),
        ("scope_all_throughput_without", f"{plain.drain.rate:.1f}", "entries/s"),
        ("scope_all_throughput", f"{full.drain.rate:.1f}", "entries/s"),
        ("scope_all_ratio", f"{plain.drain.rate / full.drain.rate:.3f}", "ratio"),
        ("scope_all_cpu_per_entry_ms", f"{full.drain.per_entry_ms(full.drain.cpu.daemon):.2f}",
         "ms"),
        ("scope_all_cpu_ratio", f"{cpu_ratio(plain, full):.3f}", "ratio"),
        ("renders_per_burst", str(full.writes), "writes"),
        ("peak_rss", f"{tp.peak_rss_kib / 1024:.1f}", "MiB"),
        ("idle_cpu", f"{tp.idle_cpu_pct:.3f}", "%"),
    ]
    return found


def report(plan: Plan, quick: bool, latencies: list[Latency], tp: Throughput,
           bursts: list[Burst], bound: Bound, runtime: float, load_before: float) -> str:
    out = [f"provisiond benchmark{' (--quick)' if quick else ''}: {machine()}",
           f"workers={plan.workers}; service: one per-entry render + hook /bin/true; "
           "daemon = `python -m provisiond run` subprocess, log level info, syslog only "
           "(as under its systemd unit)", ""]
    out += latency_lines(plan, latencies, tp.drain.rate)
    out.append("")
    out += throughput_lines(plan, tp, bound)
    out.append("")
    out += burst_lines(plan, bursts)
    out.append("")
    out.append("(d) peak RSS of the daemon process (VmHWM = ru_maxrss, read from /proc before "
               "it stops)")
    out.append(f"    after throughput + idle: {tp.peak_rss_kib / 1024:.1f} MiB   (psutil sampled "
               f"max during the run: {tp.drain.sampled_rss / 2**20:.1f} MiB)")
    for lat in latencies:
        out.append(f"    latency daemon ({lat.mode}): {lat.peak_rss_kib / 1024:.1f} MiB")
    out.append("")
    out.append(f"(e) idle CPU (persist, nothing to do, {tp.idle_seconds:.1f} s window after a "
               f"{plan.settle:g} s settle)")
    out.append(f"    daemon {tp.idle_cpu_pct:.3f} % of one CPU (process CPU clock, ns); "
               f"psutil cpu_times: {tp.idle_cpu_psutil_pct:.2f} % (10 ms ticks); "
               f"slapd {tp.idle_slapd_pct:.2f} %")
    out.append(f"    stream reconnects in the window: {tp.idle_reconnects}")
    out.append("")
    out.append(f"total runtime {runtime:.1f} s; 1-minute load average {load_before:.2f} before, "
               f"{os.getloadavg()[0]:.2f} after")
    out.append("")
    out += [f"METRIC {name} {value} {unit}"
            for name, value, unit in metrics(latencies, tp, bursts, bound)]
    return "\n".join(out)
