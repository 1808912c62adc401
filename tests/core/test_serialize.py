"""Serialization keys (issue 11.7): `serialize: TEMPLATE` on a service or a step lets at most
one job with the same key into the steps (or that step) at a time, across every service of
the daemon, the others in order of arrival. Unit tests of the keyed FIFO first, then the
engine on a real slapd with hooks that record when they start and end."""

from __future__ import annotations

import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisiond.config import ConfigError, load_config
from provisiond.core.engine import Engine
from provisiond.core.runtime import Work
from provisiond.core.serialize import (
    Admission,
    KeyedFifo,
    KeyFailed,
    ServiceKeys,
    StepKeys,
)
from provisiond.host.jinja import make_environment
from provisiond.model.settings import HookAction, ServiceSpec, StateAttributes, Step
from provisiond.model.work import Job
from provisiond.process.daemon import configure_logging
from provisiond.testing.slapd import Slapd
from tests.support import (
    DEMO_BASE,
    SyslogCapture,
    add_item,
    connect,
    mode_of,
    read,
    running,
    wait_for,
    write_config,
)

# -- the keyed FIFO ---------------------------------------------------------------------------


def test_the_first_holds_a_key_and_the_others_follow_in_order_of_arrival() -> None:
    fifo: KeyedFifo[str] = KeyedFifo()
    assert fifo.enter("k", "a") is True
    assert fifo.enter("k", "b") is False
    assert fifo.enter("other", "x") is True  # another key is independent
    assert fifo.enter("k", "c") is False
    assert fifo.waiting() == 2
    assert fifo.leave("k") == "b"  # b holds it now
    assert fifo.leave("k") == "c"
    assert fifo.leave("k") is None
    assert fifo.enter("k", "d") is True  # free again
    assert fifo.leave("other") is None


def test_dropping_the_waiting_keeps_the_holders() -> None:
    fifo: KeyedFifo[str] = KeyedFifo()
    fifo.enter("k", "a")
    fifo.enter("k", "b")
    fifo.enter("j", "c")
    fifo.enter("j", "d")
    assert sorted(fifo.drop_waiting()) == ["b", "d"]
    assert fifo.waiting() == 0
    assert fifo.leave("k") is None and fifo.leave("j") is None


def test_leaving_a_key_nobody_holds_is_a_bug() -> None:
    with pytest.raises(KeyError):
        KeyedFifo[str]().leave("k")


def _spec(serialize: str = "", step_key: str = "") -> ServiceSpec:
    step = Step(name="work", code=5, action=HookAction(argv=("true",)), serialize=step_key)
    return ServiceSpec(name="svc", base=DEMO_BASE, filter="(objectClass=*)",
                       attributes=StateAttributes(), values=(), outputs=(),
                       steps={"add": (step,)}, serialize=serialize, vars={"lib": "L1"})


def _job(spec: ServiceSpec, uuid: str, owner: str = "x") -> Job:
    return Job(service=spec, uuid=uuid, dn=f"cn={uuid},{DEMO_BASE}", request="add",
               values={"owner": owner})


def test_service_keys_park_work_and_hand_the_key_on_in_order() -> None:
    resumed: list[Work] = []
    keys = ServiceKeys(make_environment([]), resumed.append)
    spec = _spec("lib-{{ values.owner }}")
    works = [Work("svc", f"u{i}", f"cn=u{i}") for i in range(4)]
    assert keys.admit(works[0], _job(spec, "u0")) is Admission.GO
    assert keys.held("u0") == "lib-x"
    assert keys.admit(works[1], _job(spec, "u1")) is Admission.PARKED
    assert keys.admit(works[2], _job(spec, "u2")) is Admission.PARKED
    assert keys.admit(works[3], _job(spec, "u3", owner="y")) is Admission.GO  # its own key
    assert keys.parked() == 2 and keys.held("u1") is None
    keys.release("u0")
    assert resumed == [works[1]]  # u1 holds the key now and is submitted again
    assert keys.held("u1") == "lib-x"
    assert keys.admit(works[1], _job(spec, "u1")) is Admission.GO  # its turn, not parked again
    keys.release("u1")
    assert resumed == [works[1], works[2]]
    keys.release("u2")
    keys.release("u3")
    assert keys.parked() == 0 and keys.held("u2") is None
    keys.release("u9")  # holds nothing: nothing happens


