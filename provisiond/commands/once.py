"""`provisiond once`: one refresh pass, everything actionable processed (for cron and tests)."""

from __future__ import annotations

import argparse

NAME = "once"
HELP = "one refresh pass; exit 0 only if nothing failed"
NEEDS_CONFIG = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def run(args: argparse.Namespace) -> int:
    from provisiond.daemon import configure_logging
    from provisiond.engine import Engine

    configure_logging(args.loaded_config, foreground=True)
    return Engine(args.loaded_config).once()
