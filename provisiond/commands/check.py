"""`provisiond check`: configuration, templates, hooks, bind, bases, sync support."""

from __future__ import annotations

import argparse

NAME = "check"
HELP = "check the configuration, templates, hooks and the server; one line per check"
NEEDS_CONFIG = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("Exit status: 0 every check passed, 1 a check failed, 69 only the "
                     "directory failed (unreachable, TLS not verified, bind refused), "
                     "78 configuration error.")


def run(args: argparse.Namespace) -> int:
    from provisiond.operate.check import run_checks

    return run_checks(args.loaded_config)