def _a_holds_b_waits(source: str) -> tuple[ServiceKeys, list[Work], list[Work]]:
    """Service keys of `source`, the work they submitted again, and works a, b, c of service
    svc: a holds its key, b waits for it."""
    resumed: list[Work] = []
    keys = ServiceKeys(make_environment([]), resumed.append)
    works = [Work("svc", uuid, f"cn={uuid}") for uuid in ("a", "b", "c")]
    assert keys.admit(works[0], _job(_spec(source), "a")) is Admission.GO
    assert keys.admit(works[1], _job(_spec(source), "b")) is Admission.PARKED
    return keys, resumed, works


def test_a_work_whose_key_changed_meanwhile_passes_the_old_one_on() -> None:
    keys, resumed, (a, b, c) = _a_holds_b_waits("lib-{{ values.owner }}")
    keys.admit(c, _job(_spec("lib-{{ values.owner }}"), "c"))
    keys.release("a")
    assert resumed == [b]
    # b's entry changed while it waited: it now wants lib-z; lib-x goes on to c
    assert keys.admit(b, _job(_spec("lib-{{ values.owner }}"), "b", owner="z")) is Admission.GO
    assert resumed == [b, c] and keys.held("c") == "lib-x" and keys.held("b") == "lib-z"


def test_an_empty_key_means_no_serialization_and_a_bad_one_fails() -> None:
    keys = ServiceKeys(make_environment([]), lambda work: None)
    for uuid in ("a", "b"):
        blank = _spec("{{ values.owner if values.owner != 'x' else '' }}")
        assert keys.admit(Work("svc", uuid, "cn=a"), _job(blank, uuid)) is Admission.GO
        assert keys.held(uuid) is None
    assert keys.admit(Work("svc", "c", "cn=c"), _job(_spec(""), "c")) is Admission.GO
    with pytest.raises(KeyFailed, match=r"serialize: .*refs\.library\.dn.*library"):
        keys.admit(Work("svc", "d", "cn=d"), _job(_spec("{{ refs.library.dn }}"), "d"))


def test_a_stop_drops_the_parked_and_parks_nothing_more() -> None:
    keys, resumed, (a, b, c) = _a_holds_b_waits("lib")
    assert keys.close() == [b]
    assert keys.admit(c, _job(_spec("lib"), "c")) is Admission.STOPPING
    keys.release("a")
    assert resumed == [] and keys.parked() == 0


def test_step_keys_let_threads_in_one_at_a_time_in_order_of_arrival() -> None:
    keys = StepKeys(make_environment([]))
    spec = _spec(step_key="{{ vars.lib }}")
    step = spec.steps["add"][0]
    order: list[str] = []
    inside: list[str] = []
    overlap = threading.Event()
    first_in, gate = threading.Event(), threading.Event()

    def job(name: str) -> None:
        with keys.hold(_job(spec, name), step, {}):
            if inside:
                overlap.set()
            inside.append(name)
            order.append(name)
            first_in.set()
            gate.wait(10)  # the first holds the key until every other one waits
            time.sleep(0.01)
            inside.remove(name)

    threads = []
    for number, name in enumerate(("a", "b", "c", "d")):
        thread = threading.Thread(target=job, args=(name,))
        thread.start()
        threads.append(thread)
        first_in.wait(5)
        wait_for(lambda n=number: keys.waiting() == n, timeout=5, what=f"{number} waiting")
    gate.set()
    for thread in threads:
        thread.join(10)
    assert order == ["a", "b", "c", "d"] and not overlap.is_set()


def test_a_step_key_that_cannot_render_raises_a_step_error() -> None:
    from provisiond.steps.base import StepError

    keys = StepKeys(make_environment([]))
    spec = _spec(step_key="{{ refs.library.dn }}")
    with pytest.raises(StepError, match="serialize"), \
            keys.hold(_job(spec, "a"), spec.steps["add"][0], {}):
        pass


