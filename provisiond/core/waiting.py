"""Entries waiting for an entry they reference to be provisioned (aggregates/references.py).

A waiting entry is not claimed: it is looked at again later, with the retry backoff (never
given up: the entry it waits for may take hours), and at once when a job of the service it
waits for succeeds, so a LUN added in the same burst as its disk follows the disk right away
instead of a backoff later. Its change stays unsettled meanwhile (the cookie stays behind it).

Waiting entries sit in the scheduler under ("wait", service, uuid): a later wait of the same
entry replaces the earlier one and takes over its sequence numbers. A success that happens
while an entry is deciding to wait (it read its parent as in progress, the parent then
succeeded and woke nobody) is noticed by the success count taken before the reads: the entry
is looked at again at once instead of parked.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import replace
from datetime import timedelta

from provisiond.core.clock import Clock
from provisiond.core.runtime import Work
from provisiond.core.scheduler import Scheduler


class Waiting:
    def __init__(self, scheduler: Scheduler, clock: Clock, delay: Callable[[int], float]) -> None:
        self.scheduler = scheduler
        self.clock = clock
        self.delay = delay  # seconds before the look after the N-th wait (the retry backoff)
        self._lock = threading.Lock()
        self._successes = 0
        self._waits: dict[tuple[str, str], int] = {}  # (service, uuid) -> waits so far
        self._for: dict[str, set[tuple[str, str]]] = {}  # service waited for -> waiting

    @property
    def successes(self) -> int:
        """How many jobs of referenced services have succeeded (take it before the reads)."""
        with self._lock:
            return self._successes

    def park(self, work: Work, target: str, seen: int) -> float | None:
        """Schedule `work` to be looked at again; the delay in seconds, or None when a job of
        a referenced service succeeded since `seen` (look again now instead)."""
        key = (work.service, work.uuid)
        pending: Hashable = ("wait", *key)
        with self._lock:
            if self._successes != seen:
                return None
            count = self._waits.get(key, 0)
            self._waits[key] = count + 1
            self._for.setdefault(target, set()).add(key)
            earlier = [item for _, item in self.scheduler.select(lambda k, _: k == pending)]
            seqs = tuple(dict.fromkeys(seq for item in (*earlier, work) for seq in item.seqs))
            delay = self.delay(count)
            self.scheduler.add(pending, self.clock.now() + timedelta(seconds=delay),
                               replace(work, seqs=seqs))
            return delay

    def wake(self, service: str) -> list[Work]:
        """A job of `service` succeeded: the entries waiting for it, taken off the schedule to
        be looked at now."""
        with self._lock:
            self._successes += 1
            keys = {("wait", *key) for key in self._for.pop(service, set())}
            if not keys:
                return []
            woken = []
            for pending, work in self.scheduler.select(lambda k, _: k in keys):
                if self.scheduler.cancel(pending):  # else it is being handed out right now
                    woken.append(work)
            return woken

    def over(self, service: str, uuid: str) -> None:
        """The entry no longer waits: a later wait starts the backoff afresh."""
        with self._lock:
            self._waits.pop((service, uuid), None)
