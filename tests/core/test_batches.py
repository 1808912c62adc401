"""Batch renders (core/batches.py): a job that reaches a file of all entries is parked, its
worker freed, and one render does the step for every parked job: a burst is rendered (and
applied) a handful of times whatever the number of workers; an entry is listed in such a file
only once its earlier steps are done, so an apply never names a device not made yet."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from provisiond.core.batches import Parked, RenderBatches
from provisiond.testing.slapd import Slapd
from tests.support import (
    add_item,
    connect,
    demo_service,
    mode_of,
    read,
    running,
    wait_for,
    write_config,
)

# A hook that makes the entry's "device" ($2/devices/$1), after `$3` seconds.
MAKE_DEVICE = """#!/bin/sh
sleep "$3"
mkdir -p "$2/devices" && touch "$2/devices/$1"
"""

# The apply: refuses a file naming an entry whose device does not exist (as tgt would skip a
# missing backing store); one line per run in applies.log.
APPLY = """#!/bin/sh
root="$2"
missing=""
for name in $(grep "$(printf '\\t')" "$1" | cut -f1); do
    [ -e "$root/devices/$name" ] || missing="$missing $name"
done
echo run >> "$root/applies.log"
if [ -n "$missing" ]; then
    echo "no device for:$missing" >&2
    exit 1
