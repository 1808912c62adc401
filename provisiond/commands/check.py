"""`provisiond check`: configuration, templates, hooks, bind, bases, sync support."""

from __future__ import annotations

import argparse

NAME = "check"
HELP = "check the configuration, templates, hooks and the server; one line per check"
NEEDS_CONFIG = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def run(args: argparse.Namespace) -> int:
    from provisiond.check import run_checks

    return run_checks(args.loaded_config)
