"""Work that becomes due later: entries with a future execution date, and retries.

One thread sleeps until the earliest due time (or until the clock jumps, or something earlier
is added) and hands due items to a callback. Items are keyed, so a newer schedule for the same
entry replaces the older one and a cancellation is a dictionary pop.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable, Hashable
from datetime import datetime
from typing import Any

from provisiond.core.clock import Clock

MAX_SLEEP_SECONDS = 60.0


class Scheduler:
    def __init__(self, clock: Clock, fire: Callable[[Any], None]) -> None:
        self.clock = clock
        self.fire = fire
        self._cond = threading.Condition()
        self._heap: list[tuple[datetime, int, Hashable]] = []
        self._items: dict[Hashable, tuple[datetime, int, Any]] = {}
        self._counter = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        clock.on_jump(self.wake)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def add(self, key: Hashable, due: datetime, item: Any) -> None:
        with self._cond:
            number = next(self._counter)
            self._items[key] = (due, number, item)
            heapq.heappush(self._heap, (due, number, key))
            self._cond.notify_all()

    def cancel(self, key: Hashable) -> bool:
        with self._cond:
            return self._items.pop(key, None) is not None

    def pending(self, predicate: Callable[[Any], bool] = lambda item: True) -> int:
        with self._cond:
            return sum(1 for _, _, item in self._items.values() if predicate(item))

    def select(self, predicate: Callable[[Hashable, Any], bool]) -> list[tuple[Hashable, Any]]:
        """The (key, item) pairs pending whose key and item satisfy `predicate`."""
        with self._cond:
            return [(key, item) for key, (_, _, item) in self._items.items()
                    if predicate(key, item)]

    def items(self) -> list[tuple[datetime, Any]]:
        """(due, item) pairs by due time (items themselves need not be comparable: entries
        waiting for the same execution date share a due time)."""
        with self._cond:
            return sorted(((due, item) for due, _, item in self._items.values()),
                          key=lambda pair: pair[0])

    def _pop_due(self) -> tuple[list[Any], float]:
        now = self.clock.now()
        due_items: list[Any] = []
        while self._heap:
            due, number, key = self._heap[0]
            current = self._items.get(key)
            if current is None or current[1] != number:
                heapq.heappop(self._heap)  # replaced or cancelled
                continue
            if due > now:
                return due_items, min((due - now).total_seconds(), MAX_SLEEP_SECONDS)
            heapq.heappop(self._heap)
            del self._items[key]
            due_items.append(current[2])
        return due_items, MAX_SLEEP_SECONDS

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                due_items, sleep = self._pop_due()
                if not due_items:
                    self._cond.wait(timeout=max(sleep, 0.001))
                    continue
            for item in due_items:
                self.fire(item)
