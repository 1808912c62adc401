"""Command line entry point: `provisiond [--config FILE] COMMAND ...`.

Exit statuses follow sysexits(3), which is what Debian admins and systemd units expect:
0 ok, 1 entries failed (once) or checks failed, 64 usage, 69 directory unavailable,
75 already running, 78 configuration error (file, key and reason on stderr).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from provisiond import __version__
from provisiond.commands import COMMANDS
from provisiond.exitcodes import EX_CONFIG, EX_USAGE


def command_module(name: str) -> str:
    """`run` -> provisiond.commands.run; `kinds.backup.x` -> provisiond.kinds.backup.x."""
    return f"provisiond.{name}" if "." in name else f"provisiond.commands.{name}"


def _modules() -> list[ModuleType]:
    return [importlib.import_module(command_module(name)) for name in COMMANDS]


def build_parser(modules: Sequence[ModuleType]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="provisiond",
        description="Provision backup-appliance storage from LDAP entries.",
        epilog="Exit status: 0 ok, 1 failures, 64 usage, 69 directory unavailable, "
        "75 already running, 78 configuration error.",
    )
    parser.add_argument("--version", action="version", version=f"provisiond {__version__}")
    parser.add_argument("--config", "-c", help="configuration file "
                        "(default /etc/provisiond/provisiond.yaml)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in modules:
        sub = commands.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        # also after the command (`provisiond check --config X`), as admins tend to write it
        sub.add_argument("--config", "-c", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        module.add_arguments(sub)
        sub.set_defaults(module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(_modules())
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EX_USAGE
    module = args.module
    if getattr(module, "NEEDS_CONFIG", False):
        from provisiond.config import ConfigError, load_config

        try:
            args.loaded_config = load_config(
                args.config, check_state=getattr(module, "WRITES_STATE", True))
        except ConfigError as exc:
            for error in exc.errors:
                print(f"provisiond: configuration error: {error.line()}", file=sys.stderr)
            return EX_CONFIG
    return int(module.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
