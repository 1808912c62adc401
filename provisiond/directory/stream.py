"""The change stream: entries matching the service filter, as they change, keyed by entryUUID.

Three ways to learn about changes, all delivering the same `Change` records to a listener:

- `persist`: RFC 4533 refreshAndPersist, what the legacy daemon used. ldap3 has no syncrepl
  API, but its persistent-search machinery on an ASYNC_STREAM connection passes every message
  of a search to a callback when `changes_only=False` (so no Netscape psearch control is
  added). The callback runs on ldap3's receiver thread and only queues the raw message; all
  decoding and bookkeeping happen on the thread that called `run()`, so the bookkeeping needs
  no locks and the listener is always called from one thread.
- `refresh`: refreshOnly with the cookie every `interval` seconds (cheap: under 1 ms when
  nothing changed), for networks where a long-lived connection is not welcome.
- `poll`: a plain search for `entryCSN>=` the newest CSN seen. No deletes, and only safe
  against a single provider (a late-replicated change can carry an older CSN).

The bookkeeping that the RFC leaves to the client (which UUIDs match, when a cookie may be
passed on) is session.py's. A cookie the server refuses (e-syncRefreshRequired, or "consumer
state is newer than provider" from a slapd that restarted with an older contextCSN after a
crash) is dropped: the stream refreshes without it, which is safe because every entry is
re-decided from its current state.

ldap3 says nothing when the server goes away during a persistent search: its receiver thread
ends and the connection closes. A watchdog notices that within `watchdog` seconds and the
stream reconnects with exponential backoff, resuming from the last cookie it delivered.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import ldap3
    from ldap3.core.exceptions import LDAPException

from provisiond.logfmt import kv

from .connection import ConnectionFactory, DirectoryUnavailable, close_quietly
from .controls import (
    SYNC_DONE_OID,
    SYNC_INFO_OID,
    ControlError,
    SyncDone,
    decode_sync_done,
    decode_sync_info,
    sync_request_control,
)
from .cookie import newest_csn, parse_cookie
from .decode import response_dn, text_attributes
from .raw_entries import raw_entries_only
from .session import Change, StreamListener, SyncSession

__all__ = ["Change", "ChangeStream", "Mode", "SearchFailed", "StreamHealth", "StreamListener"]

log = logging.getLogger(__name__)

Mode = Literal["persist", "refresh", "poll"]
RESULT_SYNC_REFRESH_REQUIRED = 4096  # e-syncRefreshRequired: start again without the cookie
# unwillingToPerform "consumer state is newer than provider!": the server restarted with an
# older contextCSN than our cookie (slapd after a SIGKILL restores its last checkpoint) and
# refuses the cookie until somebody writes. A refresh without it is safe: every actionable
# entry is sent again and re-decided from its current state.
RESULT_UNWILLING = 53
COOKIE_REFUSED = (RESULT_SYNC_REFRESH_REQUIRED, RESULT_UNWILLING)


@dataclass(frozen=True)
class StreamHealth:
    """The stream's connection state as last reported: for the watchdog and `status`."""

    up: bool
    reason: str
    since: float  # time.time() when `up` last changed (or the stream was made)
    since_monotonic: float  # the same instant on the monotonic clock, to measure durations


class SearchFailed(DirectoryUnavailable):
    """The server answered the sync or poll search with an error (or garbage)."""


class _SearchAgain(Exception):
    """The server refused our cookie: search again at once, without it (not an outage)."""


