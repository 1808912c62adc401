"""Per-service runtime state and the units of work the engine's workers take.

`ServiceRuntime` is the change stream's listener for one service and owns what survives
between changes: the cookie store and its watermark, the journal of claims. `Work` is one
entry to look at (a request, or a resume of our own claim), immutable so it can wait in a
queue or the scheduler without anyone changing it underneath.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from provisiond.core.journal import Journal
from provisiond.core.watermark import Watermark
from provisiond.directory.access import Entry
from provisiond.directory.connection import ConnectionFactory, closing_thread_connections
from provisiond.directory.cookie import CookieStore
from provisiond.directory.stream import Change, ChangeStream
from provisiond.logfmt import kv
from provisiond.model.settings import ServiceSpec, SyncSettings
from provisiond.model.work import Job, Outcome

log = logging.getLogger("provisiond.engine")


@dataclass(frozen=True)
class Continuation:
    """A claimed job a batch render has done a step for (core/batches.py): it goes on from
    there, in the same hands, without being read or claimed again."""

    entry: Entry
    job: Job
    started: float  # monotonic time its claim began


@dataclass(frozen=True)
class Work:
    """`request`: a change to decide on; `resume`: our own claim to finish (once proven
    ours); `continue`: our job, back from a batch render. `seqs`: the stream changes it
    settles; `outage`: waiting for the directory."""

    service: str
    uuid: str
    dn: str
    kind: Literal["request", "resume", "continue"] = "request"
    attempt: int = 0
    seqs: tuple[int, ...] = ()
    progress: Outcome | None = field(default=None, compare=False)  # kept across retries
    outage: bool = False
    continuation: Continuation | None = field(default=None, compare=False)
    seen: Entry | None = field(default=None, compare=False)  # as the change notification had it


@dataclass
class Counters:
    """What the workers did, for `once`'s exit status, STATUS= lines and metrics. Workers
    count concurrently, so every update holds the lock; the totals derive from by_outcome."""

    retried: int = 0
    lost_races: int = 0
    by_outcome: dict[tuple[str, str], int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, service: str, outcome: str) -> None:
        with self._lock:
            key = (service, outcome)
            self.by_outcome[key] = self.by_outcome.get(key, 0) + 1

    def count_retry(self) -> None:
        with self._lock:
            self.retried += 1

    def count_lost_race(self) -> None:
        with self._lock:
            self.lost_races += 1

    def outcomes(self) -> dict[tuple[str, str], int]:
        """A copy of by_outcome that a reader on another thread may iterate."""
        with self._lock:
            return dict(self.by_outcome)

    def _total(self, outcome: str) -> int:
        with self._lock:
            return sum(n for (_, kind), n in self.by_outcome.items() if kind == outcome)

    @property
    def succeeded(self) -> int:
        return self._total("success")

    @property
    def failed(self) -> int:
        return self._total("failure")

    @property
    def errors(self) -> int:
        """Internal errors before a claim: no outcome in the directory, but not a success."""
        return self._total("error")


class RuntimeOwner(Protocol):
    """What a service's runtime tells the engine (the engine is one; a test may be another)."""

    def handle_change(self, rt: ServiceRuntime, change: Change) -> None: ...

    def refresh_done(self, rt: ServiceRuntime) -> None: ...

    def directory_back(self) -> None: ...

    def recover(self, rt: ServiceRuntime) -> None: ...


class ServiceRuntime:
    """Per-service state: the stream feeding it, its cookie, its journal."""

    def __init__(self, owner: RuntimeOwner, spec: ServiceSpec, factory: ConnectionFactory,
                 state_dir: Path, sync: SyncSettings) -> None:
        self.owner = owner
        self.spec = spec
        self.cookies = CookieStore(state_dir, spec.name)
        self.journal = Journal(state_dir, spec.name)
        self.watermark = Watermark()
        self.saved_cookie = self.cookies.load()
        self.stream = ChangeStream(
            factory,
            base=spec.base,
            filter=spec.sync_filter,
            # entryCSN: a claim asserts it, acting on the change's values (engine.fresh)
            attributes=(*spec.ldap_attributes(), "entryCSN"),
            mode=sync.mode,
            interval=sync.interval,
            cookie=self.saved_cookie,
            listener=self,
        )
        self.connected = False
        self.last_sync: float | None = None
        # `unique:` ranks an entry claimed above one only requested (aggregates/unique.py).
        # Were two entries with one value examined at once, each would see the other only
        # requested, and both could pass. So a service with `unique:` examines and claims
        # one entry at a time: an examination sees every earlier one's claim. (Only within
        # this daemon; two daemons sharing a subtree are not serialized; the files of all
        # entries still leave the loser out.) The claim is one round trip, so this costs
        # little; a service without `unique:` takes no lock.
        self.examining: AbstractContextManager[object] = (
            threading.Lock() if spec.unique else nullcontext())

    # StreamListener: called on the stream's thread; must be quick.
    def on_change(self, change: Change) -> None:
        self.watermark.delivered(change.seq)
        self.owner.handle_change(self, change)

    def on_cookie(self, cookie: str, covers: int) -> None:
        self.watermark.cookie(cookie, covers)

    def on_refresh_done(self) -> None:
        self.last_sync = time.time()
        self.owner.refresh_done(self)

    def on_connection(self, up: bool, reason: str) -> None:
        self.connected = up
        log.log(logging.INFO if up else logging.WARNING,
                kv(event="connected" if up else "disconnected", service=self.spec.name,
                   reason=reason))
        if up:
            self.owner.directory_back()
            threading.Thread(target=closing_thread_connections(self.owner.recover),
                             args=(self,), daemon=True,
                             name=f"recover-{self.spec.name}").start()

    def save_cookie(self) -> None:
        cookie = self.watermark.safe_cookie()
        if cookie and cookie != self.saved_cookie:
            self.cookies.save(cookie)
            self.saved_cookie = cookie
