"""`provisiond retry DN`: put a failed entry back to its request (adding -> add, state 0,
ReturnValue removed) in one atomic modify; entries that are not failed are refused."""

from __future__ import annotations

import argparse
import sys

NAME = "retry"
HELP = "put a failed entry back to its request so the daemon runs it again"
NEEDS_CONFIG = True
WRITES_STATE = False  # only reads the state directory: runs without write access to it

EXIT_EPILOG = ("Exit status: 0 ok, 1 failures found, 64 usage, 65 entry not in a state this "
               "applies to, 66 no such entry, 69 directory unavailable, 75 entry changed "
               "meanwhile, 78 configuration error.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dn", metavar="DN", help="the failed entry's distinguished name")
    parser.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    parser.epilog = EXIT_EPILOG


def run(args: argparse.Namespace) -> int:
    from provisiond.directory.connection import DirectoryUnavailable
    from provisiond.exitcodes import EX_UNAVAILABLE
    from provisiond.operate.common import OperateError
    from provisiond.operate.retry import main

    try:
        return main(args.loaded_config, args.dn, sys.stdout, as_json=args.json)
    except OperateError as exc:
        print(f"provisiond retry: {exc}", file=sys.stderr)
        return exc.status
    except DirectoryUnavailable as exc:
        print(f"provisiond retry: directory unavailable: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
