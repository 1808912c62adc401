"""`provisiond diagnose -o FILE.tar.gz`: a support bundle (version, redacted configuration,
status, checks, recent syslog lines, template and hook listings); never the secret file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "diagnose"
HELP = "write a diagnostics bundle (secrets redacted) for a support request"
NEEDS_CONFIG = False  # works with a broken configuration: the error goes into the bundle


DEFAULT_LINES = 2000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", metavar="FILE.tar.gz", required=True,
                        help="where to write the bundle (mode 0600)")
    parser.add_argument("--lines", type=int, default=DEFAULT_LINES, metavar="N",
                        help=f"recent syslog lines to include (default {DEFAULT_LINES})")
    parser.epilog = ("Exit status: 0 written, 73 the file cannot be written. The bundle holds "
                     "the configuration with secrets redacted; the bind password file is never "
                     "included.")


def run(args: argparse.Namespace) -> int:
    from provisiond.exitcodes import EX_CANTCREAT
    from provisiond.operate.diagnose import build, write_private

    data, names = build(args.config, lines=args.lines)
    output = Path(args.output)
    try:
        write_private(output, data)
    except OSError as exc:
        print(f"provisiond diagnose: cannot write {output}: {exc.strerror or exc}",
              file=sys.stderr)
        return EX_CANTCREAT
    print(f"wrote {output} ({len(data)} bytes): {', '.join(names)}")
    return 0
