"""Renders of one aggregate file: never two at once, and requests made meanwhile share one."""

from __future__ import annotations

import threading

import pytest

from provisiond.aggregates.mirror import Coalescer
from tests.support import wait_for


def test_requests_during_a_render_share_the_next_render() -> None:
    coalescer = Coalescer()
    release = threading.Event()
    active = 0
    most = 0
    lock = threading.Lock()

    def render() -> None:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        release.wait(10)
        with lock:
            active -= 1

    first = threading.Thread(target=coalescer.run, args=(render,))
    first.start()
    wait_for(lambda: coalescer._running)
    others = [threading.Thread(target=coalescer.run, args=(render,)) for _ in range(10)]
    for thread in others:
        thread.start()
    wait_for(lambda: coalescer._requested == 11, what="all requests waiting")
    release.set()
    for thread in [first, *others]:
        thread.join(10)
    assert most == 1
    assert coalescer.runs == 2  # the first, and one shared by the ten that waited


def test_a_failed_render_fails_every_request_it_covered() -> None:
    coalescer = Coalescer()

    def broken() -> None:
        raise RuntimeError("template exploded")

    with pytest.raises(RuntimeError):
        coalescer.run(broken)
    coalescer.run(lambda: None)  # a later request gets a fresh run
    assert coalescer.runs == 2
