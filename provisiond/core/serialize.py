"""Serialization keys: at most one job per key in the steps at a time, the others in order.

Some things on a host must not be driven by two jobs at once: a tape changer (back-to-back
moves make real changers report hardware errors, and an mtx call races bacula-sd's own), a
target tool (tgt-admin --update, scstadmin), one disk pool. A service or a step says so with
`serialize: "{{ refs.library.dn }}"`, a template over the job's context (values, refs, vars,
entry, service; a step's also sees the outputs of the hooks before it). Jobs whose keys
render equal take turns across every service of the daemon, in order of arrival; an empty
key means no serialization.

- A service's key (`ServiceKeys`) is taken after validation and references, before the
  claim, and held until the job's outcome is reported. A job whose key is held is *parked*:
  not claimed, its changes unsettled (the cookie stays before them), its worker free for
  other work. When the holder lets go, the key passes to the first parked job, which is
  submitted again (`resume`). A journal resume with a key waits the same way.
- A step's key (`StepKeys`) is taken just before the step is planned and let go when it
  ends; a job waits for it in its worker (blocking, in order of arrival).

The two are separate namespaces (a service key never excludes a step key, even when they
read the same), and that is what makes this deadlock-free: a job waits in a worker only for
a step key, holding at most its service key and no other step key (one step runs at a time);
a job holding a step key is running its step, which ends (a hook has a timeout) and lets go,
never waiting for anything; and a service key is never waited for in a worker, so no chain
of waits can close into a circle. Jobs that must exclude each other whole, across services,
say so with service keys.

A stop drops the parked work like queued work (the stream or the journal brings it back)
and parks nothing more, so it never waits for a parked job.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from enum import Enum
from typing import Any, Generic, TypeVar

import jinja2

from provisiond.core.runtime import Work
from provisiond.host.jinja import RenderError, render_string
from provisiond.logfmt import kv
from provisiond.model.settings import Step
from provisiond.model.work import Job
from provisiond.steps.base import StepError

log = logging.getLogger("provisiond.engine")

T = TypeVar("T")


class KeyedFifo(Generic[T]):
    """Per key, its holder followed by those waiting for it, in order of arrival."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lines: dict[str, deque[T]] = {}

    def enter(self, key: str, who: T) -> bool:
        """True: `who` holds `key` now; False: it waits behind the others."""
        with self._lock:
            line = self._lines.setdefault(key, deque())
            line.append(who)
            return len(line) == 1

    def leave(self, key: str) -> T | None:
        """The holder of `key` lets go: the next in line holds it now (returned), if any."""
        with self._lock:
            line = self._lines[key]
            line.popleft()
            if line:
                return line[0]
            del self._lines[key]
            return None

    def drop_waiting(self) -> list[T]:
        """Take every waiting one out of its line (the holders keep their keys)."""
        with self._lock:
            dropped = [who for line in self._lines.values() for who in list(line)[1:]]
            for key, line in self._lines.items():
                self._lines[key] = deque([line[0]])
            return dropped

    def waiting(self) -> int:
        with self._lock:
            return sum(len(line) - 1 for line in self._lines.values())


class KeyFailed(Exception):
    """A key template that does not render for a job: the entry fails (never a worker)."""


def render_key(env: jinja2.Environment, source: str, context: Mapping[str, Any]) -> str:
    """The key of a job (surrounding blanks stripped; '' means no serialization)."""
    try:
        return render_string(env, source, context).strip()
    except Exception as exc:  # noqa: BLE001 - a site's template: any error fails the entry
        reason = exc.__cause__ if isinstance(exc, RenderError) and exc.__cause__ else exc
        raise KeyFailed(f"serialize: the key {source!r} cannot be rendered: {reason}") from exc


class Admission(Enum):
    GO = "go"  # the job holds its key (or has none): claim and run it
    PARKED = "parked"  # another job holds it: the work waits here, still in the engine's hands
    STOPPING = "stopping"  # the daemon is stopping: leave the work, unsettled


def arrival(work: Work) -> int:
    """Where `work` came in its service's change stream: its first change (a journal resume
    carries none and comes before every change)."""
    return min(work.seqs) if work.seqs else -1


