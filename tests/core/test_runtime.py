"""Per-service runtime state (core/runtime.py), without slapd: the counters the workers share,
and a ServiceRuntime reporting to a fake RuntimeOwner with a real cookie store. The change
stream is constructed (its listener is the runtime) but never run; the test calls the
listener methods as the stream's thread would."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from provisiond.core.runtime import Counters, ServiceRuntime, Work
from provisiond.directory.connection import ConnectionFactory
from provisiond.directory.cookie import CookieStore
from provisiond.directory.session import Change
from provisiond.model.work import Outcome
from tests.core.offline import offline_config

COOKIE_1 = "rid=001,csn=20240101000000.000001Z#000000#000#000000"
COOKIE_2 = "rid=001,csn=20240101000000.000002Z#000000#000#000000"
UUID = "0b6f2c1e-8d3a-4f5b-9c7d-1a2b3c4d5e6f"

# -- Counters ------------------------------------------------------------------------------------


def test_counters_total_by_outcome_across_services() -> None:
    counters = Counters()
    counters.count("demo", "success")
    counters.count("demo", "success")
    counters.count("backup", "success")
    counters.count("demo", "failure")
    counters.count("backup", "error")
    counters.count("demo", "error")
    assert (counters.succeeded, counters.failed, counters.errors) == (3, 1, 2)
    assert counters.outcomes() == {("demo", "success"): 2, ("backup", "success"): 1,
                                   ("demo", "failure"): 1, ("backup", "error"): 1,
                                   ("demo", "error"): 1}


def test_outcomes_is_a_copy_a_reader_may_keep() -> None:
    counters = Counters()
    counters.count("demo", "success")
    seen = counters.outcomes()
    counters.count("demo", "success")
    seen[("demo", "failure")] = 99
    assert seen[("demo", "success")] == 1
    assert counters.failed == 0 and counters.succeeded == 2


def test_retries_and_lost_races_are_counted_apart_from_outcomes() -> None:
    counters = Counters()
    counters.count_retry()
    counters.count_retry()
    counters.count_lost_race()
    assert (counters.retried, counters.lost_races) == (2, 1)
    assert counters.outcomes() == {}
    assert (counters.succeeded, counters.failed, counters.errors) == (0, 0, 0)


def test_concurrent_workers_lose_no_count() -> None:
    counters = Counters()

    def work() -> None:
        for _ in range(2000):
            counters.count("demo", "success")
            counters.count_retry()
            counters.count_lost_race()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counters.succeeded == 8000
    assert (counters.retried, counters.lost_races) == (8000, 8000)


def test_work_is_immutable_and_progress_does_not_make_two_works_differ() -> None:
    one = Work("demo", UUID, "cn=a", seqs=(1, 2))
    assert one == Work("demo", UUID, "cn=a", seqs=(1, 2), progress=Outcome(next_step=3))
    assert one.kind == "request" and one.attempt == 0 and not one.outage
    with pytest.raises(AttributeError):
        one.attempt = 1  # type: ignore[misc]


# -- ServiceRuntime and its owner ----------------------------------------------------------------


class FakeOwner:
    """A RuntimeOwner that records what the runtime tells it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.recovered = threading.Event()
        self.recover_thread: str | None = None

    def handle_change(self, rt: ServiceRuntime, change: Change) -> None:
        self.calls.append(("change", change.seq))

    def refresh_done(self, rt: ServiceRuntime) -> None:
        self.calls.append(("refresh_done", rt.spec.name))

    def directory_back(self) -> None:
        self.calls.append(("directory_back", None))

    def recover(self, rt: ServiceRuntime) -> None:
        self.recover_thread = threading.current_thread().name
        self.calls.append(("recover", rt.spec.name))
        self.recovered.set()


def runtime(tmp_path: Path, owner: FakeOwner) -> ServiceRuntime:
    config = offline_config(tmp_path, {"demo": {"kind": "demo",
                                                "vars": {"root": str(tmp_path / "root")}}})
    (spec,) = config.services
    return ServiceRuntime(owner, spec, ConnectionFactory(config.ldap), config.state_dir,
                          config.sync)


