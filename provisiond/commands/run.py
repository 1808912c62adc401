"""`provisiond run [--daemon]`: watch the directory and provision until stopped."""

from __future__ import annotations

import argparse
import sys

from provisiond.exitcodes import EX_TEMPFAIL

NAME = "run"
HELP = "watch the directory and provision (foreground, for systemd)"
NEEDS_CONFIG = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--daemon", action="store_true", help="detach and write the pid file")


def run(args: argparse.Namespace) -> int:
    from provisiond.host.hostlock import HostConflict
    from provisiond.process.daemon import AlreadyRunning
    from provisiond.process.daemon import run as serve

    try:
        return serve(args.config, args.loaded_config, daemonize=args.daemon)
    except (AlreadyRunning, HostConflict) as exc:
        print(f"provisiond: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