class ServiceKeys:
    """The service-level keys of the daemon; a holder is a Work, known by its entry's UUID.

    Order of arrival is the change stream's, not the order in which workers happen to get a
    job to `admit` (a worker may look at the second of two loads before the first): a Work
    is `begin`-registered while it is being looked at, and a key is only granted to the
    earliest arrival waiting for it, and only once no earlier arrival of its service is still
    being looked at (that one may want the same key). A look always ends, in `admit` or
    `end` (the worker's finally), so holding back never waits for anything but a worker.
    """

    def __init__(self, env: jinja2.Environment, resume: Callable[[Work], None]) -> None:
        self.env = env
        self._resume = resume  # submits a parked Work that now holds its key
        self._lock = threading.Lock()
        self._holders: dict[str, Work] = {}  # key -> the Work holding it
        self._waiting: dict[str, list[Work]] = {}  # key -> Works in line, by arrival
        self._held: dict[str, str] = {}  # uuid -> the key it holds (or was handed)
        self._looking: dict[str, dict[str, int]] = {}  # service -> uuid -> arrival
        self._closed = False

    def begin(self, work: Work) -> None:
        """A worker starts looking at `work`, of a service with a key."""
        with self._lock:
            self._looking.setdefault(work.service, {})[work.uuid] = arrival(work)

    def end(self, work: Work) -> None:
        """The worker is done with `work` (admitted or not): later arrivals may go."""
        if work.service not in self._looking:  # no service key: the hot path stays cheap
            return
        with self._lock:
            if self._looking[work.service].pop(work.uuid, None) is None:
                return
            granted = self._grant_all()
        for granted_work in granted:
            self._resume(granted_work)

    def admit(self, work: Work, job: Job) -> Admission:
        """Whether `job` may be claimed now; raises KeyFailed when its key does not render."""
        source = job.service.serialize
        try:
            key = render_key(self.env, source, job.context({})) if source else ""
        except KeyFailed:
            self.end(work)
            raise
        resumed: list[Work] = []
        with self._lock:
            self._looking.get(work.service, {}).pop(work.uuid, None)
            held = self._held.get(work.uuid)
            if held is not None and held == key:
                admission = Admission.GO  # handed to it when the last holder let go
            else:
                if held is not None:  # its entry changed while it waited: not that key now
                    self._let_go(work.uuid, held)
                if not key:
                    admission = Admission.GO
                elif self._closed:
                    admission = Admission.STOPPING
                else:
                    line = self._waiting.setdefault(key, [])
                    line.append(work)
                    line.sort(key=arrival)
                    admission = Admission.PARKED
            resumed = self._grant_all()
            if work in resumed:  # its own turn: it goes on in this worker
                resumed.remove(work)
                admission = Admission.GO
        for granted in resumed:
            self._resume(granted)
        if admission is Admission.PARKED:
            log.info(kv(event="waiting", service=job.service.name, dn=job.dn, uuid=job.uuid,
                        mode=job.request, serialize=key, reason="serialized"))
        return admission

    def release(self, uuid: str) -> None:
        """The job of `uuid` is done (reported, deferred or dropped): its key passes on."""
        with self._lock:
            key = self._held.get(uuid)
            if key is None:
                return
            self._let_go(uuid, key)
            granted = self._grant_all()
        for work in granted:
            self._resume(work)

    def _let_go(self, uuid: str, key: str) -> None:
        """Under the lock: `uuid` no longer holds `key`."""
        del self._held[uuid]
        if key in self._holders and self._holders[key].uuid == uuid:
            del self._holders[key]

    def _grant_all(self) -> list[Work]:
        """Under the lock: each free key to the first in its line, if no earlier arrival of
        its service is still being looked at; the Works that hold a key now."""
        granted = []
        for key, line in list(self._waiting.items()):
            if key in self._holders:
                continue
            first = line[0]
            looking = self._looking.get(first.service, {})
            if any(seen < arrival(first) for seen in looking.values()):
                continue
            line.pop(0)
            if not line:
                del self._waiting[key]
            self._holders[key] = first
            self._held[first.uuid] = key
            granted.append(first)
        return granted

    def held(self, uuid: str) -> str | None:
        """The key the job of `uuid` holds, for its log lines."""
        with self._lock:
            return self._held.get(uuid)

    def parked(self) -> int:
        with self._lock:
            return sum(len(line) for line in self._waiting.values())

    def close(self) -> list[Work]:
        """The daemon stops: the parked work, taken out (to be dropped); nothing parks now."""
        with self._lock:
            self._closed = True
            dropped = [work for line in self._waiting.values() for work in line]
            self._waiting.clear()
            return dropped


class StepKeys:
    """The step-level keys of the daemon: a step waits for its key in its worker."""

    def __init__(self, env: jinja2.Environment) -> None:
        self.env = env
        self._fifo: KeyedFifo[threading.Event] = KeyedFifo()

    @contextmanager
    def hold(self, job: Job, step: Step, outputs: Mapping[str, Any]) -> Iterator[None]:
        """Run the body holding `step`'s key for `job` (waiting for it first, in order of
        arrival); raises StepError when the key does not render (the step fails)."""
        if not step.serialize:
            yield
            return
        try:
            key = render_key(self.env, step.serialize, job.context(outputs))
        except KeyFailed as exc:
            raise StepError(str(exc)) from exc
        if not key:
            yield
            return
        turn = threading.Event()
        if not self._fifo.enter(key, turn):
            log.info(kv(event="waiting", service=job.service.name, dn=job.dn, uuid=job.uuid,
                        mode=job.request, step=step.name, serialize=key, reason="serialized"))
            turn.wait()
        try:
            yield
        finally:
            following = self._fifo.leave(key)
            if following is not None:
                following.set()

    def waiting(self) -> int:
        return self._fifo.waiting()
