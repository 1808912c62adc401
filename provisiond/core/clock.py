"""Time, injectable: execution dates are days in UTC, and tests must be able to move the day."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


class Clock:
    """Wall-clock time in UTC. The engine's scheduler registers a wake-up callback so a
    clock that jumps (FakeClock) can make it re-check what is due."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def on_jump(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._listeners.append(callback)

    def _jumped(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for callback in listeners:
            callback()


class FakeClock(Clock):
    """Real time shifted by an offset the test moves forward."""

    def __init__(self, offset: timedelta = timedelta(0)) -> None:
        super().__init__()
        self.offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta) -> None:
        self.offset += delta
        self._jumped()
