"""The bound: what the daemon must do at minimum per entry, without the engine.

Per entry: the claim modify (the daemon's changes, its claim token in the message, and its
Assertion control), one spawn of `/bin/true` as hooks are run (pipes, new session, minimal
environment), and the report modify. No read: the change event already carries the entry,
and a claim can prove it saw the current entry (its Assertion, or RFC 4527 PostRead) without
one. No change detection, validation, templates, render, journal, logging or supervision.

It runs in as many processes as the daemon used, each with `workers` threads and one LDAP
connection per thread, as `python -m bench.bound` children: the benchmark's own threads
(the syslog reader) then share no interpreter with it. A child reads its job as one JSON line
on stdin (the password too: never on argv), connects, prints `ready`, waits for `go`, and
prints its result as one JSON line.
"""

from __future__ import annotations

import contextlib
import json
import queue
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from bench.harness import REPO, BenchError, connect_to
from provisiond.core.journal import new_token
from provisiond.directory.controls import assertion_control
from provisiond.model import lifecycle
from provisiond.model.settings import StateAttributes

DEFINITION = "claim modify (+ Assertion) + spawn /bin/true + report modify per entry, no read"
NAMES = StateAttributes(mode="provisiondMode", state="provisiondState",
                        execution_date="provisiondExecutionDate",
                        return_value="provisiondReturnValue", message="provisiondMessage")
# How every bound entry reads when it is loaded: requested, pending (workload.item_ldif).
PENDING = lifecycle.EntryState(mode="add", state="0", execution_date="0", return_value=None)
HOOK_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


@dataclass(frozen=True)
class Bound:
    entries: int
    elapsed: float  # `go` -> the last process's result
    processes: int
    threads: int  # per process
    cpu: float  # CPU seconds of the bound processes themselves, `go` -> done
    spawned_cpu: float  # ... of the /bin/true processes they reaped

    @property
    def rate(self) -> float:
        return self.entries / self.elapsed


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


# -- one process (the child) --------------------------------------------------------------------


def provision(write: Any, dn: str, name: str) -> None:
    write.modify(dn, lifecycle.claim_changes(NAMES, PENDING, "add", new_token()),
                 controls=[assertion_control(lifecycle.claim_filter(NAMES, "add"))])
    if write.result["result"] != 0:
        raise BenchError(f"claim {dn}: {write.result['description']}")
    hook = subprocess.run(["/bin/true", name], stdin=subprocess.DEVNULL, capture_output=True,
                          env=HOOK_ENV, cwd="/", close_fds=True, start_new_session=True,
                          timeout=20, check=False)
    if hook.returncode != 0:
        raise BenchError(f"/bin/true exited {hook.returncode}")
    write.modify(dn, lifecycle.success_changes(NAMES, "add", datetime.now(UTC), {}, "ok"))
    if write.result["result"] != 0:
        raise BenchError(f"report {dn}: {write.result['description']}")


def child(stdin: IO[str], stdout: IO[str]) -> int:
    job = json.loads(stdin.readline())
    work: queue.SimpleQueue[str] = queue.SimpleQueue()
    for name in job["names"]:
        work.put(name)
    errors: list[str] = []
    connections = [connect_to(job["uri"], job["bind_dn"], job["password"])
                   for _ in range(job["threads"])]

    def worker(write: Any) -> None:
        try:
            while not errors:
                try:
                    name = work.get_nowait()
                except queue.Empty:
                    return
                provision(write, f"cn={name},{job['base']}", name)
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            errors.append(str(exc))

    print("ready", file=stdout, flush=True)
    if stdin.readline().strip() != "go":
        return 1
    cpu, spawned = cpu_seconds(resource.RUSAGE_SELF), cpu_seconds(resource.RUSAGE_CHILDREN)
    pool = [threading.Thread(target=worker, args=(c,), daemon=True) for c in connections]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    result = {"errors": errors, "cpu": cpu_seconds(resource.RUSAGE_SELF) - cpu,
              "spawned_cpu": cpu_seconds(resource.RUSAGE_CHILDREN) - spawned}
    print(json.dumps(result), file=stdout, flush=True)
    for connection in connections:
        connection.unbind()
    return 0


# -- the run (the parent) -----------------------------------------------------------------------


def run(uri: str, bind_dn: str, password: str, base: str, names: list[str], processes: int,
        threads: int, timeout: float) -> Bound:
    """The bound over `names` (entries under `base` in mode add), split evenly between
    `processes` children of `threads` threads each."""
    lines: queue.SimpleQueue[tuple[int, str]] = queue.SimpleQueue()
    children: list[subprocess.Popen[str]] = []

    def read(index: int, out: IO[str]) -> None:
        for line in out:
            lines.put((index, line.strip()))
        lines.put((index, ""))

    def collect(what: str, deadline: float) -> dict[int, str]:
        got: dict[int, str] = {}
        while len(got) < len(children):
            try:
                index, line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise BenchError(f"bound: timed out waiting for {what}") from None
            if not line:  # its end of output
                if index in got:
                    continue
                code = children[index].wait(timeout=5)
                raise BenchError(f"bound: process {index} exited {code} before {what}")
            got[index] = line
        return got

    finished = False
    try:
        for index in range(processes):
            process = subprocess.Popen(
                [sys.executable, "-m", "bench.bound"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, text=True, cwd=str(REPO),
                env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "LANG": "C.UTF-8"})
            children.append(process)
            assert process.stdin is not None and process.stdout is not None
            job = {"uri": uri, "bind_dn": bind_dn, "password": password, "base": base,
                   "names": names[index::processes], "threads": threads}
            process.stdin.write(json.dumps(job) + "\n")
            process.stdin.flush()
            threading.Thread(target=read, args=(index, process.stdout), daemon=True).start()
        collect("ready", time.monotonic() + 30)
        started = time.monotonic()
        for process in children:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.close()
        results = [json.loads(line) for line in collect("results", started + timeout).values()]
        elapsed = time.monotonic() - started
        finished = True
    except BrokenPipeError:
        raise BenchError("bound: a process exited before it was told to start") from None
    finally:
        for process in children:
            if process.stdin is not None:
                with contextlib.suppress(OSError):  # a child still waiting for `go` exits
                    process.stdin.close()
            try:
                process.wait(timeout=5 if finished else 0.1)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    errors = [error for result in results for error in result["errors"]]
    if errors:
        raise BenchError(f"bound: {errors[0]}")
    return Bound(entries=len(names), elapsed=elapsed, processes=processes, threads=threads,
                 cpu=sum(r["cpu"] for r in results),
                 spawned_cpu=sum(r["spawned_cpu"] for r in results))


if __name__ == "__main__":
    sys.exit(child(sys.stdin, sys.stdout))
