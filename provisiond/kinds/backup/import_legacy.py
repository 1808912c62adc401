"""`provisiond import-legacy FILE.conf`: migrate from stoney cloud's prov-backup-rsnapshot.

Prints the equivalent provisiond YAML on stdout. The bind password goes to a private secret
file (mode 0600), never to stdout; the legacy cookie file becomes the service's starting
cookie in the state directory, so provisiond resumes where the old daemon stopped. Everything
is checked before anything is written, and a different secret or cookie already in place is
only replaced with --force.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from provisiond.exitcodes import EX_CANTCREAT, EX_DATAERR, EX_NOINPUT

NAME = "import-legacy"
HELP = ("convert a prov-backup-rsnapshot INI file: print the YAML configuration, store the "
        "password and the cookie")
NEEDS_CONFIG = False



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("legacy_config", metavar="FILE.conf",
                        help="the legacy daemon's INI configuration file")
    parser.add_argument("--secret-file", default="/etc/provisiond/bind.secret",
                        help="where the bind password is written, mode 0600 "
                        "(default: %(default)s)")
    parser.add_argument("--state-dir", default="/var/lib/provisiond",
                        help="provisiond's state directory; the cookie is stored there as "
                        "<service>.cookie (default: %(default)s)")
    parser.add_argument("--service", default="backup",
                        help="name of the service in the new configuration (default: "
                        "%(default)s)")
    parser.add_argument("--cookie-file",
                        help="the legacy cookie file (default: [Database] COOKIE_FILE)")
    parser.add_argument("--force", action="store_true",
                        help="replace a different secret file or stored cookie")


def _say(message: str) -> None:
    print(f"provisiond import-legacy: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from provisiond.directory.cookie import CookieStore
    from provisiond.host.files import atomic_write
    from provisiond.kinds.backup.legacy import LegacyError, convert, legacy_cookie, parse_ini

    source = Path(args.legacy_config)
    try:
        text = source.read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        _say(f"cannot read {source}: {getattr(exc, 'strerror', None) or exc}")
        return EX_NOINPUT
    secret = Path(args.secret_file)
    if not secret.is_absolute():
        _say(f"--secret-file {secret}: must be an absolute path (the configuration names it)")
        return EX_DATAERR
    try:
        conversion = convert(parse_ini(text, str(source)), secret_file=str(secret),
                             state_dir=str(Path(args.state_dir).absolute()),
                             service=args.service)
        cookie, cookie_from = conversion.default_cookie, "[Database] DEFAULT_COOKIE"
        cookie_path = args.cookie_file or conversion.cookie_file
        if cookie_path:
            try:
                cookie_text = Path(cookie_path).read_text(encoding="utf-8")
            except FileNotFoundError:
                _say(f"no cookie file {cookie_path}: the first start reads all pending "
                     "requests (entries already provisioned are left alone)")
            else:
                try:
                    cookie = legacy_cookie(cookie_text) or cookie
                except LegacyError as exc:
                    raise LegacyError(f"cookie file {cookie_path}: {exc}") from exc
                cookie_from = cookie_path
    except LegacyError as exc:
        _say(str(exc))
        return EX_DATAERR
    except OSError as exc:
        _say(f"cannot read the cookie file: {exc.strerror}")
        return EX_NOINPUT

    store = CookieStore(Path(args.state_dir), args.service)
    try:
        stored = store.load()
    except ValueError:
        stored = "(unreadable)"
    if cookie and stored and stored != cookie and not args.force:
        _say(f"{store.path} already holds another cookie; use --force to replace it")
        return EX_CANTCREAT
    password = conversion.password
    if password is not None:
        try:
            current = secret.read_text(encoding="utf-8").splitlines()[:1]
        except FileNotFoundError:
            current = None
        except OSError as exc:
            _say(f"cannot read {secret}: {exc.strerror}")
            return EX_CANTCREAT
        if current is not None and current != [password] and not args.force:
            _say(f"{secret} already holds another password; use --force to replace it")
            return EX_CANTCREAT

    try:
        if password is not None:
            secret.parent.mkdir(parents=True, exist_ok=True)
            if atomic_write(secret, (password + "\n").encode(), mode=0o600):
                _say(f"wrote the bind password to {secret} (mode 0600)")
        if cookie:
            if stored != cookie:
                store.save(cookie)
                _say(f"stored the starting cookie from {cookie_from} in {store.path}")
        else:
            _say("no starting cookie: the first start reads all pending requests")
    except OSError as exc:
        _say(f"cannot write {exc.filename or ''}: {exc.strerror}")
        return EX_CANTCREAT
    for warning in conversion.warnings:
        _say(f"warning: {warning}")
    sys.stdout.write(conversion.yaml)
    return 0
