"""Command line: `provisiond run|once|check|sample-config`.

Exit statuses follow sysexits(3), which is what Debian admins and systemd units expect:
0 ok, 1 entries failed (once), 64 usage, 69 directory unavailable, 75 already running,
78 configuration error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from provisiond import __version__
from provisiond.config import ConfigError, load_config, sample_config

EX_OK = 0
EX_USAGE = 64
EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75
EX_CONFIG = 78


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="provisiond",
        description="Provision backup-appliance storage from LDAP entries.",
    )
    parser.add_argument("--version", action="version", version=f"provisiond {__version__}")
    parser.add_argument("--config", "-c", help="configuration file "
                        "(default /etc/provisiond/provisiond.yaml)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", help="watch the directory and provision (foreground)")
    run.add_argument("--daemon", action="store_true", help="detach and write the pid file")
    commands.add_parser("once", help="one refresh pass; exit 0 only if nothing failed")
    commands.add_parser("check", help="check the configuration, templates, hooks and server")
    commands.add_parser("sample-config", help="print a commented example configuration")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EX_USAGE
    if args.command == "sample-config":
        sys.stdout.write(sample_config())
        return EX_OK
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"provisiond: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    if args.command == "check":
        from provisiond.check import run_checks

        return run_checks(config)
    if args.command == "once":
        from provisiond.daemon import configure_logging
        from provisiond.engine import Engine

        configure_logging(config, foreground=True)
        return Engine(config).once()
    from provisiond.daemon import AlreadyRunning, run

    try:
        return run(args.config, config, daemonize=args.daemon)
    except AlreadyRunning as exc:
        print(f"provisiond: {exc}", file=sys.stderr)
        return EX_TEMPFAIL


if __name__ == "__main__":
    raise SystemExit(main())
