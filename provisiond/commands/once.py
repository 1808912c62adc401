"""`provisiond once`: one refresh pass, everything actionable processed (for cron and tests)."""

from __future__ import annotations

import argparse
import sys

NAME = "once"
HELP = "one refresh pass; exit 0 only if nothing failed"
NEEDS_CONFIG = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def run(args: argparse.Namespace) -> int:
    from provisiond.daemon import configure_logging
    from provisiond.engine import Engine
    from provisiond.hostlock import HostConflict

    configure_logging(args.loaded_config, foreground=True)
    try:
        return Engine(args.loaded_config).once()
    except HostConflict as exc:
        print(f"provisiond: {exc}", file=sys.stderr)
        return 75  # EX_TEMPFAIL: the other daemon holds the file
