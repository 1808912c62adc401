"""When a cookie may be stored (core/watermark.py), without slapd: only once every change
it covers is handled, whatever order the workers finish in."""

from __future__ import annotations

import threading

from provisiond.core.watermark import Watermark


def test_nothing_is_safe_before_the_first_cookie() -> None:
    mark = Watermark()
    mark.delivered(1)
    mark.handled(1)
    assert mark.safe_cookie() is None


def test_a_cookie_with_nothing_outstanding_is_safe_at_once() -> None:
    mark = Watermark()
    mark.cookie("A", covers=0)
    assert mark.safe_cookie() == "A"


def test_a_cookie_waits_for_the_changes_it_covers() -> None:
    mark = Watermark()
    for seq in (1, 2, 3):
        mark.delivered(seq)
    mark.cookie("A", covers=3)
    assert mark.safe_cookie() is None
    mark.handled(1)
    mark.handled(2)
    assert mark.safe_cookie() is None  # 3 is still in a worker's hands
    mark.handled(3)
    assert mark.safe_cookie() == "A"
    assert mark.outstanding == 0


def test_out_of_order_completion_holds_back_until_the_oldest_is_done() -> None:
    mark = Watermark()
    mark.delivered(1)
    mark.delivered(2)
    mark.cookie("A", covers=2)
    mark.handled(2)  # the later change finishes first
    assert mark.safe_cookie() is None
    assert mark.outstanding == 1
    mark.handled(1)
    assert mark.safe_cookie() == "A"


def test_the_newest_cookie_below_the_oldest_outstanding_change_wins() -> None:
    mark = Watermark()
    mark.delivered(1)
    mark.cookie("A", covers=1)
    mark.delivered(2)
    mark.cookie("B", covers=2)
    mark.delivered(3)
    mark.cookie("C", covers=3)
    mark.handled(1)
    assert mark.safe_cookie() == "A"  # 2 is outstanding: B and C must wait
    mark.handled(3)
    assert mark.safe_cookie() == "A"
    mark.handled(2)
    assert mark.safe_cookie() == "C"


def test_changes_after_a_cookie_do_not_hold_it_back() -> None:
    mark = Watermark()
    mark.delivered(1)
    mark.cookie("A", covers=1)
    mark.delivered(2)  # not covered by A
    mark.handled(1)
    assert mark.safe_cookie() == "A"
    assert mark.outstanding == 1


def test_handled_none_and_unknown_numbers_change_nothing() -> None:
    mark = Watermark()
    mark.delivered(5)
    mark.cookie("A", covers=5)
    mark.handled(None)  # work that came from no stream change (a resume, a scheduled retry)
    mark.handled(4)
    assert mark.safe_cookie() is None
    assert mark.outstanding == 1


def test_concurrent_workers_settle_every_change() -> None:
    mark = Watermark()
    seqs = range(1, 2001)
    for seq in seqs:
        mark.delivered(seq)
    mark.cookie("last", covers=2000)

    def finish(part: range) -> None:
        for seq in part:
            mark.handled(seq)

    threads = [threading.Thread(target=finish, args=(seqs[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert mark.outstanding == 0
    assert mark.safe_cookie() == "last"


def test_changes_delivered_and_handled_in_any_order_release_cookies_correctly() -> None:
    """Against a plain model (min over what is outstanding), in shuffled orders, with a
    change delivered twice (a re-delivery after a reconnect) among them."""
    import random

    for seed in range(50):
        rng = random.Random(seed)
        mark, outstanding, cookies, safe = Watermark(), set(), [], None
        seqs = list(range(1, 60))
        for seq in seqs:
            mark.delivered(seq)
            outstanding.add(seq)
            if rng.random() < 0.2:
                mark.delivered(seq)
            if rng.random() < 0.3:
                mark.cookie(f"c{seq}", covers=seq)
                cookies.append((seq, f"c{seq}"))
        rng.shuffle(seqs)
        for seq in seqs:
            mark.handled(seq)
            outstanding.discard(seq)
            oldest = min(outstanding) if outstanding else None
            while cookies and (oldest is None or cookies[0][0] < oldest):
                safe = cookies.pop(0)[1]
            assert mark.safe_cookie() == safe, (seed, seq)
        assert mark.outstanding == 0
