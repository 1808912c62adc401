"""`provisiond status`: per service, entries by mode and state, failures, stuck and scheduled
entries, the cookie's age, and whether a daemon is running."""

from __future__ import annotations

import argparse
import sys

NAME = "status"
HELP = "show entries by mode and state, failed, stuck and scheduled entries, cookies, daemon"
NEEDS_CONFIG = True
WRITES_STATE = False  # only reads the state directory: runs without write access to it


DEFAULT_STUCK_AFTER = 900.0  # provisiond.operate.status.DEFAULT_STUCK_AFTER (not imported: ldap3 is slow)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    parser.add_argument("--stuck-after", type=float, default=DEFAULT_STUCK_AFTER,
                        metavar="SECONDS",
                        help="an entry at -ing without a ReturnValue, unchanged for longer, "
                        f"counts as stuck (default {DEFAULT_STUCK_AFTER:g})")
    parser.epilog = ("Exit status: 0 nothing failed or stuck, 1 failed or stuck entries, "
                     "69 directory unavailable (what is known locally is still shown), "
                     "78 configuration error.")


def run(args: argparse.Namespace) -> int:
    from provisiond.operate.status import main

    return main(args.loaded_config, sys.stdout, as_json=args.json, stuck_after=args.stuck_after)