# -- loading ----------------------------------------------------------------------------------


def _config(tmp_path: Path, service: dict[str, Any]) -> Path:
    path = tmp_path / "provisiond.yaml"
    path.write_text(yaml.safe_dump({"ldap": {"uri": "ldap://127.0.0.1:1"},
                                    "state_dir": str(tmp_path / "state"),
                                    "services": {"custom": service}}))
    return path


@pytest.mark.parametrize(("where", "key", "reason"), [
    ("service", 7, "must be a string"),
    ("service", "{{ values.owner", "template syntax error"),
    ("service", "{{ outputs.x }}", "outputs is not"),
    ("step", 7, "must be a template in quotes"),
    ("step", "{{ nothing.x }}", "nothing is not"),
])
def test_a_bad_key_stops_the_load_naming_file_and_key(
        tmp_path: Path, where: str, key: Any, reason: str) -> None:
    root = tmp_path / "root"
    service = timed_service(root, tmp_path / "times")
    if where == "service":
        service["serialize"] = key
        expected = "services.custom.serialize"
    else:
        service["steps"]["add"][0]["serialize"] = key
        expected = "services.custom.steps.add[0].serialize"
    path = _config(tmp_path, service)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    error = caught.value.errors[0]
    assert (error.file, error.key) == (str(path), expected), caught.value
    assert reason in error.reason


def test_keys_load_on_a_service_and_on_a_step(tmp_path: Path) -> None:
    service = timed_service(tmp_path / "root", tmp_path / "times",
                            serialize="{{ refs.library.dn }}")
    service["steps"]["add"][0]["serialize"] = "{{ vars.lib }}-{{ outputs.x }}"
    spec = load_config(_config(tmp_path, service)).services[0]
    assert spec.serialize == "{{ refs.library.dn }}"
    assert spec.steps["add"][0].serialize == "{{ vars.lib }}-{{ outputs.x }}"


# -- the engine on a real slapd ---------------------------------------------------------------

HOOK = """#!/bin/sh
# timed NAME FILE SECONDS: records when it ran for NAME
echo "start $(date +%s.%N) $1" >> "$2"
sleep "$3"
echo "end $(date +%s.%N) $1" >> "$2"
"""


# the same, but the first run for NAME ends with exit 75 (transient: retried as a resume)
FLAKY = HOOK.replace("timed NAME", "flaky NAME").replace(
    'sleep "$3"\n', 'sleep "$3"\n[ -e "$2.$1" ] || { touch "$2.$1"; '
    'echo "end $(date +%s.%N) $1" >> "$2"; exit 75; }\n')


@pytest.fixture
def hooks(tmp_path: Path) -> Path:
    directory = tmp_path / "hooks"
    directory.mkdir()
    for name, text in (("timed", HOOK), ("flaky", FLAKY)):
        path = directory / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return directory


def timed_step(name: str, times: Path, seconds: float, **more: Any) -> dict[str, Any]:
    return {"name": name, "code": 5,
            "hook": ["timed", "{{ values.name }}", str(times), str(seconds)], **more}


def timed_service(root: Path, times: Path, seconds: float = 0.1, *,
                  filter: str = "(objectClass=provisiondDemoItem)",
                  steps: list[dict[str, Any]] | None = None, **more: Any) -> dict[str, Any]:
    return {
        "base": DEMO_BASE, "filter": filter,
        "attributes": {"mode": "provisiondMode", "state": "provisiondState",
                       "execution_date": "provisiondExecutionDate",
                       "return_value": "provisiondReturnValue", "message": "provisiondMessage"},
        "values": {"name": {"attribute": "cn", "type": "posix_name"},
                   "owner": {"attribute": "provisiondOwner", "type": "posix_name",
                             "required": False, "default": "root"}},
        "vars": {"lib": "L1"},
        "roots": [str(root)],
        "invalid_code": 4,
        "steps": {"add": steps or [timed_step("work", times, seconds)], "modify": "add"},
        **more,
    }


