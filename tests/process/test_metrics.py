"""The Prometheus text file: it parses with prometheus_client, and its numbers move."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from provisiond.config import load_config
from provisiond.core.clock import FakeClock
from provisiond.core.engine import Engine
from provisiond.model.settings import MetricsSettings
from provisiond.process.daemon import configure_logging
from provisiond.process.metrics import BUCKETS, Metrics, Totals, status_line
from provisiond.process.metrics_once import write_run_metrics
from provisiond.testing.slapd import Slapd
from tests.process.metrics_support import assert_two_added_one_failed, once_site, parse, value
from tests.support import add_item, connect, demo_service, mode_of, read, wait_for, write_config


def test_histogram_is_cumulative_and_labels_are_escaped() -> None:
    metrics = Metrics(MetricsSettings())
    step = 'quote " backslash \\ newline \n end'
    for seconds in (0.001, 0.3, 0.3, 700.0):
        metrics.observe("svc", step, seconds, True)
    metrics.observe("svc", step, 2.0, False)
    families = parse(metrics.render())
    assert families["provisiond_step_duration_seconds"].type == "histogram"
    ok = {"service": "svc", "step": step, "outcome": "success"}
    assert value(families, "provisiond_step_duration_seconds_count", **ok) == 4
    assert value(families, "provisiond_step_duration_seconds_bucket", **ok, le="0.005") == 1
    assert value(families, "provisiond_step_duration_seconds_bucket", **ok, le="0.5") == 3
    assert value(families, "provisiond_step_duration_seconds_bucket", **ok,
                 le=str(BUCKETS[-1])) == 3
    assert value(families, "provisiond_step_duration_seconds_bucket", **ok, le="+Inf") == 4
    assert value(families, "provisiond_step_duration_seconds_sum", **ok) == pytest.approx(700.601)
    failed = {"service": "svc", "step": step, "outcome": "failure"}
    assert value(families, "provisiond_step_duration_seconds_count", **failed) == 1


def test_unwritable_path_does_not_raise(tmp_path: Path) -> None:
    metrics = Metrics(MetricsSettings(path=str(tmp_path / "missing" / "x.prom")))
    assert metrics.write() is False
    assert Metrics(MetricsSettings()).write() is False  # off


@contextmanager
def running(config_path: Path, metrics: Metrics, clock: FakeClock | None = None
            ) -> Iterator[Engine]:
    config = load_config(config_path)
    configure_logging(config, foreground=False)
    engine = Engine(config, clock)
    metrics.attach(engine)
    stop = threading.Event()
    engine.start_workers()
    engine.run_streams(stop)
    metrics.configure(config.metrics)
    try:
        yield engine
    finally:
        stop.set()
        engine.shutdown(grace=10)
        metrics.stop()


def test_counters_move_when_entries_are_processed(slapd: Slapd, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    prom = tmp_path / "textfile" / "provisiond.prom"
    prom.parent.mkdir()
    config = write_config(tmp_path / "cfg", slapd, demo_service(root),
                          metrics={"path": str(prom), "interval": 0.1})
    conn = connect(slapd)
    clock = FakeClock()
    metrics = Metrics(load_config(config).metrics)
    with running(config, metrics, clock) as engine:
        wait_for(lambda: engine.first_sync.is_set(), what="first sync")
        wait_for(prom.exists, what="metrics file")

        def synced() -> dict[str, Any] | None:
            families = parse(prom.read_text())
            return families if value(families, "provisiond_ready") == 1 else None

        before = wait_for(synced, what="metrics file after the first sync")
        assert value(before, "provisiond_entries_processed_total", service="demo",
                     outcome="success") == 0
        assert value(before, "provisiond_connected", service="demo") == 1
        assert value(before, "provisiond_ready") == 1
        assert value(before, "provisiond_last_sync_timestamp_seconds", service="demo") > 0

        one = add_item(conn, "one")
        two = add_item(conn, "two")
        bad = add_item(conn, "bad", description="tab\there")
        later = (clock.now() + timedelta(days=2)).strftime("%Y%m%d")
        add_item(conn, "later", execution_date=later)
        wait_for(lambda: mode_of(conn, one) == "added" and mode_of(conn, two) == "added")
        wait_for(lambda: read(conn, bad).get("provisiondReturnValue") == "2")
        wait_for(lambda: engine.scheduler.pending() == 1)
        wait_for(engine.idle)

        def counted() -> dict[str, Any] | None:
            families = parse(prom.read_text())
            done = value(families, "provisiond_entries_processed_total", service="demo",
                         outcome="success")
            scheduled = value(families, "provisiond_entries_scheduled", service="demo",
                              reason="date")
            cookie = value(families, "provisiond_cookie_saved_timestamp_seconds",
                           service="demo")
            return families if done == 2 and scheduled == 1 and cookie > 0 else None

        assert_two_added_one_failed(wait_for(counted, what="metrics file with the new counts"))
        assert "1/1 services connected; 2 succeeded, 1 failed" in status_line(engine)
    assert not list(prom.parent.glob(".*.tmp"))  # no temp file left for node_exporter


def test_counters_survive_a_new_engine(slapd: Slapd, tmp_path: Path) -> None:
    """A reload builds a new engine; the totals carry over instead of dropping to zero."""
    root = tmp_path / "root"
    root.mkdir()
    config = write_config(tmp_path / "cfg", slapd, demo_service(root))
    conn = connect(slapd)
    metrics = Metrics(MetricsSettings())
    with running(config, metrics) as engine:
        dn = add_item(conn, "first")
        wait_for(lambda: mode_of(conn, dn) == "added")
        wait_for(lambda: engine.counters.succeeded == 1)
    with running(config, metrics) as engine:
        dn = add_item(conn, "second")
        wait_for(lambda: mode_of(conn, dn) == "added")
        wait_for(lambda: engine.counters.succeeded == 1)  # counted just after the report
        families = parse(metrics.render())
    assert value(families, "provisiond_entries_processed_total", service="demo",
                 outcome="success") == 2


def test_connected_is_0_while_the_bind_fails_and_1_once_the_password_file_is_fixed(
    slapd: Slapd, tmp_path: Path
) -> None:
    """A failed bind used to end the stream thread: connected stayed 0 and new entries were
    never processed, even after the password file was fixed (issue 8.1)."""
    root = tmp_path / "root"
    root.mkdir()
    config = write_config(tmp_path / "cfg", slapd, demo_service(root))
    secret = tmp_path / "cfg" / "bind.secret"
    secret.write_text("wrong\n")
    conn = connect(slapd)
    dn = add_item(conn, "waiting")
    metrics = Metrics(MetricsSettings())
    with running(config, metrics) as engine:
        rt = engine.services["demo"]
        time.sleep(1.0)  # the first bind and a retry or two have failed
        assert not rt.connected
        assert value(parse(metrics.render()), "provisiond_connected", service="demo") == 0
        assert "waiting for the directory: demo" in status_line(engine)
        slapd.write_password_file(secret)
        wait_for(lambda: mode_of(conn, dn) == "added", timeout=30, what="the entry processed")
        assert value(parse(metrics.render()), "provisiond_connected", service="demo") == 1


# -- `once` (issue 9.4): cron-driven sites get the same file, written once at the end ---------


def test_once_writes_the_metrics_file_at_the_end(slapd: Slapd, tmp_path: Path) -> None:
    site = once_site(slapd, tmp_path)
    started = time.time()
    result = site.once()
    assert result.returncode == 1, result.stderr  # one entry failed
    families = parse(site.prom.read_text())
    assert_two_added_one_failed(families)
    assert value(families, "provisiond_retries_total") == 0
    assert value(families, "provisiond_entries_in_progress") == 0
    assert value(families, "provisiond_entries_scheduled", service="demo", reason="retry") == 0
    assert value(families, "provisiond_connected", service="demo") == 1
    assert value(families, "provisiond_ready") == 1
    assert started <= value(families, "provisiond_last_sync_timestamp_seconds",
                            service="demo") <= time.time()
    assert site.prom.stat().st_mode & 0o777 == 0o644
    assert not list(site.prom.parent.glob(".*.tmp"))  # written atomically, nothing left over


def test_once_counters_keep_rising_from_run_to_run(slapd: Slapd, tmp_path: Path) -> None:
    """Each cron run is a new process: were it to write only its own counts, a run doing as
    much as the one before would leave the counters flat and increase() would see nothing."""
    site = once_site(slapd, tmp_path)
    assert site.once().returncode == 1
    add_item(site.conn, "three")
    result = site.once()
    assert result.returncode == 0, result.stderr  # the bad entry is settled, not retried
    families = parse(site.prom.read_text())
    assert value(families, "provisiond_entries_processed_total", service="demo",
                 outcome="success") == 3
    assert value(families, "provisiond_entries_processed_total", service="demo",
                 outcome="failure") == 1
    assert value(families, "provisiond_step_duration_seconds_count", service="demo",
                 step="write item file", outcome="success") == 3


def test_once_writes_connected_0_when_the_directory_is_down(slapd: Slapd,
                                                            tmp_path: Path) -> None:
    site = once_site(slapd, tmp_path)
    slapd.stop()
    result = site.once()
    assert result.returncode == 69, result.stderr
    families = parse(site.prom.read_text())
    assert value(families, "provisiond_connected", service="demo") == 0
    assert value(families, "provisiond_ready") == 0
    assert value(families, "provisiond_last_sync_timestamp_seconds", service="demo") == 0
    assert value(families, "provisiond_entries_processed_total", service="demo",
                 outcome="success") == 0


def test_a_run_carries_the_totals_of_the_file_it_replaces(tmp_path: Path) -> None:
    """What `once` reads back is exactly what the writer wrote, escaped labels included."""
    step = 'quote " backslash \\ newline \n end'
    before = Metrics(MetricsSettings(path=str(tmp_path / "provisiond.prom")))
    before.carry(Totals({("svc", "success"): 5, ("svc", "failure"): 2}, retries=3, lost=1))
    for seconds in (0.001, 0.3, 700.0):
        before.observe("svc", step, seconds, True)
    assert before.write()
    after = Metrics(MetricsSettings(path=str(tmp_path / "provisiond.prom")))
    after.carry(Totals({("svc", "success"): 1}))
    after.observe("svc", step, 0.3, True)
    assert write_run_metrics(after)
    families = parse(after.path.read_text())  # type: ignore[union-attr]
    assert value(families, "provisiond_entries_processed_total", service="svc",
                 outcome="success") == 6
    assert value(families, "provisiond_entries_processed_total", service="svc",
                 outcome="failure") == 2
    assert value(families, "provisiond_retries_total") == 3
    assert value(families, "provisiond_claims_lost_total") == 1
    ok = {"service": "svc", "step": step, "outcome": "success"}
    assert value(families, "provisiond_step_duration_seconds_count", **ok) == 4
    assert value(families, "provisiond_step_duration_seconds_bucket", **ok, le="0.005") == 1
    assert value(families, "provisiond_step_duration_seconds_bucket", **ok, le="0.5") == 3
    assert value(families, "provisiond_step_duration_seconds_bucket", **ok, le="+Inf") == 4
    assert value(families, "provisiond_step_duration_seconds_sum", **ok) == pytest.approx(700.601)


@pytest.mark.parametrize("text", [
    "not metrics at all\n",
    'provisiond_entries_processed_total{service="svc"} 4\n',  # no outcome
    'provisiond_entries_processed_total{service="svc",outcome="success"} -1\n',
    'provisiond_retries_total NaN\n',
    'provisiond_step_duration_seconds_sum{service="s",step="x",outcome="success"} +Inf\n',
    'provisiond_entries_processed_total{service="svc,outcome="success"} 1\n',
])
def test_a_file_that_cannot_be_read_back_starts_the_counters_from_zero(
    tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    prom = tmp_path / "provisiond.prom"
    prom.write_text(text)
    metrics = Metrics(MetricsSettings(path=str(prom)))
    with caplog.at_level("WARNING", logger="provisiond.metrics"):
        assert write_run_metrics(metrics)
    assert "metrics-not-carried" in caplog.text
    assert parse(prom.read_text())["provisiond_retries"].samples[0].value == 0


def test_stop_markers_are_not_counted_as_queued_entries(slapd: Slapd, tmp_path: Path) -> None:
    """A shutdown queues one stop marker per worker; the daemon's last write and `once`'s
    only one come after it and must show an empty queue."""
    engine = Engine(load_config(write_config(tmp_path, slapd, demo_service(tmp_path))))
    engine._queue.put((2, 0, None))
    assert engine.load() == (0, 0)


def test_waiting_and_parked_entries_are_shown_by_reason(tmp_path: Path) -> None:
    """An entry waiting for a referenced entry is scheduled for `wait`, not for a date; those
    parked for a serialization key or a batch render are counted apart."""
    from datetime import UTC, datetime

    from provisiond.core.batches import Parked
    from provisiond.core.runtime import Work
    from tests.core.offline import offline_config

    config = offline_config(tmp_path, demo_service(tmp_path / "root"))
    engine = Engine(config)
    later = datetime.now(UTC) + timedelta(hours=1)
    engine.scheduler.add(("wait", "demo", "u1"), later, Work("demo", "u1", "cn=a"))
    engine.scheduler.add(("retry", "demo", "u2"), later, Work("demo", "u2", "cn=b", attempt=1))
    engine.scheduler.add(("date", "demo", "u3"), later, Work("demo", "u3", "cn=c"))
    engine.batches.park(Parked(tmp_path / "index.conf", 0.0, None, None))
    metrics = Metrics(MetricsSettings())
    metrics.attach(engine)
    families = parse(metrics.render())
    for reason in ("wait", "retry", "date"):
        assert value(families, "provisiond_entries_scheduled", service="demo",
                     reason=reason) == 1, reason
    assert value(families, "provisiond_entries_parked", reason="batch") == 1
    assert value(families, "provisiond_entries_parked", reason="serialize") == 0