fi
"""


def site(tmp_path: Path, slapd: Slapd, workers: int = 4) -> tuple[Path, Path]:
    """The demo kind: a hook making the entry's device, then the index of all entries with
    an apply that checks every listed device exists. (config path, root)"""
    root = tmp_path / "root"
    root.mkdir()
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    for name, text in (("make-device", MAKE_DEVICE), ("apply-index", APPLY)):
        (hooks / name).write_text(text)
        (hooks / name).chmod(0o755)
    steps = {"add": [
        {"name": "make device", "code": 5,
         "hook": ["make-device", "{{ values.name }}", "{{ vars.root }}",
                  "{{ values.note if values.note else 0 }}"]},
        {"name": "write index", "code": 8, "render": {
            "template": "demo/index.conf.j2", "path": "{{ vars.root }}/index.conf",
            "scope": "all", "on_change": ["apply-index", "{{ path }}", "{{ vars.root }}"]}},
    ]}
    config = write_config(tmp_path / "cfg", slapd, demo_service(root, steps=steps),
                          hooks={"path": [str(hooks)], "timeout": 20, "kill_grace": 1},
                          workers=workers)
    return config, root


def applies(root: Path) -> int:
    log = root / "applies.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.mark.slow
def test_a_burst_of_300_entries_with_4_workers_is_rendered_a_handful_of_times(
        slapd: Slapd, tmp_path: Path) -> None:
    config, root = site(tmp_path, slapd)
    conn = connect(slapd)
    dns = [add_item(conn, f"item{i:03d}") for i in range(300)]  # all waiting at the start
    with running(config) as engine:
        for dn in dns:
            wait_for(lambda dn=dn: mode_of(conn, dn) in ("added", "adding") and
                     read(conn, dn).get("provisiondReturnValue") is not None, 120,
                     f"{dn} done")
        renders = engine.batches.renders
    failed = [dn for dn in dns if read(conn, dn).get("provisiondReturnValue") != "0"]
    assert failed == [], read(conn, failed[0]).get("provisiondMessage")
    listed = [line for line in (root / "index.conf").read_text().splitlines() if "\t" in line]
    assert len(listed) == 300
    # 300 jobs over 4 workers: waiting in their workers, they shared renders four at a time
    # (about 75); parked, a few renders serve them all
    assert 1 <= applies(root) <= renders <= 12, (applies(root), renders)


def test_an_entry_is_listed_only_once_its_earlier_steps_are_done(
        slapd: Slapd, tmp_path: Path) -> None:
    config, root = site(tmp_path, slapd)
    conn = connect(slapd)
    with running(config):
        slow = add_item(conn, "slow", description="3")  # its device comes after 3 seconds
        wait_for(lambda: mode_of(conn, slow) == "adding", 10, "slow claimed")
        fast = add_item(conn, "fast")
        wait_for(lambda: mode_of(conn, fast) == "added", 10, "fast added")
        assert read(conn, fast).get("provisiondReturnValue") == "0", \
            read(conn, fast).get("provisiondMessage")
        assert "slow\t" not in (root / "index.conf").read_text()  # its device is not made yet
        wait_for(lambda: mode_of(conn, slow) == "added", 15, "slow added")
    assert read(conn, slow).get("provisiondReturnValue") == "0", \
        read(conn, slow).get("provisiondMessage")
    assert "slow\t" in (root / "index.conf").read_text()


# -- the batcher alone ----------------------------------------------------------------------


def test_parked_jobs_are_rendered_together_when_the_engine_is_quiet(tmp_path: Path) -> None:
    rendered: list[list[str]] = []
    resumed: list[Parked] = []
    quiet = {"now": False}

    def render(jobs: list[Parked]) -> BaseException | None:
        rendered.append([job.plan for job in jobs])
        return ValueError("apply failed") if len(rendered) == 2 else None

    batches = RenderBatches(render, resumed.append, lambda: quiet["now"], window=30)
    batches.start()
    path = tmp_path / "index.conf"
    for name in ("a", "b", "c"):
        batches.park(Parked(path, time.monotonic(), name, name))
    batches.poke()
    time.sleep(0.2)
    assert rendered == []  # not quiet, nobody waited 30 s: more may come
    quiet["now"] = True
    batches.poke()
    wait_for(lambda: len(resumed) == 3, 5, "three resumed")
    assert rendered == [["a", "b", "c"]]
    assert [job.error for job in resumed] == [None, None, None]
    batches.park(Parked(path, time.monotonic(), "d", "d"))
    wait_for(lambda: len(resumed) == 4, 5, "d resumed")
    assert str(resumed[-1].error) == "apply failed"  # the render's error goes to each job


def test_a_parked_job_waits_at_most_the_window(tmp_path: Path) -> None:
    resumed: list[Any] = []
    batches = RenderBatches(lambda jobs: None, resumed.append, lambda: False, window=0.2)
    batches.start()
    batches.park(Parked(tmp_path / "f", time.monotonic(), "a", "a"))
    wait_for(lambda: len(resumed) == 1, 5, "rendered after the window although never quiet")


def test_a_stop_renders_what_is_parked_at_once(tmp_path: Path) -> None:
    resumed: list[Any] = []
    batches = RenderBatches(lambda jobs: None, resumed.append, lambda: False, window=30)
    batches.start()
    batches.park(Parked(tmp_path / "f", time.monotonic(), "a", "a"))
    time.sleep(0.2)
    assert resumed == []  # busy engine, window not over: it waits for company
    batches.stop()
    wait_for(lambda: len(resumed) == 1, 5, "rendered at the stop, so it may still report")


def test_the_batchers_thread_ends_once_its_stop_has_rendered_everything(tmp_path: Path) -> None:
    """A reload builds a new engine: the old batcher's thread must end, or each SIGHUP left
    one behind holding the whole old engine (its services, journals and connections)."""
    resumed: list[Any] = []
    batches = RenderBatches(lambda jobs: None, resumed.append, lambda: False, window=30)
    batches.start()
    batches.park(Parked(tmp_path / "f", time.monotonic(), "a", "a"))
    batches.stop()
    assert batches.join(timeout=5)
    assert len(resumed) == 1  # the parked job was rendered and resumed before the end


def test_a_batcher_stopped_with_nothing_parked_ends(tmp_path: Path) -> None:
    batches = RenderBatches(lambda jobs: None, lambda parked: None, lambda: True, window=30)
    batches.start()
    time.sleep(0.1)  # its thread waits for a job
    batches.stop()
    assert batches.join(timeout=5)


def test_a_job_parked_after_the_stop_is_rendered_at_once(tmp_path: Path) -> None:
    """A worker still busy at the stop may reach its render after the batcher's thread has
    ended: it must not wait for a thread that is gone (its entry would miss the grace)."""
    resumed: list[Any] = []
    batches = RenderBatches(lambda jobs: None, resumed.append, lambda: False, window=30)
    batches.start()
    batches.stop()
    assert batches.join(timeout=5)
    batches.park(Parked(tmp_path / "f", time.monotonic(), "late", "late"))
    wait_for(lambda: len(resumed) == 1, 5, "the late job rendered and resumed")