def intervals(times: Path) -> list[tuple[float, float, str]]:
    """(start, end, name) of every run recorded in `times`, by start."""
    starts: dict[str, float] = {}
    found = []
    for line in times.read_text().splitlines():
        what, stamp, name = line.split()
        if what == "start":
            starts[name] = float(stamp)
        else:
            found.append((starts.pop(name), float(stamp), name))
    assert not starts, f"runs that never ended: {starts}"
    return sorted(found)


def overlapping(runs: list[tuple[float, float, str]]) -> list[tuple[str, str]]:
    """Pairs of runs that were in the hook at the same time."""
    return [(a[2], b[2]) for i, a in enumerate(runs) for b in runs[i + 1:] if b[0] < a[1]]


def all_added(conn: Any, dns: list[str], timeout: float = 60) -> None:
    for dn in dns:
        wait_for(lambda dn=dn: mode_of(conn, dn) == "added", timeout=timeout,
                 what=f"{dn} added")
        assert read(conn, dn)["provisiondReturnValue"] == "0"


@pytest.mark.slow
def test_one_service_key_never_lets_two_entries_overlap(
        slapd: Slapd, tmp_path: Path, hooks: Path) -> None:
    root, times = tmp_path / "root", tmp_path / "times"
    root.mkdir()
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    syslog = SyslogCapture(cfg / "syslog.sock")
    service = timed_service(root, times, serialize="library-{{ values.owner }}")
    conn = connect(slapd)
    try:
        with running(write_config(cfg, slapd, {"custom": service}, workers=4,
                                  hooks={"path": [str(hooks)]})):
            dns = [add_item(conn, f"item{i:02d}") for i in range(20)]
            all_added(conn, dns)
        log = syslog.text()
    finally:
        syslog.close()
    runs = intervals(times)
    assert len(runs) == 20
    assert overlapping(runs) == []
    waiting = [line for line in log.splitlines() if "event=waiting" in line]
    assert waiting and all("serialize=library-root" in line for line in waiting), log
    claimed = [line for line in log.splitlines() if "event=claimed" in line]
    assert len(claimed) == 20 and all("serialize=library-root" in line for line in claimed)


@pytest.mark.slow
def test_a_job_deferred_to_a_retry_lets_go_and_waits_again_in_line(
        slapd: Slapd, tmp_path: Path, hooks: Path) -> None:
    root, times = tmp_path / "root", tmp_path / "times"
    root.mkdir()
    step = {**timed_step("work", times, 0.1), "hook": ["flaky", "{{ values.name }}",
                                                     str(times), "0.1"]}
    service = timed_service(root, times, steps=[step], serialize="library-{{ values.owner }}")
    conn = connect(slapd)
    with running(write_config(tmp_path / "cfg", slapd, {"custom": service}, workers=4,
                              hooks={"path": [str(hooks)]})) as engine:
        dns = [add_item(conn, f"item{i}") for i in range(4)]
        all_added(conn, dns)
        assert engine.counters.retried >= 4
    runs = intervals(times)
    assert len(runs) == 8 and overlapping(runs) == []  # every entry twice, one at a time


@pytest.mark.slow
def test_entries_with_different_keys_run_at_the_same_time(
        slapd: Slapd, tmp_path: Path, hooks: Path) -> None:
    root, times = tmp_path / "root", tmp_path / "times"
    root.mkdir()
    service = timed_service(root, times, seconds=1.5, serialize="library-{{ values.owner }}")
    conn = connect(slapd)
    with running(write_config(tmp_path / "cfg", slapd, {"custom": service}, workers=4,
                              hooks={"path": [str(hooks)]})):
        dns = [add_item(conn, f"item{i}", provisiondOwner=f"owner{i}") for i in range(4)]
        all_added(conn, dns)
    assert overlapping(intervals(times)) != []


@pytest.mark.slow
def test_a_step_key_serializes_only_that_step(
        slapd: Slapd, tmp_path: Path, hooks: Path) -> None:
    root, free, locked = tmp_path / "root", tmp_path / "free", tmp_path / "locked"
    root.mkdir()
    service = timed_service(root, free, steps=[
        timed_step("free", free, 1.0),
        timed_step("locked", locked, 0.3, serialize="tgt-{{ vars.lib }}"),
    ])
    conn = connect(slapd)
    with running(write_config(tmp_path / "cfg", slapd, {"custom": service}, workers=4,
                              hooks={"path": [str(hooks)]})):
        dns = [add_item(conn, f"item{i}") for i in range(4)]
        all_added(conn, dns)
    assert len(intervals(locked)) == 4 and overlapping(intervals(locked)) == []
    assert overlapping(intervals(free)) != []


