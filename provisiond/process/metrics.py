"""Prometheus metrics as a text file, for node_exporter's textfile collector.

No HTTP server and no client library: the daemon renders the exposition text format itself
every `metrics.interval` seconds and replaces `metrics.path` atomically (temp file, fsync,
rename), so node_exporter never reads a torn file. The temp file starts with a dot and ends in
`.tmp`, which the collector (reading `*.prom`) ignores.

Counters survive a reload (SIGHUP builds a new engine): the totals of the engine being replaced
are carried over. They start again from zero when the process restarts, which `rate()` and
`increase()` handle.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from provisiond import __version__
from provisiond.host.files import atomic_write
from provisiond.logfmt import kv
from provisiond.model.settings import MetricsSettings

if TYPE_CHECKING:
    from provisiond.core.engine import Engine

log = logging.getLogger("provisiond.metrics")

# Seconds: renders take milliseconds, hooks (quota, lvcreate, rsnapshot) up to minutes.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
           300.0, 600.0)
OUTCOMES = ("success", "failure")
# The counter families, which a `once` run reads back from the previous run's file
# (metrics_once.py).
PROCESSED = "provisiond_entries_processed_total"
RETRIES = "provisiond_retries_total"
LOST_RACES = "provisiond_claims_lost_total"
STEP_DURATION = "provisiond_step_duration_seconds"
SCHEDULED_REASONS = ("date", "retry", "wait")  # the first item of the engine's scheduler keys


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{name}="{escape_label(str(value))}"' for name, value in labels.items())
    return "{" + inner + "}"


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


@dataclass
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    total: int = 0
    sum: float = 0.0

    def observe(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        for index, bound in enumerate(BUCKETS):
            if seconds <= bound:
                self.counts[index] += 1
        self.total += 1
        self.sum += seconds

    def merge(self, other: Histogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total
        self.sum += other.sum


@dataclass(frozen=True)
class Totals:
    """Counter values to carry into this process's: entries by (service, outcome), retries,
    lost races, step histograms by (service, step, outcome)."""

    processed: Mapping[tuple[str, str], int]
    retries: int = 0
    lost: int = 0
    steps: Mapping[tuple[str, str, str], Histogram] = field(default_factory=dict)


class Family:
    """One metric family being written: HELP and TYPE, then its samples."""

    def __init__(self, lines: list[str], name: str, kind: str, help_text: str) -> None:
        self.lines = lines
        self.name = name
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    def sample(self, value: float, suffix: str = "", **labels: str) -> None:
        self.lines.append(f"{self.name}{suffix}{_labels(**labels)} {_number(value)}")


class Metrics:
    """Collects what the engine does and renders it; `start()` writes it periodically."""

    def __init__(self, settings: MetricsSettings, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.started = clock()
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._carried: dict[tuple[str, str], int] = {}
        self._carried_retries = 0
        self._carried_lost = 0
        self._steps: dict[tuple[str, str, str], Histogram] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_error: str | None = None

    @property
    def path(self) -> Path | None:
        return Path(self.settings.path) if self.settings.path else None

    # -- collecting ------------------------------------------------------------------------------

    def observe(self, service: str, step: str, seconds: float, ok: bool) -> None:
        """The pipeline's observation hook: one step of one entry took `seconds`."""
        key = (service, step, "success" if ok else "failure")
        with self._lock:
            histogram = self._steps.get(key)
            if histogram is None:
                histogram = self._steps[key] = Histogram()
            histogram.observe(seconds)

    def attach(self, engine: Engine) -> None:
        """Watch `engine` (after a reload: instead of the previous one, keeping its totals)."""
        with self._lock:  # one step: a render never counts the old engine twice
            old = self._engine
            if old is not None and old is not engine:
                self._carry(Totals(old.counters.outcomes(), old.counters.retried,
                                   old.counters.lost_races))
            self._engine = engine
        engine.pipeline.observe = self.observe

    def carry(self, totals: Totals) -> None:
        """Add totals counted elsewhere (the previous `once` run's file) to the ones this
        process renders, so the counters never go down."""
        with self._lock:
            self._carry(totals)

    def _carry(self, totals: Totals) -> None:
        for key, count in totals.processed.items():
            self._carried[key] = self._carried.get(key, 0) + count
        self._carried_retries += totals.retries
        self._carried_lost += totals.lost
        for step, histogram in totals.steps.items():
            self._steps.setdefault(step, Histogram()).merge(histogram)

    # -- rendering -------------------------------------------------------------------------------

    def render(self) -> str:
        with self._lock:
            engine = self._engine
            processed = dict(self._carried)
            retries, lost = self._carried_retries, self._carried_lost
            steps = {key: Histogram(list(h.counts), h.total, h.sum)
                     for key, h in self._steps.items()}
        services: list[str] = []
        if engine is not None:
            services = sorted(engine.services)
            for key, count in engine.counters.outcomes().items():
                processed[key] = processed.get(key, 0) + count
            retries += engine.counters.retried
            lost += engine.counters.lost_races
        for service in services:
            for outcome in OUTCOMES:
                processed.setdefault((service, outcome), 0)

        lines: list[str] = []
        info = Family(lines, "provisiond_info", "gauge", "Version of the running provisiond.")
        info.sample(1, version=__version__)
        Family(lines, "provisiond_start_time_seconds", "gauge",
               "Unix time the process started.").sample(self.started)

        family = Family(lines, PROCESSED, "counter",
                        "Entries processed to the end, by service and outcome "
                        "(success: reported done; failure: ReturnValue written).")
        for (service, outcome), count in sorted(processed.items()):
            family.sample(count, service=service, outcome=outcome)
        Family(lines, RETRIES, "counter",
               "Transient failures (hook exit 75, directory unavailable) scheduled for a "
               "retry.").sample(retries)
        Family(lines, LOST_RACES, "counter",
               "Claims another daemon (or a changed entry) won first.").sample(lost)

        family = Family(lines, STEP_DURATION, "histogram",
                        "How long the steps of a service took, by step and outcome.")
        for (service, step, outcome), histogram in sorted(steps.items()):
            labels = {"service": service, "step": step, "outcome": outcome}
            for bound, count in zip(BUCKETS, histogram.counts, strict=True):
                family.sample(count, "_bucket", **labels, le=_number(bound))
            family.sample(histogram.total, "_bucket", **labels, le="+Inf")
            family.sample(histogram.sum, "_sum", **labels)
            family.sample(histogram.total, "_count", **labels)

        if engine is not None:
            self._render_engine(lines, engine, services)
        return "\n".join(lines) + "\n"

    def _render_engine(self, lines: list[str], engine: Engine, services: Iterable[str]) -> None:
        queued, busy = engine.load()
        Family(lines, "provisiond_queue_depth", "gauge",
               "Entries waiting for a worker.").sample(queued)
        Family(lines, "provisiond_entries_in_progress", "gauge",
               "Entries in the hands of a worker or waiting for one.").sample(busy)
        scheduled: dict[tuple[str, str], int] = {}
        for service in services:
            for reason in SCHEDULED_REASONS:
                scheduled[(service, reason)] = 0
        for key, work in engine.scheduler.select(lambda key, item: True):
            # the engine's keys: (reason, service, uuid)
            reason = str(key[0]) if isinstance(key, tuple) and key else "date"
            entry = (str(getattr(work, "service", "")), reason)
            scheduled[entry] = scheduled.get(entry, 0) + 1
        family = Family(lines, "provisiond_entries_scheduled", "gauge",
                        "Entries waiting for a time: a future execution date, a retry, or "
                        "(wait) a re-check of an entry they reference that is being "
                        "provisioned.")
        for (service, reason), count in sorted(scheduled.items()):
            family.sample(count, service=service, reason=reason)
        parked = Family(lines, "provisiond_entries_parked", "gauge",
                        "Claimed or pending entries set aside without a worker: for a "
                        "serialization key another entry holds, or for a batch render of a "
                        "file of all entries.")
        parked.sample(engine.keys.parked(), reason="serialize")
        parked.sample(engine.batches.count(), reason="batch")
        Family(lines, "provisiond_ready", "gauge",
               "1 once the first sync pass of every service is done.").sample(
            1 if engine.first_sync.is_set() or not engine.services else 0)
        connected = Family(lines, "provisiond_connected", "gauge",
                           "1 while the service's change stream is connected to the directory.")
        for service in services:
            connected.sample(1 if engine.services[service].connected else 0, service=service)
        synced = Family(lines, "provisiond_last_sync_timestamp_seconds", "gauge",
                        "Unix time the service's last refresh pass completed (0: never); in "
                        "persist mode changes then stream while provisiond_connected is 1.")
        for service in services:
            synced.sample(engine.services[service].last_sync or 0, service=service)
        cookie = Family(lines, "provisiond_cookie_saved_timestamp_seconds", "gauge",
                        "Unix time the service's sync cookie was last stored (0: none).")
        for service in services:
            try:
                saved = engine.services[service].cookies.path.stat().st_mtime
            except OSError:
                saved = 0
            cookie.sample(saved, service=service)

    # -- writing ---------------------------------------------------------------------------------

    def write(self) -> bool:
        """Replace the metrics file; False (logged once per distinct error) if it failed."""
        path = self.path
        if path is None:
            return False
        try:
            atomic_write(path, self.render().encode(), mode=0o644)
        except OSError as exc:
            reason = f"{exc.strerror or exc}"
            if reason != self._last_error:
                log.error(kv(event="metrics-write-failed", path=str(path), reason=reason))
                self._last_error = reason
            return False
        self._last_error = None
        return True

    def configure(self, settings: MetricsSettings) -> None:
        """Apply (possibly reloaded) settings: start, stop or keep the writer."""
        self.settings = settings
        if self.path is None:
            self.stop()
        else:
            self.start()

    def start(self) -> None:
        if self.path is None or self._thread is not None:
            return
        self._stop.clear()
        self.write()
        self._thread = threading.Thread(target=self._loop, name="metrics", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.interval):
            try:
                self.write()
            except Exception:  # noqa: BLE001 - metrics must never stop provisioning
                log.exception(kv(event="metrics-error"))

    def stop(self) -> None:
        """Stop the writer after a last write (so the file shows the final counts)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
            self.write()


def status_line(engine: Engine) -> str:
    """One line for systemd's STATUS= (shown by `systemctl status`)."""
    services = engine.services
    connected = sum(1 for rt in services.values() if rt.connected)
    queued, busy = engine.load()
    scheduled = len(engine.scheduler.items())
    counters = engine.counters
    if not services:
        return "running: no services configured"
    phase = "running" if engine.first_sync.is_set() else "starting: first sync pass"
    line = (f"{phase}; {connected}/{len(services)} services connected; "
            f"{counters.succeeded} succeeded, {counters.failed} failed, "
            f"{counters.retried} retried; {busy} in progress, {scheduled} scheduled")
    down = [name for name, rt in services.items() if not rt.connected]
    if down:
        line += f"; waiting for the directory: {', '.join(sorted(down))}"
    return line
