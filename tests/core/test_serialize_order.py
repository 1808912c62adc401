"""Service keys go in order of arrival in the change stream, not in the order workers happen
to reach them: a job arriving later waits while an earlier one of its service is still being
looked at (read, validated, references resolved), since that one may want the same key. The
tape-operation kind depends on it (20 loads and unloads of one library, run as asked)."""

from __future__ import annotations

from provisiond.core.runtime import Work
from provisiond.core.serialize import Admission, ServiceKeys
from provisiond.host.jinja import make_environment
from tests.core.test_serialize import _job, _spec


def _keys() -> tuple[ServiceKeys, list[Work]]:
    resumed: list[Work] = []
    return ServiceKeys(make_environment([]), resumed.append), resumed


def _work(uuid: str, seq: int, service: str = "svc") -> Work:
    return Work(service, uuid, f"cn={uuid}", seqs=(seq,))


def _two_looked_at() -> tuple[ServiceKeys, list[Work], Work, Work]:
    """Keys, the work they resume, and works a (arrived first) and b, both being looked at."""
    keys, resumed = _keys()
    first, second = _work("a", 1), _work("b", 2)
    keys.begin(first)
    keys.begin(second)
    return keys, resumed, first, second


def test_a_later_arrival_waits_for_an_earlier_one_still_being_looked_at() -> None:
    keys, resumed, first, second = _two_looked_at()
    spec = _spec("lib")
    assert keys.admit(second, _job(spec, "b")) is Admission.PARKED  # the key is free, but a
    assert keys.admit(first, _job(spec, "a")) is Admission.GO  # came first
    keys.release("a")
    assert resumed == [second]
    assert keys.admit(second, _job(spec, "b")) is Admission.GO


def test_an_earlier_arrival_that_never_asks_for_a_key_lets_the_later_one_go() -> None:
    keys, resumed, first, second = _two_looked_at()
    assert keys.admit(second, _job(_spec("lib"), "b")) is Admission.PARKED
    keys.end(first)  # invalid, waiting for a reference, not ours...: no admit
    assert resumed == [second] and keys.held("b") == "lib"
    keys.end(second)  # past its admission already: nothing changes
    assert keys.held("b") == "lib"


def test_an_earlier_arrival_wanting_another_key_lets_the_later_one_go_once_it_has_it() -> None:
    keys, resumed, first, second = _two_looked_at()
    assert keys.admit(second, _job(_spec("lib-{{ values.owner }}"), "b")) is Admission.PARKED
    assert keys.admit(first, _job(_spec("lib-{{ values.owner }}"), "a", owner="y")) is (
        Admission.GO)
    assert resumed == [second] and keys.held("b") == "lib-x"


def test_waiters_follow_their_arrival_not_the_order_they_parked_in() -> None:
    keys, resumed = _keys()
    spec = _spec("lib")
    holder, late, early = _work("h", 0), _work("late", 3), _work("early", 2)
    assert keys.admit(holder, _job(spec, "h")) is Admission.GO
    assert keys.admit(late, _job(spec, "late")) is Admission.PARKED
    assert keys.admit(early, _job(spec, "early")) is Admission.PARKED
    keys.release("h")
    assert resumed == [early]
    keys.release("early")
    assert resumed == [early, late]


def test_other_services_arrivals_do_not_hold_a_key_back() -> None:
    keys, _ = _keys()
    keys.begin(_work("other", 1, service="elsewhere"))
    assert keys.admit(_work("b", 5), _job(_spec("lib"), "b")) is Admission.GO


def test_a_stop_drops_the_held_back_too() -> None:
    keys, resumed, first, second = _two_looked_at()
    assert keys.admit(second, _job(_spec("lib"), "b")) is Admission.PARKED
    assert keys.close() == [second] and keys.parked() == 0
    keys.end(first)
    assert resumed == []
