"""The bookkeeping RFC 4533 leaves to the client, as pure code: no connection, no thread.

The session remembers which UUIDs it believes match and numbers the changes it hands to the
listener. When the server cannot replay its session log (it is lost on restart) it sends a
present phase listing the survivors; everything known and not listed is reported as gone. A
cookie is only passed on when every change it covers has been handed to the listener, so a
consumer that persists (cookie, covers) after acting on change `covers` can resume exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from provisiond.logfmt import kv

from .controls import SYNC_STATE_OID, SyncDone, SyncInfo, decode_sync_state
from .decode import text_attributes

log = logging.getLogger("provisiond.directory.stream")  # the stream's own log


@dataclass(frozen=True)
class Change:
    seq: int
    uuid: str
    dn: str | None
    present: bool
    attributes: Mapping[str, tuple[str, ...]] = field(hash=False)


class StreamListener(Protocol):
    def on_change(self, change: Change) -> None: ...

    def on_cookie(self, cookie: str, covers: int) -> None: ...

    def on_refresh_done(self) -> None: ...

    def on_connection(self, up: bool, reason: str) -> None:
        """The connection came up or went down; while down, also a new reason for it."""


class SyncSession:
    """Pure bookkeeping of one stream: sequence numbers, the UUIDs believed to match, and the
    cookies held back until the phase they belong to is complete."""

    def __init__(self, listener: StreamListener, cookie: str | None, known: Iterable[str]) -> None:
        self.listener = listener
        self.cookie = cookie
        self.seq = 0
        self.known: dict[str, str | None] = dict.fromkeys(known)
        self.in_refresh = False
        self.full = False
        self.seen: set[str] = set()
        self.pending: str | None = None

    def begin(self, cookie: str | None) -> None:
        """A new sync search starts (with `cookie`, None for a full reload)."""
        self.in_refresh, self.full = True, cookie is None
        self.seen, self.pending = set(), None

    def emit(self, uuid: str, dn: str | None, present: bool, attrs: Mapping[str, Any]) -> None:
        self.seq += 1
        if present:
            self.known[uuid] = dn
        else:
            dn = dn or self.known.get(uuid)
            self.known.pop(uuid, None)
        self.listener.on_change(Change(self.seq, uuid, dn, present, attrs))

    def deliver_cookie(self, cookie: str | None) -> None:
        if cookie:
            self.cookie = cookie
            self.listener.on_cookie(cookie, self.seq)

    def offer_cookie(self, cookie: str | None) -> None:
        if not cookie:
            return
        if self.in_refresh:
            self.pending = cookie
        else:
            self.deliver_cookie(cookie)

    def entry(self, dn: str, raw: Mapping[str, Sequence[bytes]], controls: Mapping[str, Any]) -> None:
        control = controls.get(SYNC_STATE_OID)
        if control is None:
            log.warning(kv(event="no-sync-state", dn=dn, msg="entry ignored"))
            return
        state = decode_sync_state(control["value"])
        attrs = text_attributes(raw)
        if state.state == "delete":
            self.emit(state.uuid, dn, False, MappingProxyType({}))
        elif state.state == "present" and not attrs:
            self.seen.add(state.uuid)
            self.known.setdefault(state.uuid, dn)
        else:
            self.seen.add(state.uuid)
            self.emit(state.uuid, dn, True, attrs)
        self.offer_cookie(state.cookie)

    def catch_up(self, uuid: str, dn: str | None, attrs: Mapping[str, tuple[str, ...]]) -> None:
        """An entry found outside the sync search during a refresh: delivered unless the
        refresh delivered it already."""
        if uuid not in self.seen:
            self.seen.add(uuid)
            self.emit(uuid, dn, True, attrs)

    def _end_phase(self, cookie: str | None, present: bool, refresh_done: bool) -> None:
        # A present phase lists every survivor; a full reload (no cookie) sends all content.
        if present or (self.full and refresh_done):
            gone = [u for u in self.known if u not in self.seen]
            log.info(kv(event="present-phase", listed=len(self.seen), gone=len(gone)))
            for uuid in gone:
                self.emit(uuid, None, False, MappingProxyType({}))
            self.full = False  # a delete phase may follow: the survivors are settled
        self.seen = set()
        self.deliver_cookie(cookie or self.pending)
        self.pending = None
        if refresh_done:
            self.in_refresh = False
            self.listener.on_refresh_done()

    def info(self, info: SyncInfo) -> None:
        if info.kind == "newcookie":
            self.offer_cookie(info.cookie)
        elif info.kind in ("refreshDelete", "refreshPresent"):
            self._end_phase(info.cookie, info.kind == "refreshPresent", info.refresh_done)
        elif info.refresh_deletes:  # syncIdSet of deleted entries
            for uuid in info.uuids:
                self.emit(uuid, None, False, MappingProxyType({}))
            self.offer_cookie(info.cookie)
        else:  # syncIdSet of entries still present (present phase)
            self.seen.update(info.uuids)
            for uuid in info.uuids:
                self.known.setdefault(uuid, None)
            self.offer_cookie(info.cookie)

    def done(self, done: SyncDone) -> None:
        """End of a refreshOnly search."""
        self._end_phase(done.cookie, not done.refresh_deletes, refresh_done=True)
