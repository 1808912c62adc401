"""`provisiond render DN [--mode add|modify|delete]`: preview what the steps would write and
run for an entry (a diff against the files on disk, hook argv), changing nothing."""

from __future__ import annotations

import argparse
import sys

from provisiond.model.states import request_choices

MODES = request_choices()  # of every lifecycle; the preview checks the entry's service has it

NAME = "render"
HELP = "preview an entry's steps: diffs of the files it would write, the hooks it would run"
NEEDS_CONFIG = True
WRITES_STATE = False  # only reads the state directory: runs without write access to it

EXIT_EPILOG = ("Exit status: 0 ok, 1 failures found, 64 usage, 65 entry not in a state this "
               "applies to, 66 no such entry, 69 directory unavailable, 75 entry changed "
               "meanwhile, 78 configuration error.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dn", metavar="DN", help="the entry's distinguished name")
    parser.add_argument("--mode", choices=MODES,
                        help="the steps of this mode (default: what the entry requests, or "
                        "the mode it is at)")
    parser.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    parser.epilog = ("Nothing is written and no hook is run. " + EXIT_EPILOG
                     + " Status 1: a step would fail or the entry's values are invalid.")


def run(args: argparse.Namespace) -> int:
    from provisiond.directory.connection import DirectoryUnavailable
    from provisiond.exitcodes import EX_UNAVAILABLE
    from provisiond.operate.common import OperateError
    from provisiond.operate.preview import main

    try:
        return main(args.loaded_config, args.dn, sys.stdout, mode=args.mode, as_json=args.json)
    except OperateError as exc:
        print(f"provisiond render: {exc}", file=sys.stderr)
        return exc.status
    except DirectoryUnavailable as exc:
        print(f"provisiond render: directory unavailable: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
