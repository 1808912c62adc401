"""What the operator commands (`status`, `render`, `retry`, `diagnose`) share: exit statuses,
finding the service an entry belongs to, reading entries with paging, and formatting ages.

These commands are read-only except `retry`, and they never go through the engine: they open
their own connection, so they work the same whether a daemon is running or not.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime

import ldap3
from ldap3.core.exceptions import LDAPException

from provisiond.aggregates.references import within
from provisiond.directory.access import NO_SUCH_OBJECT, Entry, paged_search
from provisiond.directory.connection import ConnectionFactory, DirectoryUnavailable
from provisiond.directory.decode import dn_key as parse_dn_key
from provisiond.exitcodes import EX_NOINPUT, EX_USAGE
from provisiond.model.settings import Config, ServiceSpec

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
               scope: str = "sub") -> list[Entry]:
        """Every matching entry, a page at a time (no server size limit cuts the answer)."""
        try:
            found = paged_search(self.connection, base, search_filter,
                                 [*attributes, *OPERATIONAL], scope)
        except (LDAPException, OSError) as exc:
            raise DirectoryUnavailable(f"search under {base} failed: {exc}") from exc
        code = (self.connection.result or {}).get("result", 0)
        if code != 0 and code != NO_SUCH_OBJECT:
            raise DirectoryUnavailable(f"search under {base} failed: "
                                       f"{(self.connection.result or {}).get('description')}")
        return found

    def read(self, dn: str, attributes: Sequence[str],
             search_filter: str = "(objectClass=*)") -> Entry | None:
        for entry in self.search(dn, search_filter, attributes, scope="base"):
            return entry
        return None


def dn_key(dn: str) -> tuple[tuple[str, str], ...]:
    """A DN's RDNs for comparisons (decode.dn_key); a usage error for what is not a DN."""
    try:
        return parse_dn_key(dn)
    except ValueError as exc:
        raise OperateError(f"{dn!r} is not a valid DN: {exc}", EX_USAGE) from exc


def find_entry(config: Config, reader: Reader, dn: str) -> tuple[ServiceSpec, Entry]:
    """The entry at `dn` and the service that manages it (its base and filter match)."""
    dn_key(dn)  # a usage error for something that is not a DN
    candidates = [spec for spec in config.services if within(dn, spec.base, spec.scope)]
    exists = False
    for spec in candidates:
        attributes = spec.mirrored_attributes()
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
