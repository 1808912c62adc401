"""Work due later (core/scheduler.py), without slapd: a FakeClock moves the day, the
scheduler's own thread hands due items to the callback."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from provisiond.core.clock import FakeClock
from provisiond.core.scheduler import Scheduler

DAY = timedelta(days=1)


class Fired:
    """The scheduler's callback: what it fired, in order, for the test thread to wait on."""

    def __init__(self) -> None:
        self.items: queue.Queue[Any] = queue.Queue()

    def __call__(self, item: Any) -> None:
        self.items.put(item)

    def next(self, timeout: float = 5.0) -> Any:
        return self.items.get(timeout=timeout)

    def none_within(self, seconds: float) -> bool:
        try:
            item = self.items.get(timeout=seconds)
        except queue.Empty:
            return True
        raise AssertionError(f"{item!r} fired and should not have")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fired() -> Fired:
    return Fired()


@pytest.fixture
def scheduler(clock: FakeClock, fired: Fired) -> Iterator[Scheduler]:
    scheduler = Scheduler(clock, fired)
    scheduler.start()
    yield scheduler
    scheduler.stop()


def test_an_item_already_due_fires_at_once(scheduler: Scheduler, clock: FakeClock,
                                            fired: Fired) -> None:
    scheduler.add("a", clock.now() - timedelta(seconds=1), "item a")
    assert fired.next() == "item a"
    assert scheduler.pending() == 0


def test_a_future_item_waits_until_the_clock_reaches_it(scheduler: Scheduler, clock: FakeClock,
                                                        fired: Fired) -> None:
    scheduler.add("a", clock.now() + DAY, "tomorrow")
    assert fired.none_within(0.3)
    assert scheduler.pending() == 1
    clock.advance(DAY + timedelta(seconds=1))  # the jump wakes the sleeping thread
    assert fired.next(timeout=2) == "tomorrow"
    assert scheduler.pending() == 0


def test_an_earlier_item_added_later_does_not_wait_for_the_sleeping_one(
        scheduler: Scheduler, clock: FakeClock, fired: Fired) -> None:
    scheduler.add("far", clock.now() + DAY, "far")
    assert fired.none_within(0.1)  # the thread now sleeps towards "far"
    scheduler.add("near", clock.now() + timedelta(milliseconds=200), "near")
    assert fired.next(timeout=2) == "near"
    assert scheduler.pending() == 1


def test_due_items_fire_in_due_order(clock: FakeClock, fired: Fired) -> None:
    scheduler = Scheduler(clock, fired)
    now = clock.now()
    scheduler.add("c", now - timedelta(seconds=1), "third")
    scheduler.add("a", now - timedelta(seconds=3), "first")
    scheduler.add("b", now - timedelta(seconds=2), "second")
    scheduler.start()  # all three are due at the first look
    try:
        assert [fired.next(), fired.next(), fired.next()] == ["first", "second", "third"]
    finally:
        scheduler.stop()


def test_a_newer_schedule_for_the_same_key_replaces_the_older(
        scheduler: Scheduler, clock: FakeClock, fired: Fired) -> None:
    scheduler.add("entry", clock.now() + DAY, "old")
    scheduler.add("entry", clock.now() + 2 * DAY, "new")
    assert scheduler.pending() == 1
    clock.advance(DAY + timedelta(seconds=1))
    assert fired.none_within(0.3)  # the old due time passed, but the old item is gone
    clock.advance(DAY)
    assert fired.next(timeout=2) == "new"
    assert fired.none_within(0.2)


def test_a_cancelled_item_never_fires(scheduler: Scheduler, clock: FakeClock,
                                      fired: Fired) -> None:
    scheduler.add("a", clock.now() + DAY, "a")
    scheduler.add("b", clock.now() + DAY, "b")
    assert scheduler.cancel("a") is True
    assert scheduler.cancel("a") is False  # already gone
    assert scheduler.cancel("unknown") is False
    clock.advance(2 * DAY)
    assert fired.next(timeout=2) == "b"
    assert fired.none_within(0.2)


def test_pending_select_and_items_see_what_waits(scheduler: Scheduler,
                                                 clock: FakeClock) -> None:
    now = clock.now()
    scheduler.add(("svc", "u2"), now + 2 * DAY, {"kind": "retry", "n": 2})
    scheduler.add(("svc", "u1"), now + DAY, {"kind": "request", "n": 1})
    scheduler.add(("other", "u3"), now + 3 * DAY, {"kind": "retry", "n": 3})
    assert scheduler.pending() == 3
    assert scheduler.pending(lambda item: item["kind"] == "retry") == 2
    selected = scheduler.select(lambda key, item: isinstance(key, tuple) and key[0] == "svc")
    assert {key for key, _ in selected} == {("svc", "u1"), ("svc", "u2")}
    assert [item["n"] for _, item in sorted(scheduler.items(), key=lambda pair: pair[0])] == [
        1, 2, 3]
    assert [due for due, _ in scheduler.items()] == [now + DAY, now + 2 * DAY, now + 3 * DAY]


def test_nothing_fires_after_stop(clock: FakeClock, fired: Fired) -> None:
    scheduler = Scheduler(clock, fired)
    scheduler.start()
    scheduler.add("a", clock.now() + DAY, "a")
    scheduler.stop()
    clock.advance(2 * DAY)
    assert fired.none_within(0.3)
    assert scheduler.pending() == 1  # stopped, not fired: still there for a status