def change(seq: int) -> Change:
    return Change(seq=seq, uuid=UUID, dn="cn=a,ou=demo,dc=example,dc=org", present=True,
                  attributes={})


def test_a_change_is_counted_outstanding_then_handed_to_the_owner(tmp_path: Path) -> None:
    owner = FakeOwner()
    rt = runtime(tmp_path, owner)
    assert rt.stream.cookie is None and rt.saved_cookie is None
    rt.on_change(change(1))
    rt.on_change(change(2))
    assert owner.calls == [("change", 1), ("change", 2)]
    assert rt.watermark.outstanding == 2


def test_the_cookie_is_stored_only_once_the_changes_it_covers_are_settled(
        tmp_path: Path) -> None:
    rt = runtime(tmp_path, FakeOwner())
    store = CookieStore(tmp_path / "state", "demo")
    rt.on_change(change(1))
    rt.on_cookie(COOKIE_1, 1)
    rt.save_cookie()
    assert store.load() is None and rt.saved_cookie is None  # change 1 is still in flight
    rt.watermark.handled(1)
    rt.save_cookie()
    assert store.load() == COOKIE_1 and rt.saved_cookie == COOKIE_1


def test_a_cookie_is_written_only_when_a_newer_one_is_safe(tmp_path: Path) -> None:
    rt = runtime(tmp_path, FakeOwner())
    saved: list[str] = []
    save = rt.cookies.save

    def spy(cookie: str) -> None:  # the real store, with a note of each write
        saved.append(cookie)
        save(cookie)

    rt.cookies.save = spy  # type: ignore[method-assign]
    rt.save_cookie()
    assert saved == []  # no cookie yet
    rt.on_cookie(COOKIE_1, 0)
    rt.save_cookie()
    rt.save_cookie()  # called after every settled change: the same cookie is not saved again
    assert saved == [COOKIE_1]
    rt.on_cookie(COOKIE_2, 0)
    rt.save_cookie()
    assert saved == [COOKIE_1, COOKIE_2]
    assert rt.cookies.path.read_text() == COOKIE_2 + "\n"


def test_a_stored_cookie_is_where_the_stream_starts(tmp_path: Path) -> None:
    CookieStore(tmp_path / "state", "demo").save(COOKIE_1)
    rt = runtime(tmp_path, FakeOwner())
    assert rt.saved_cookie == COOKIE_1
    assert rt.stream.cookie == COOKIE_1
    assert rt.journal.directory == tmp_path / "state" / "inflight" / "demo"


def test_a_corrupt_cookie_file_stops_the_runtime_with_its_path(tmp_path: Path) -> None:
    store = CookieStore(tmp_path / "state", "demo")
    store.state_dir.mkdir(parents=True)
    store.path.write_text("rid=001,csn=garbage\n")
    with pytest.raises(ValueError, match=r"demo\.cookie"):
        runtime(tmp_path, FakeOwner())


def test_end_of_refresh_is_timed_and_reported(tmp_path: Path) -> None:
    owner = FakeOwner()
    rt = runtime(tmp_path, owner)
    assert rt.last_sync is None
    rt.on_refresh_done()
    assert rt.last_sync is not None
    assert owner.calls == [("refresh_done", "demo")]


def test_a_connection_coming_up_reports_the_directory_back_and_recovers_on_a_thread(
        tmp_path: Path) -> None:
    owner = FakeOwner()
    rt = runtime(tmp_path, owner)
    rt.on_connection(True, "bound")
    assert rt.connected is True
    assert owner.recovered.wait(5)
    assert owner.calls[0] == ("directory_back", None)
    assert ("recover", "demo") in owner.calls
    assert owner.recover_thread == "recover-demo"  # not the stream's thread: it must stay quick


def test_a_connection_going_down_recovers_nothing(tmp_path: Path) -> None:
    owner = FakeOwner()
    rt = runtime(tmp_path, owner)
    rt.on_connection(True, "bound")
    assert owner.recovered.wait(5)
    owner.calls.clear()
    owner.recovered.clear()
    rt.on_connection(False, "server down")
    assert rt.connected is False
    assert not owner.recovered.wait(0.2)
    assert owner.calls == []
