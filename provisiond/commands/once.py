"""`provisiond once`: one refresh pass, everything actionable processed (for cron and tests).

With `metrics.path` set, the run writes the metrics file once, at the end (metrics_once.py):
also after an unreachable directory (exit 69: `provisiond_connected` 0 says why), not when
another daemon holds this host's files (exit 75: the file is that daemon's to write).
"""

from __future__ import annotations

import argparse
import sys

from provisiond.exitcodes import EX_TEMPFAIL

NAME = "once"
HELP = "one refresh pass; exit 0 only if nothing failed"
NEEDS_CONFIG = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def run(args: argparse.Namespace) -> int:
    from provisiond.core.engine import Engine
    from provisiond.host.hostlock import HostConflict
    from provisiond.process.daemon import configure_logging
    from provisiond.process.metrics import Metrics
    from provisiond.process.metrics_once import write_run_metrics

    config = args.loaded_config
    configure_logging(config, foreground=True)
    metrics = Metrics(config.metrics)
    try:
        engine = Engine(config)
        metrics.attach(engine)  # before any work: every step is observed
        code = engine.once()
    except HostConflict as exc:
        print(f"provisiond: {exc}", file=sys.stderr)
        return EX_TEMPFAIL  # the other daemon holds the file
    write_run_metrics(metrics)
    return code