@pytest.mark.slow
def test_a_key_shared_by_two_services_serializes_across_them(
        slapd: Slapd, tmp_path: Path, hooks: Path) -> None:
    root, times = tmp_path / "root", tmp_path / "times"
    root.mkdir()
    services = {
        name: timed_service(root, times, filter=f"(&(objectClass=provisiondDemoItem)"
                            f"(cn={name}-*))", serialize="changer-{{ vars.lib }}")
        for name in ("tapes", "drives")
    }
    conn = connect(slapd)
    with running(write_config(tmp_path / "cfg", slapd, services, workers=4,
                              hooks={"path": [str(hooks)]})):
        dns = [add_item(conn, f"{name}-{i}") for i in range(5) for name in ("tapes", "drives")]
        all_added(conn, dns)
    runs = intervals(times)
    assert len(runs) == 10 and overlapping(runs) == []


def test_a_service_key_that_cannot_render_fails_the_entry_with_invalid_code(
        slapd: Slapd, tmp_path: Path, hooks: Path) -> None:
    root, times = tmp_path / "root", tmp_path / "times"
    root.mkdir()
    service = timed_service(root, times, serialize="{{ refs.library.dn }}")
    conn = connect(slapd)
    with running(write_config(tmp_path / "cfg", slapd, {"custom": service},
                              hooks={"path": [str(hooks)]})):
        dn = add_item(conn, "orphan")
        wait_for(lambda: read(conn, dn).get("provisiondReturnValue") == "4",
                 what="the failure")
    entry = read(conn, dn)
    assert entry["provisiondMode"] == "adding"
    message = entry["provisiondMessage"]
    assert "serialize" in message and "{{ refs.library.dn }}" in message
    assert "library" in message.split("{{ refs.library.dn }}", 1)[1], message
    assert not times.exists()  # no step ran


def test_a_step_key_that_cannot_render_fails_the_step_with_its_code(
        slapd: Slapd, tmp_path: Path, hooks: Path) -> None:
    root, times = tmp_path / "root", tmp_path / "times"
    root.mkdir()
    service = timed_service(root, times, steps=[
        {**timed_step("locked", times, 0), "code": 6, "serialize": "{{ refs.library.dn }}"}])
    conn = connect(slapd)
    with running(write_config(tmp_path / "cfg", slapd, {"custom": service},
                              hooks={"path": [str(hooks)]})):
        dn = add_item(conn, "orphan")
        wait_for(lambda: read(conn, dn).get("provisiondReturnValue") == "6",
                 what="the failure")
    assert "serialize" in read(conn, dn)["provisiondMessage"]
    assert not times.exists()


@pytest.mark.slow
def test_a_stop_does_not_wait_for_parked_entries(
        slapd: Slapd, tmp_path: Path, hooks: Path) -> None:
    root, times = tmp_path / "root", tmp_path / "times"
    root.mkdir()
    service = timed_service(root, times, seconds=1.5, serialize="one")
    config = load_config(write_config(tmp_path / "cfg", slapd, {"custom": service},
                                      hooks={"path": [str(hooks)]}))
    configure_logging(config, foreground=False)
    engine = Engine(config)
    stop = threading.Event()
    engine.start_workers()
    engine.run_streams(stop)
    conn = connect(slapd)
    dns = [add_item(conn, f"item{i}") for i in range(4)]
    try:
        wait_for(lambda: engine.keys.parked() == 3, what="three entries parked")
    finally:
        stop.set()
        started = time.monotonic()
        finished = engine.shutdown(grace=20)
    assert finished and time.monotonic() - started < 5
    runs = intervals(times)
    assert len(runs) == 1  # the holder finished; the parked never started
    assert sorted(mode_of(conn, dn) for dn in dns) == ["add", "add", "add", "added"]
