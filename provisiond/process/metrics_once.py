"""The metrics file of a `provisiond once` run: written once, at the end, counters carried on.

A cron-driven site runs `once` every few minutes, each run a new process. The daemon's counters
live as long as its process; were each run to write only its own counts, a run that processed
as many entries as the one before would leave a counter flat and `increase()` would see
nothing. So the run adds its counts to the totals in the file the previous run (or a daemon
that has since stopped) left, and Prometheus sees counters that only grow. The file is the one
metrics.py writes, in the subset of the exposition format that module produces; that is all
this module reads (no client library at run time). A missing file starts from zero; an
unreadable or foreign one too, with a warning: Prometheus takes the drop for a counter reset,
which `rate()` and `increase()` handle.

A site runs either the daemon or `once` from cron on one configuration, not both: a daemon
rewrites the file with its own totals every few seconds.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

from provisiond.logfmt import kv
from provisiond.process.metrics import (
    BUCKETS,
    LOST_RACES,
    PROCESSED,
    RETRIES,
    STEP_DURATION,
    Histogram,
    Metrics,
    Totals,
)

log = logging.getLogger("provisiond.metrics")

_SAMPLE = re.compile(r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')
_ESCAPE = re.compile(r"\\(.)")


def _unescape(value: str) -> str:
    return _ESCAPE.sub(lambda match: "\n" if match[1] == "n" else match[1], value)


def _labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    position = 0
    while position < len(text):
        match = _LABEL.match(text, position)
        if match is None:
            raise ValueError(f"labels not understood: {{{text}}}")
        labels[match[1]] = _unescape(match[2])
        position = match.end()
    return labels


def _count(value: float) -> int:
    if not (math.isfinite(value) and value >= 0 and value == int(value)):
        raise ValueError(f"not a count: {value}")
    return int(value)


def parse_totals(text: str) -> Totals:
    """The counter totals in a metrics file; ValueError if it is not one metrics.py wrote."""
    processed: dict[tuple[str, str], int] = {}
    retries = lost = 0
    steps: dict[tuple[str, str, str], Histogram] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.fullmatch(line)
        if match is None:
            raise ValueError(f"line {number}: not a sample")
        name = match["name"]
        try:
            labels, value = _labels(match["labels"] or ""), float(match["value"])
            if name == PROCESSED:
                processed[(labels["service"], labels["outcome"])] = _count(value)
            elif name == RETRIES:
                retries = _count(value)
            elif name == LOST_RACES:
                lost = _count(value)
            elif name.startswith(STEP_DURATION + "_"):
                key = (labels["service"], labels["step"], labels["outcome"])
                _step_sample(steps.setdefault(key, Histogram()), name[len(STEP_DURATION):],
                             labels, value)
        except KeyError as exc:
            raise ValueError(f"line {number}: no label {exc}") from exc
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}") from exc
    return Totals(processed, retries, lost, steps)


def _step_sample(histogram: Histogram, suffix: str, labels: dict[str, str],
                 value: float) -> None:
    if suffix == "_sum":
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"not a duration: {value}")
        histogram.sum = value
    elif suffix == "_count":
        histogram.total = _count(value)
    elif suffix == "_bucket" and labels["le"] != "+Inf":
        bound = float(labels["le"])
        # A bound this version does not use (BUCKETS changed) cannot be carried: dropped.
        if bound in BUCKETS:
            histogram.counts[BUCKETS.index(bound)] = _count(value)


def previous_totals(path: Path) -> Totals | None:
    """The totals of the file at `path`; None if there is none or it cannot be read back."""
    try:
        return parse_totals(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        log.warning(kv(event="metrics-not-carried", path=str(path), reason=str(exc),
                       msg="counters start again from zero"))
        return None


def write_run_metrics(metrics: Metrics) -> bool:
    """At the end of a run: carry the previous file's totals into `metrics` and replace the
    file atomically. False (logged) if metrics are off or the write failed."""
    path = metrics.path
    if path is None:
        return False
    totals = previous_totals(path)
    if totals is not None:
        metrics.carry(totals)
    return metrics.write()