class _Backoff:
    """Exponential, with "equal jitter": each delay between half and all of the nominal one."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial, self.maximum, self.failures = initial, maximum, 0

    def next(self) -> float:
        delay = min(self.maximum, self.initial * 2 ** min(self.failures, 32))
        self.failures += 1
        return delay / 2 + random.uniform(0, delay / 2)


def _log_cookie_refused(base: str, cookie: str | None, result: Mapping[str, Any]) -> None:
    code = result.get("result")
    level = logging.INFO if code == RESULT_SYNC_REFRESH_REQUIRED else logging.WARNING
    log.log(level, kv(event="full-refresh", base=base, cookie=cookie, rc=code,
                      reason=result.get("message") or result.get("description"),
                      msg="the server refused the cookie: refreshing without it"))


def _describe(what: str, result: Mapping[str, Any]) -> str:
    text = f"{what} failed: {result.get('description')} ({result.get('result')})"
    return f"{text} {result['message']}" if result.get("message") else text


class ChangeStream:
    """Delivers changes to `listener`; `run()` and `run_once()` must not run concurrently.

    `known`: UUIDs the consumer already holds as matching (e.g. from its own state), so that
    a present phase right after start can report the ones that disappeared meanwhile."""

    def __init__(
        self,
        factory: ConnectionFactory,
        *,
        base: str,
        filter: str,
        attributes: Sequence[str],
        mode: Mode,
        interval: float,
        cookie: str | None,
        listener: StreamListener,
        backoff_initial: float = 0.5,
        backoff_max: float = 60.0,
        watchdog: float = 1.0,
        known: Iterable[str] = (),
    ) -> None:
        if mode not in ("persist", "refresh", "poll"):
            raise ValueError(f"unknown stream mode {mode!r}")
        if mode != "persist" and interval <= 0:
            raise ValueError("interval must be positive")
        if not (filter.startswith("(") and filter.endswith(")")):
            raise ValueError(f"filter must be parenthesised: {filter!r}")
        self.factory, self.base, self.filter, self.mode = factory, base, filter, mode
        self.interval, self.watchdog = interval, watchdog
        extra = ["entryUUID"] + (["entryCSN"] if mode == "poll" else [])
        wanted = {name.lower() for name in attributes}
        self.attributes = [*attributes, *(name for name in extra if name.lower() not in wanted)]
        self._poll_csn = newest_csn(parse_cookie(cookie)) if mode == "poll" and cookie else None
        self._session = SyncSession(listener, cookie, known)
        self._backoff = _Backoff(backoff_initial, backoff_max)
        self._connection: Any = None  # kept between passes in refresh and poll modes
        self._up: bool | None = None
        self._health = StreamHealth(False, "not connected yet", time.time(), time.monotonic())
        self._logged: set[str] = set()  # unforeseen failures logged with their traceback

    @property
    def cookie(self) -> str | None:
        """The last cookie handed to the listener (or the one the stream started with)."""
        return self._session.cookie

    @property
    def health(self) -> StreamHealth:
        return self._health

    def _report(self, up: bool, reason: str) -> None:
        """Tell the listener about changes of the connection state (and of the reason while
        down), not about every retry."""
        if up is self._up and (up or reason == self._health.reason):
            return
        if up is not self._up:
            self._health = StreamHealth(up, reason, time.time(), time.monotonic())
        else:
            self._health = StreamHealth(up, reason, self._health.since,
                                        self._health.since_monotonic)
        self._up = up
        try:
            self._session.listener.on_connection(up, reason)
        except Exception:  # noqa: BLE001 - the listener's bug must not end the stream
            log.exception(kv(event="listener-error", base=self.base, up=up))

    # -- one pass (refresh and poll; persist uses a refreshOnly pass as a heartbeat) ------------

    def run_once(self) -> None:
        """One refreshOnly pass (persist and refresh modes) or one poll search."""
        try:
            if self.mode == "poll":
                self._poll_pass()
            else:
                self._refresh_pass()
        except ControlError as exc:
            raise SearchFailed(str(exc)) from exc
        self._report(True, "search succeeded")

    def _search(self, search_filter: str, controls: list[Any] | None) -> tuple[list[Any], dict[str, Any]]:
        """A subtree search on the kept connection; one that went stale while idle (server
        restarted) is replaced once before the failure counts."""
        retry = self._connection is not None and not self._connection.closed
        while True:
            if self._connection is None or self._connection.closed:
                self._connection = raw_entries_only(self.factory.open())
            try:
                self._connection.search(
                    self.base,
                    search_filter,
                    search_scope=ldap3.SUBTREE,
                    dereference_aliases=ldap3.DEREF_NEVER,  # syncprov rejects ALWAYS
                    attributes=self.attributes,
                    controls=controls,
                )
                return list(self._connection.response or []), dict(self._connection.result or {})
            except (LDAPException, OSError) as exc:
                close_quietly(self._connection)
                self._connection = None
                if not retry:
                    raise DirectoryUnavailable(f"search on {self.base} failed: {exc}") from exc
                retry = False

    def _refresh_pass(self) -> None:
        cookie = self._session.cookie
        behind = False  # the server's state is older than our cookie
        while True:
            self._session.begin(cookie)
            control = sync_request_control("refreshOnly", cookie)
            messages, result = self._search(self.filter, [control])
            done_control = (result.get("controls") or {}).get(SYNC_DONE_OID)
            done = decode_sync_done(done_control["value"]) if done_control else None
            if result.get("result") in COOKIE_REFUSED and cookie is not None:
                _log_cookie_refused(self.base, cookie, result)
                behind = behind or result.get("result") == RESULT_UNWILLING
                cookie = done.cookie if done and done.cookie else None
                continue
            if result.get("result") != 0:
                raise SearchFailed(_describe(f"sync search on {self.base}", result))
            for message in messages:
                self._dispatch(message)
            if behind:
                self._catch_up()
            # No Sync Done control: claim nothing about deletes rather than infer them all.
            self._session.done(done or SyncDone(cookie=None, refresh_deletes=True))
            return

    def _catch_up(self) -> None:
        """After the server refused a cookie newer than its state, its refreshOnly answer
        leaves out the entries newer than its contextCSN (slapd 2.5 bounds the refresh by it;
        refreshAndPersist does not). A plain search delivers those, so they are neither
        missed nor taken for deleted."""
        messages, result = self._search(self.filter, None)
        if result.get("result") != 0:
            raise SearchFailed(_describe(f"search on {self.base}", result))
        for message in messages:
            if message.get("type") == "searchResEntry":
                attrs = text_attributes(message.get("raw_attributes") or {})
                uuid = (attrs.get("entryuuid") or ("",))[0].lower()
                if uuid:
                    self._session.catch_up(uuid, response_dn(message), attrs)

    def _poll_pass(self) -> None:
        since = self._poll_csn
        search_filter = f"(&{self.filter}(entryCSN>={since}))" if since else self.filter
        messages, result = self._search(search_filter, None)
        if result.get("result") != 0:
            raise SearchFailed(_describe(f"poll search on {self.base}", result))
        rows = []
        for message in messages:
            if message.get("type") != "searchResEntry":
                continue
            attrs = text_attributes(message.get("raw_attributes") or {})
            uuids, csns = attrs.get("entryuuid", ()), attrs.get("entrycsn", ())
            if not uuids or not csns:
                log.warning(kv(event="no-uuid-or-csn", dn=response_dn(message), msg="entry ignored"))
            elif since is None or csns[0] > since:  # `>=` is inclusive: skip what was seen
                rows.append((csns[0], uuids[0].lower(), response_dn(message), attrs))
        for _csn, uuid, dn, attrs in sorted(rows, key=lambda row: row[0]):
            self._session.emit(uuid, dn, True, attrs)
        if rows:
            self._poll_csn = max(row[0] for row in rows)
            self._session.deliver_cookie(f"csn={self._poll_csn}")
        self._session.listener.on_refresh_done()

    def _dispatch(self, message: Mapping[str, Any]) -> None:
        kind = message.get("type")
        if kind == "searchResEntry":
            self._session.entry(
                response_dn(message),
                message.get("raw_attributes") or {},
                message.get("controls") or {},
            )
        elif kind == "intermediateResponse" and message.get("responseName") == SYNC_INFO_OID:
            self._session.info(decode_sync_info(message.get("responseValue") or b""))

    # -- the loop -------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Deliver changes until `stop` is set. Never gives up and never raises: every
        failure is reported to the listener and retried with backoff (a new connection reads
        the password file again)."""
        try:
            while not stop.is_set():
                stop.wait(self._attempt(stop))
        finally:
            self.close()

    def close(self) -> None:
        """Close the connection kept between passes; a later pass opens another."""
        connection, self._connection = self._connection, None
        if connection is not None:
            close_quietly(connection)

    def _attempt(self, stop: threading.Event) -> float:
        """One persistent search, or one pass; returns the seconds to wait before the next."""
        try:
            if self.mode == "persist":
                self._persist(stop)
                return 0.0
            self.run_once()
            self._backoff.failures = 0
            return self.interval
        except DirectoryUnavailable as exc:
            reason = str(exc)
            log.debug(kv(event="stream-down", base=self.base, reason=reason))
        except Exception as exc:  # noqa: BLE001 - a stream must never die, whatever happened
            reason = f"internal error: {type(exc).__name__}: {exc}"
            if reason not in self._logged and len(self._logged) < 100:
                self._logged.add(reason)
                log.error(kv(event="stream-error", base=self.base, reason=reason), exc_info=exc)
        if not stop.is_set():
            self._report(False, reason)
        return self._backoff.next()

    def _persist(self, stop: threading.Event) -> None:
        """One refreshAndPersist search, until `stop`, until the connection is lost (raises
        DirectoryUnavailable) or until the server refuses the cookie (returns)."""
        events: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        connection = raw_entries_only(self.factory.open(stream=True))
        cookie = self._session.cookie
        self._session.begin(cookie)
        try:
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", category=DeprecationWarning)
                    connection.extend.standard.persistent_search(
                        search_base=self.base,
                        search_filter=self.filter,
                        search_scope=ldap3.SUBTREE,
                        dereference_aliases=ldap3.DEREF_NEVER,
                        attributes=self.attributes,
                        controls=[sync_request_control("refreshAndPersist", cookie)],
                        changes_only=False,  # no Netscape psearch control: plain messages
                        callback=events.put,  # on ldap3's receiver thread: just queue
                    )
            except (LDAPException, OSError) as exc:
                raise DirectoryUnavailable(f"persistent search failed: {exc}") from exc
            while not stop.is_set():
                try:
                    self._persist_message(events.get(timeout=self.watchdog))
                except queue.Empty:
                    receiver = connection.strategy.receiver
                    if not connection.closed and receiver is not None and receiver.is_alive():
                        continue
                    # ldap3 said nothing: its receiver ended. Handle what it queued before.
                    if receiver is not None:
                        receiver.join(timeout=1.0)
                    while not events.empty():
                        self._persist_message(events.get_nowait())
                    raise DirectoryUnavailable("connection lost: the server closed it") from None
        except _SearchAgain:
            return  # the caller searches again at once, without the refused cookie
        finally:
            close_quietly(connection)

    def _persist_message(self, message: Mapping[str, Any]) -> None:
        if message.get("type") == "searchResDone":  # the server ended the search
            if message.get("result") in COOKIE_REFUSED and self._session.cookie is not None:
                _log_cookie_refused(self.base, self._session.cookie, message)
                self._session.cookie = None
                raise _SearchAgain()
            raise SearchFailed(_describe(f"persistent search on {self.base}", message))
        try:
            self._dispatch(message)
        except ControlError as exc:
            raise SearchFailed(str(exc)) from exc
        if not self._session.in_refresh:  # a failure replayed by every refresh backs off
            self._backoff.failures = 0
        self._report(True, "persistent search running")
