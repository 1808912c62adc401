"""What the operator commands (`status`, `render`, `retry`, `diagnose`) share: exit statuses,
finding the service an entry belongs to, reading entries with paging, and formatting ages.

These commands are read-only except `retry`, and they never go through the engine: they open
their own connection, so they work the same whether a daemon is running or not.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.dn import parse_dn

from provisiond.config.model import Config, ServiceSpec
from provisiond.directory.access import SCOPES, Entry, entry_from_response
from provisiond.directory.connection import ConnectionFactory, DirectoryUnavailable

# sysexits(3)
EX_OK = 0
EX_FAILED = 1  # something the operator should look at (failed entries, a step that would fail)
EX_USAGE = 64
EX_DATAERR = 65  # the entry is not in a state the command applies to
EX_NOINPUT = 66  # no such entry, or no service manages it
EX_UNAVAILABLE = 69  # the directory cannot be reached
EX_CANTCREAT = 73  # the output file cannot be written
EX_TEMPFAIL = 75  # the entry changed meanwhile; look again
EX_CONFIG = 78

PAGED_RESULTS_OID = "1.2.840.113556.1.4.319"
PAGE_SIZE = 500
OPERATIONAL = ("entryUUID", "modifyTimestamp")


class OperateError(Exception):
    """A reason the command cannot go on, with the exit status it should end with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Reader:
    """One bound connection for a command's reads (and the one write of `retry`)."""

    def __init__(self, config: Config, *, write: bool = False) -> None:
        self.factory = ConnectionFactory(config.ldap)
        self.connection: ldap3.Connection = self.factory.open(write=write)

    def close(self) -> None:
        try:
            self.connection.unbind()
        except (LDAPException, OSError):
            pass

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def search(self, base: str, search_filter: str, attributes: Sequence[str],
               scope: str = "sub") -> Iterator[Entry]:
        """Every matching entry, a page at a time (no server size limit cuts the answer)."""
        wanted = list(dict.fromkeys([*attributes, *OPERATIONAL]))
        cookie: bytes | None = None
        while True:
            try:
                self.connection.search(
                    base, search_filter, search_scope=SCOPES[scope], attributes=wanted,
                    dereference_aliases=ldap3.DEREF_NEVER,
                    paged_size=PAGE_SIZE if scope != "base" else None, paged_cookie=cookie,
                )
            except (LDAPException, OSError) as exc:
                raise DirectoryUnavailable(f"search under {base} failed: {exc}") from exc
            result = self.connection.result or {}
            code = result.get("result", 0)
            if code == 32:  # noSuchObject
                return
            if code != 0:
                raise DirectoryUnavailable(
                    f"search under {base} failed: {result.get('description')} "
                    f"({result.get('message') or code})")
            for response in self.connection.response or []:
                entry = entry_from_response(response)
                if entry is not None:
                    yield entry
            control = (result.get("controls") or {}).get(PAGED_RESULTS_OID) or {}
            cookie = (control.get("value") or {}).get("cookie") or None
            if not cookie:
                return

    def read(self, dn: str, attributes: Sequence[str],
             search_filter: str = "(objectClass=*)") -> Entry | None:
        for entry in self.search(dn, search_filter, attributes, scope="base"):
            return entry
        return None


def dn_key(dn: str) -> tuple[tuple[str, str], ...]:
    """A DN's RDNs, lower-cased, for comparisons that ignore case and spacing."""
    try:
        parts = parse_dn(dn, escape=False, strip=True)
    except (LDAPException, ValueError) as exc:
        raise OperateError(f"{dn!r} is not a valid DN: {exc}", EX_USAGE) from exc
    return tuple((attribute.lower(), value.lower()) for attribute, value, _sep in parts)


def is_below(dn: str, base: str, scope: str = "sub") -> bool:
    entry, suffix = dn_key(dn), dn_key(base)
    if len(entry) < len(suffix) or entry[len(entry) - len(suffix):] != suffix:
        return False
    depth = len(entry) - len(suffix)
    return {"base": depth == 0, "one": depth == 1}.get(scope, True)


def find_entry(config: Config, reader: Reader, dn: str) -> tuple[ServiceSpec, Entry]:
    """The entry at `dn` and the service that manages it (its base and filter match)."""
    dn_key(dn)  # a usage error for something that is not a DN
    candidates = [spec for spec in config.services if is_below(dn, spec.base, spec.scope)]
    exists = False
    for spec in candidates:
        attributes = [*spec.ldap_attributes(), *(o.attribute for o in spec.outputs)]
        entry = reader.read(dn, attributes, spec.filter)
        if entry is not None:
            return spec, entry
    if reader.read(dn, ["1.1"]) is not None:
        exists = True
    if not exists:
        raise OperateError(f"no entry {dn}", EX_NOINPUT)
    names = ", ".join(f"{s.name} ({s.base})" for s in config.services) or "none configured"
    raise OperateError(f"{dn} is not managed by any service (services: {names})", EX_NOINPUT)


def parse_generalized_time(value: str | None) -> datetime | None:
    """LDAP GeneralizedTime (modifyTimestamp: 20261122082137Z) as an aware UTC datetime."""
    if not value:
        return None
    text = value.strip().rstrip("Z").split(".")[0]
    try:
        return datetime.strptime(text[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def human_age(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def iso(moment: datetime | float | None) -> str | None:
    if moment is None:
        return None
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def shown_time(moment: datetime | float | None) -> str:
    text = iso(moment)
    return text.replace("T", " ").replace("Z", " UTC") if text else "never"


def terminal_safe(text: str) -> str:
    """LDAP values are printed to a terminal: control characters become visible escapes."""
    return "".join(c if c.isprintable() or c == " " else f"\\x{ord(c):02x}" for c in text)


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)
