"""`provisiond sample-config`: the commented example configuration, generated from the schema."""

from __future__ import annotations

import argparse
import sys

NAME = "sample-config"
HELP = "print a commented example configuration"
NEEDS_CONFIG = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def run(args: argparse.Namespace) -> int:
    del args
    from provisiond.config import sample_config

    sys.stdout.write(sample_config())
    return 0
