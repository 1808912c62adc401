"""Reads and writes the engine makes outside the change stream.

Workers each keep their own synchronous connection (ldap3 connections are not thread-safe)
and reuse it, instead of the legacy daemon's new TCP connection per write. A broken
connection is reopened once; if that fails too the caller gets `DirectoryUnavailable`, which
the engine treats as transient.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import ldap3
from ldap3.core.exceptions import LDAPException

from provisiond.directory.connection import ConnectionFactory, DirectoryUnavailable
from provisiond.directory.decode import response_dn, text_attributes
from provisiond.directory.modify import send_modify

warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"pyasn1\..*")

SCOPES = {"base": ldap3.BASE, "one": ldap3.LEVEL, "sub": ldap3.SUBTREE}
# Result codes that mean "the server or the connection", not "the request".
UNAVAILABLE_RESULTS = {51, 52, 80, 81, -1}
INCOMPLETE_RESULTS = {3, 4, 11}  # time/size limit exceeded, adminLimitExceeded
NO_SUCH_OBJECT = 32
PAGED_RESULTS_OID = "1.2.840.113556.1.4.319"
PAGE_SIZE = 500
T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    dn: str
    uuid: str
    attributes: Mapping[str, tuple[str, ...]]  # lowercased names


@dataclass(frozen=True)
class WriteResult:
    ok: bool
    code: int
    description: str


def entry_from_response(response: Mapping[str, Any]) -> Entry | None:
    """An Entry from one of ldap3's response dicts (None for references and the like)."""
    if response.get("type") != "searchResEntry":
        return None
    attributes = text_attributes(response.get("raw_attributes") or {})
    uuid = (attributes.get("entryuuid") or ("",))[0].lower()
    return Entry(dn=response_dn(response), uuid=uuid, attributes=attributes)


class IncompleteResult(DirectoryUnavailable):
    """The server cut a search short (a size or time limit): acting on part of the answer
    would take the missing entries for absent ones."""


def paged_search(connection: ldap3.Connection, base: str, search_filter: str,
                 attributes: Sequence[str], scope: str = "sub") -> list[Entry]:
    """The one way provisiond reads several entries: a page at a time (the simple paged
    results control, so no server size limit applies), with entryUUID. A base that does not
    exist matches nothing; a result cut short raises IncompleteResult; other errors raise
    LDAPException (the caller decides whether to reconnect)."""
    wanted = list(dict.fromkeys([*attributes, "entryUUID"]))
    found: list[Entry] = []
    cookie: bytes | None = None
    while True:
        connection.search(
            base, search_filter, search_scope=SCOPES[scope], attributes=wanted,
            dereference_aliases=ldap3.DEREF_NEVER,
            paged_size=PAGE_SIZE if scope != "base" else None, paged_cookie=cookie,
        )
        result = connection.result or {}
        code = result.get("result", 0)
        if code == NO_SUCH_OBJECT:
            return []
        if code in INCOMPLETE_RESULTS:
            raise IncompleteResult(f"search under {base} was cut short: "
                                   f"{result.get('description')} ({code})")
        if code != 0:
            if code in UNAVAILABLE_RESULTS:
                return found  # the caller sees the code on the connection and reconnects
            raise LDAPException(f"search under {base} failed: {result.get('description')} "
                                f"({result.get('message') or code})")
        found += [e for e in map(entry_from_response, connection.response or []) if e]
        control = (result.get("controls") or {}).get(PAGED_RESULTS_OID) or {}
        cookie = (control.get("value") or {}).get("cookie") or None
        if not cookie:
            return found


class Directory:
    def __init__(self, factory: ConnectionFactory) -> None:
        self.factory = factory

    def _with_connection(self, write: bool, operation: Callable[[ldap3.Connection], T]) -> T:
        for attempt in (1, 2):
            connection = self.factory.thread_connection(write=write)
            try:
                result = operation(connection)
            except LDAPException as exc:
                self.factory.drop_thread_connection()
                if attempt == 2:
                    raise DirectoryUnavailable(str(exc)) from exc
                continue
            code = connection.result.get("result", 0) if connection.result else 0
            if code in UNAVAILABLE_RESULTS:
                self.factory.drop_thread_connection()
                if attempt == 2:
                    raise DirectoryUnavailable(str(connection.result.get("description")))
                continue
            return result
        raise AssertionError("unreachable")

    def search(
        self, base: str, search_filter: str, attributes: Sequence[str], scope: str = "sub"
    ) -> list[Entry]:
        """Every matching entry (paged); raises DirectoryUnavailable, IncompleteResult."""
        return self._with_connection(
            False, lambda connection: paged_search(connection, base, search_filter,
                                                   attributes, scope))

    def read(self, dn: str, attributes: Sequence[str]) -> Entry | None:
        found = self.search(dn, "(objectClass=*)", attributes, scope="base")
        return found[0] if found else None

    def find_uuid(self, base: str, uuid: str, attributes: Sequence[str]) -> Entry | None:
        found = self.search(base, f"(entryUUID={uuid})", attributes)
        return found[0] if found else None

    def whoami(self) -> str:
        """The identity the writes are made as (RFC 4532), as a DN: what the server records
        as modifiersName. Raises DirectoryUnavailable."""

        def run(connection: ldap3.Connection) -> str:
            answer = connection.extend.standard.who_am_i()
            if not answer:
                raise LDAPException("the server did not answer Who am I?")
            return str(answer).removeprefix("dn:")

        return self._with_connection(True, run)

    def modify(
        self,
        dn: str,
        changes: Mapping[str, list[tuple[str, list[str]]]],
        controls: Sequence[tuple[str, bool, bytes]] | None = None,
    ) -> WriteResult:
        def run(connection: ldap3.Connection) -> WriteResult:
            result = send_modify(connection, dn, changes, list(controls or ()))
            return WriteResult(
                ok=result.get("result") == 0,
                code=int(result.get("result", -1)),
                description=str(result.get("description", "")),
            )

        return self._with_connection(True, run)
