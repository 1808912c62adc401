"""The engine: from change notifications to claimed, provisioned and reported entries.

    change stream --> decide (lifecycle) --> now: worker queue / later: scheduler
    worker: (re-read) -> intake -> journal -> claim (CAS) -> pipeline (parked at batch
            renders) -> report -> forget

Guarantees, and where they come from:
- one entry is never processed twice at once: `_busy` holds the UUIDs in the hands of a
  worker; a change arriving meanwhile waits in `_again` and is looked at afterwards;
- exactly once across daemons: the claim is a compare-and-swap on the mode (lifecycle), and a
  resume needs proof that the claim was ours (journal.ownership);
- nothing stranded: the journal names this daemon's claims; they are resumed at start, ahead
  of every request (a daemon in a crash loop still reaches them), and on every reconnect;
- nothing lost: a change's stream sequence numbers stay outstanding until the change is
  settled (handled, or moot); a change deferred to a retry carries them along, so a stop
  before the retry leaves the cookie before it and the restart sees the change again
  (watermark); future-dated entries, which a cookie moves past, are found again by `recover`;
- every claimed entry ends with an outcome in the directory: an unexpected exception fails it
  with a code and a message, and a report the server refuses is replaced by a failure report.

This module holds what must share one lock: the queue, the entries in hand (busy, again,
retrying, parked for a key or a batch render) and the routing between them. Everything that
can be decided apart from that state lives apart and is called from here: claims.py (the
compare-and-swap), intake.py (what a claim is for), pipeline.py (the steps), batches.py
(renders shared by parked jobs), serialize.py, waiting.py, parents.py, reporting.py,
recovery.py. It is long for that reason.
"""

from __future__ import annotations

import itertools
import logging
import queue
import random
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Literal

import jinja2

from provisiond.aggregates.mirror import Aggregates
from provisiond.aggregates.references import Unresolved
from provisiond.aggregates.resolver import Resolver
from provisiond.core import parents
from provisiond.core.batches import Parked, RenderBatches
from provisiond.core.claims import Claimed, Claimer
from provisiond.core.clock import Clock
from provisiond.core.intake import Deferred, Intake
from provisiond.core.pipeline import Pipeline, StepFailed, Suspend
from provisiond.core.recovery import LAST_WRITER, Recovery
from provisiond.core.reporting import Interrupted, Reporter
from provisiond.core.runtime import Continuation, Counters, ServiceRuntime, Work
from provisiond.core.scheduler import Scheduler
from provisiond.core.serialize import Admission, KeyFailed, ServiceKeys
from provisiond.core.waiting import Waiting
from provisiond.directory.access import Directory, Entry
from provisiond.directory.connection import (
    ConnectionFactory,
    DirectoryUnavailable,
    closing_thread_connections,
)
from provisiond.directory.stream import Change
from provisiond.exitcodes import EX_FAILED, EX_OK, EX_UNAVAILABLE
from provisiond.host.hostlock import AggregateLocks
from provisiond.host.jinja import make_environment
from provisiond.host.tempsweep import sweep
from provisiond.logfmt import kv
from provisiond.model import lifecycle
from provisiond.model.settings import Config, ServiceSpec
from provisiond.model.work import Job

log = logging.getLogger("provisiond.engine")

COOKIE_SAVE_INTERVAL = 1.0
AGGREGATE_REFRESH_SECONDS = 60.0
RECONNECT_SPREAD_SECONDS = 1.0
PRIORITY_RESUME, PRIORITY_REQUEST, PRIORITY_STOP = 0, 1, 2


@dataclass(frozen=True)
class _Taken:
    """An entry examined and claimed: its job, and for an invalid one its failure."""

    job: Job
    failure: tuple[int, str] | None


class Engine:
    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or Clock()
        self.factory = ConnectionFactory(config.ldap)
        self.directory = Directory(self.factory)
        self.env: jinja2.Environment = make_environment(config.templates)
        self.aggregates = Aggregates(self.factory, config.services, config.state_dir)
        self.pipeline = Pipeline(self.env, config.hooks, self.aggregates)
        self.keys = ServiceKeys(self.env, self._unpark)  # `serialize:` (core/serialize.py)
        self.scheduler = Scheduler(self.clock, self._due)
        self.resolver = Resolver(self.aggregates)  # references between entries
        self.waiting = Waiting(self.scheduler, self.clock, self.retry_delay)
        self.intake = Intake(self.resolver, self.waiting)
        self.counters = Counters()
        self._stopping = threading.Event()
        self.locks = AggregateLocks()
        self.claimer = Claimer(self.directory, self.counters)
        self.reporter = Reporter(self.directory, self.counters, self._stopping, config.retry)
        self.recovery = Recovery(self)
        self.services = {spec.name: ServiceRuntime(self, spec, self.factory, config.state_dir,
                                                   config.sync) for spec in config.services}
        self._queue: queue.PriorityQueue[tuple[int, int, Work | None]] = queue.PriorityQueue()
        self._order = itertools.count()  # FIFO within a priority
        self._lock = threading.Condition()
        self._busy: set[str] = set()
        self._again: dict[str, Work] = {}
        self._retrying: set[str] = set()
        self._threads: list[threading.Thread] = []
        self._refreshed: set[str] = set()
        self.first_sync = threading.Event()
        self._active = 0  # workers inside _process
        self.batches = RenderBatches(self._render_batch, self._continue, self._quiet)

    # -- change intake -------------------------------------------------------------------------

    def handle_change(self, rt: ServiceRuntime, change: Change) -> None:
        if not change.present:
            # Only a wait for an execution date ends here: our own claim also takes an entry
            # out of the stream's result set, and its retries must survive that.
            self.scheduler.cancel(("date", rt.spec.name, change.uuid))
            rt.watermark.handled(change.seq)
            return
        entry = Entry(dn=change.dn or "", uuid=change.uuid, attributes=change.attributes)
        self.consider(rt, entry, change.seq)

    def consider(self, rt: ServiceRuntime, entry: Entry, seq: int | None) -> None:
        """Route an entry seen in a change or a scan: now, later or not at all."""
        state = lifecycle.read_state(rt.spec.attributes, entry.attributes, rt.spec.lifecycle)
        decision = lifecycle.decide(state, self.clock.now())
        if decision.action is lifecycle.Action.WAIT and decision.due is not None:
            self.scheduler.add(("date", rt.spec.name, entry.uuid), decision.due,
                               Work(rt.spec.name, entry.uuid, entry.dn))
            log.info(kv(event="scheduled", service=rt.spec.name, dn=entry.dn, uuid=entry.uuid,
                        mode=decision.request, due=decision.due.strftime("%Y-%m-%d")))
        elif decision.action in (lifecycle.Action.ACT, lifecycle.Action.INVALID):
            self.submit(Work(rt.spec.name, entry.uuid, entry.dn,
                             seqs=(seq,) if seq is not None else (),
                             seen=entry if seq is not None else None))
            return
        rt.watermark.handled(seq)

    def submit(self, work: Work) -> None:
        with self._lock:
            if work.uuid in self._busy:
                earlier = self._again.get(work.uuid)
                seqs = (earlier.seqs if earlier else ()) + work.seqs
                kind = "resume" if earlier and earlier.kind == "resume" else work.kind
                self._again[work.uuid] = replace(work, kind=kind, seqs=seqs, progress=None)
                return
            self._busy.add(work.uuid)
        self._enqueue(work)

    def _enqueue(self, work: Work) -> None:
        priority = PRIORITY_REQUEST if work.kind == "request" else PRIORITY_RESUME
        self._queue.put((priority, next(self._order), work))

    def _due(self, work: Work) -> None:
        with self._lock:
            self._retrying.discard(work.uuid)
        self.submit(work)

    def in_hand(self, uuid: str) -> bool:
        """Whether a worker or a pending retry has the entry."""
        with self._lock:
            return uuid in self._busy or uuid in self._retrying

    def recover(self, rt: ServiceRuntime) -> None:
        self.recovery.recover(rt)

    def refresh_done(self, rt: ServiceRuntime) -> None:
        self._refreshed.add(rt.spec.name)
        if self._refreshed >= set(self.services):
            self.first_sync.set()

    # -- workers ---------------------------------------------------------------------------------

    def _worker(self) -> None:
        while True:
            _, _, work = self._queue.get()
            if work is None:
                return
            settled: bool | None = False
            with self._lock:
                self._active += 1
            if self.services[work.service].spec.serialize and work.continuation is None:
                self.keys.begin(work)  # later arrivals of its service wait for its admission
            try:
                settled = self._process(work)
            except Interrupted as exc:
                log.warning(kv(event="interrupted", service=work.service, uuid=work.uuid,
                               reason=str(exc)))
            except Exception:  # noqa: BLE001 - a bug must not kill the worker
                self.counters.count(work.service, "error")
                log.exception(kv(event="internal-error", service=work.service, uuid=work.uuid))
            finally:
                with self._lock:
                    self._active -= 1
                self.keys.end(work)
                self._finish(work, settled)
                self.batches.poke()

    def _finish(self, work: Work, settled: bool | None) -> None:
        """Release the entry. Its changes count as handled only when `settled`: a change
        deferred to a retry carries them along, one interrupted keeps the cookie before it.
        None: parked for its serialization key (core/serialize.py) or a batch render
        (core/batches.py), still in hand."""
        if settled is None:
            return
        self.keys.release(work.uuid)
        rt = self.services[work.service]
        if settled:
            for seq in work.seqs:
                rt.watermark.handled(seq)
        with self._lock:
            again = self._again.pop(work.uuid, None)
            if again is None or self._stopping.is_set():
                self._busy.discard(work.uuid)  # a dropped `again` leaves its seqs outstanding
                self._lock.notify_all()
                return
        self._enqueue(again)

    def _unpark(self, work: Work) -> None:
        """A parked Work holds its key now: to the queue again, unless the daemon stops."""
        with self._lock:
            if not self._stopping.is_set():
                self._enqueue(work)
                return
            self._busy.discard(work.uuid)  # its seqs stay outstanding: it comes back
            self._lock.notify_all()

    def fresh(self, rt: ServiceRuntime, work: Work) -> Entry | None:
        """The entry to decide on: as its change notification showed it, for a first look at
        a request (the claim asserts its entryCSN, so a change since makes the claim STALE
        and the entry is read then); read from the directory otherwise."""
        seen = work.seen
        if seen is not None and work.kind == "request" and work.attempt == 0 and \
                seen.attributes.get("entrycsn"):
            return seen
        attributes = (*rt.spec.ldap_attributes(), LAST_WRITER)
        entry = self.directory.read(work.dn, attributes) if work.dn else None
        if entry is None or entry.uuid != work.uuid:  # renamed, or gone
            entry = self.directory.find_uuid(rt.spec.base, work.uuid, attributes)
        return entry

    def _process(self, work: Work) -> bool | None:
        """Look at one entry now; True when the change that brought it is settled, None when
        parked until its serialization key is free (core/serialize.py)."""
        rt = self.services[work.service]
        spec, names = rt.spec, rt.spec.attributes
        if work.continuation is not None:  # back from a batch render: ours, claimed
            held = work.continuation
            return self._provision_claimed(rt, work, held.entry, held.job, held.started)
        try:
            entry = self.fresh(rt, work)
        except DirectoryUnavailable as exc:
            return self._retry_later(rt, work, f"directory unavailable: {exc}", outage=True)
        if entry is None:
            if work.kind == "resume":
                rt.journal.forget(work.uuid)
            return True
        state = lifecycle.read_state(names, entry.attributes, spec.lifecycle)
        invalid: str | None = None
        if work.kind == "resume":
            if not lifecycle.is_stranded(state):
                rt.journal.forget(work.uuid)
                return True
            try:
                if not self.recovery.prove(rt, entry):
                    return True
            except DirectoryUnavailable as exc:
                return self._retry_later(rt, work, f"directory unavailable: {exc}", outage=True)
            request = state.working_request or ""
        else:
            decision = lifecycle.decide(state, self.clock.now())
            if decision.action is lifecycle.Action.WAIT:
                self.consider(rt, entry, None)
                return True
            if decision.action is lifecycle.Action.IGNORE or decision.request is None:
                if lifecycle.is_stranded(state) and rt.journal.holds(entry.uuid):
                    self.submit_later_resume(rt, entry)
                return True
            request = decision.request
            if decision.action is lifecycle.Action.INVALID:
                invalid = decision.reason

        with rt.examining:  # one at a time for a service with `unique:` (ServiceRuntime)
            taken = self._examine_and_claim(rt, work, entry, state, request, invalid)
        if taken == "stale":  # changed since the notification: read it now
            return self._process(replace(work, seen=None))
        if not isinstance(taken, _Taken):
            return taken
        job, failure = taken.job, taken.failure
        started = time.monotonic()
        if failure is not None:
            self.reporter.failure(rt, entry, request, *failure, started)
            return True
        return self._provision_claimed(rt, work, entry, job, started)

    def _examine_and_claim(self, rt: ServiceRuntime, work: Work, entry: Entry,
                           state: lifecycle.EntryState, request: str,
                           invalid: str | None) -> _Taken | bool | None | Literal["stale"]:
        """Examine the entry, admit it to its serialization key, claim it (a request; a
        resume holds its claim): the job taken, with its failure if it is invalid; "stale"
        when the claim found the entry changed since the notification; else what
        `_process` returns."""
        spec = rt.spec
        found = self.intake.examine(spec, entry, request, invalid, work.kind == "request")
        if isinstance(found, Deferred):
            if found.why == "outage":
                return self._retry_later(rt, work, found.reason, outage=True)
            if found.why == "waiting" and found.reference is not None:
                return self._wait(rt, work, entry, request, found.reference, found.seen)
            return True  # a precondition unmet: until the entry changes
        job, invalid, invalid_code = found.job, found.invalid, found.code
        if invalid is None:
            try:
                admission = self.keys.admit(work, job)
            except KeyFailed as exc:
                invalid, invalid_code = str(exc), spec.invalid_code
            else:
                if admission is not Admission.GO:
                    return None if admission is Admission.PARKED else False
        failure = None if invalid is None else (invalid_code, f"validate: {invalid}")
        if work.kind == "request":
            csn = (entry.attributes.get("entrycsn") or (None,))[0] if entry is work.seen else None
            claimed, reason = self.claimer.claim(
                rt, entry, state, request, self.keys.held(entry.uuid), csn, failing=failure)
            if claimed is Claimed.STALE:
                return "stale"
            if claimed is Claimed.UNANSWERED:
                return self._retry_later(rt, work, reason, outage=True)
            if claimed is Claimed.NOT_OURS:
                return True  # lost: settled
        return _Taken(job, failure)

    def _provision_claimed(self, rt: ServiceRuntime, work: Work, entry: Entry, job: Job,
                           started: float) -> bool | None:
        """`_provision`, for an entry that must end with an outcome in the directory."""
        try:
            return self._provision(rt, work, entry, job, started)
        except (Interrupted, DirectoryUnavailable):
            raise
        except Exception as exc:  # noqa: BLE001 - claimed: it must end with an outcome
            log.exception(kv(event="internal-error", service=rt.spec.name, uuid=entry.uuid))
            self.aggregates.end(job)
            self.reporter.failure(rt, entry, job.request, rt.spec.invalid_code,
                                 f"internal error: {type(exc).__name__}: {exc}", started)
            return True

    def _provision(self, rt: ServiceRuntime, work: Work, entry: Entry, job: Job,
                   started: float) -> bool | None:
        """Run the steps of a claimed entry and report the outcome; None: parked at a file
        of all entries for a batch render (core/batches.py). The entry is laid over the files
        of all entries from its first render of one (pipeline.render_batch) until its
        outcome is in the directory and in the mirror, so a concurrent render never sees it
        neither in flight nor provisioned."""
        spec, request = rt.spec, job.request
        parked = False
        try:
            try:
                progress = work.progress if work.kind != "request" else None
                outcome = self.pipeline.run(job, progress, batching=True)
            except Suspend as suspend:
                self.batches.park(Parked(
                    suspend.plan.path, time.monotonic(), suspend.plan,
                    replace(work, kind="continue", progress=suspend.outcome,
                            continuation=Continuation(entry, job, started))))
                parked = True
                return None
            except StepFailed as failure:
                # The directory away is not the entry's failure: it waits for the directory
                # (a reconnect brings it forward) however long that takes, as a claim does.
                if failure.outage or (failure.transient
                                      and work.attempt < self.config.retry.limit):
                    return self._retry_later(rt, replace(work, kind="resume",
                                                         progress=failure.outcome),
                                             failure.message, outage=failure.outage)
                # its on_failure outputs: those for the parent first (core/parents.py)
                message = parents.with_failure(self.reporter, rt, entry, failure.outcome,
                                               failure.message)
                self.reporter.failure(rt, entry, request, failure.code, message, started,
                                      parents.outputs(spec, failure.outcome, "entry", True))
                return True
            refused = parents.report(self.reporter, rt, entry,
                                     parents.outputs(spec, outcome, "parent"))
            if refused is not None:
                self.reporter.failure(rt, entry, request, spec.invalid_code, refused, started)
                return True
            written = parents.outputs(spec, outcome, "entry")
            result = self.reporter.report(rt, entry, lifecycle.success_changes(
                spec.attributes, request, self.clock.now(), written, "ok", spec.lifecycle))
            if not result.ok:
                self.reporter.failure(
                    rt, entry, request, spec.invalid_code,
                    f"report: the directory refused the outcome ({result.description}, "
                    f"{result.code}): {request} ran, its result is not recorded", started)
                return True
            self._settle(rt, job, {**entry.attributes,
                                   **{name.lower(): texts for name, texts in written.items()}})
        finally:
            if not parked:
                self.aggregates.end(job)
        self._referenced_done(job)
        rt.journal.forget(entry.uuid)
        self.counters.count(spec.name, "success")
        log.info(kv(event=spec.lifecycle.done[request], service=spec.name, dn=entry.dn,
                    uuid=entry.uuid, mode=spec.lifecycle.done[request], rc=0,
                    ms=int((time.monotonic() - started) * 1000)))
        return True

    # -- batch renders (core/batches.py) -------------------------------------------------------

    def _quiet(self) -> bool:
        """No work queued and no worker busy: no other job can join a batch soon."""
        with self._queue.mutex:
            queued = any(item[-1] is not None for item in self._queue.queue)
        return not queued and self._active == 0

    def _render_batch(self, jobs: list[Parked]) -> BaseException | None:
        try:
            self.pipeline.render_batch([parked.plan for parked in jobs])
        except Exception as exc:  # noqa: BLE001 - each job fails with its own step's code
            return exc
        return None

    def _continue(self, parked: Parked) -> None:
        """A batch render did the parked job's step: back to a worker, ahead of requests."""
        work: Work = parked.continuation
        assert work.progress is not None
        work.progress.batched = work.progress.next_step
        work.progress.batch_error = parked.error
        self._enqueue(work)

    def _wait(self, rt: ServiceRuntime, work: Work, entry: Entry, request: str,
              waiting: Unresolved, seen: int) -> bool:
        """`entry` needs an entry that is being provisioned: no claim; it is looked at again
        when a job of that entry's service succeeds, or after a backoff (never given up). Its
        change stays unsettled (False) and goes along (core/waiting.py)."""
        if self._stopping.is_set():
            return False  # the stream brings it back
        delay = self.waiting.park(work, waiting.reference.service, seen)
        log.info(kv(event="waiting", service=rt.spec.name, dn=entry.dn, uuid=entry.uuid,
                    mode=request, reference=waiting.reference.name, target=waiting.dn,
                    reason=waiting.reason, delay=f"{delay:.3g}s" if delay is not None else "0s"))
        if delay is None:  # what it waits for may have just succeeded: look again now
            self.submit(work)
        return False

    def _referenced_done(self, job: Job) -> None:
        """A job of a service others reference succeeded: the entries waiting for one of its
        entries are looked at now, and after a change the files of all entries of the services
        referencing it are rendered again (they show its values and outputs)."""
        dependents = self.resolver.dependent_services(job.service)
        if not dependents:
            return
        for work in self.waiting.wake(job.service.name):
            self.submit(work)
        if job.service.lifecycle.request(job.request).effect == "change":
            self.refresh_aggregates(dependents)

    def _settle(self, rt: ServiceRuntime, job: Job,
                attributes: Mapping[str, tuple[str, ...]]) -> None:
        try:
            self.aggregates.settle(job, attributes)
        except DirectoryUnavailable as exc:  # the next pass shows it; nothing is lost
            log.warning(kv(event="settle-deferred", service=rt.spec.name, uuid=job.uuid,
                           reason=str(exc)))

    def submit_later_resume(self, rt: ServiceRuntime, entry: Entry) -> None:
        """A claim whose answer was lost (server gone mid-modify) may be ours: look again as
        a resume, which proves ownership before running anything."""
        log.info(kv(event="resume", service=rt.spec.name, dn=entry.dn, uuid=entry.uuid))
        with self._lock:
            self._again[entry.uuid] = Work(rt.spec.name, entry.uuid, entry.dn, kind="resume")

    def retry_delay(self, attempt: int) -> float:
        """Exponential with equal jitter (half to all of the nominal delay), so entries that
        failed together do not retry in lock-step."""
        retry = self.config.retry
        nominal = min(retry.initial * (2 ** min(attempt, 32)), retry.maximum)
        return nominal / 2 + random.uniform(0, nominal / 2)

    def _retry_later(self, rt: ServiceRuntime, work: Work, reason: str,
                     outage: bool = False) -> bool:
        """Schedule `work` again; its change stays unsettled (False) and goes along with it.
        `outage`: it waits for the directory, so a reconnect brings it forward."""
        if self._stopping.is_set():
            return False  # the journal (if claimed) or the stream brings it back
        delay = self.retry_delay(work.attempt)
        again = replace(work, attempt=work.attempt + 1, outage=outage)
        with self._lock:
            self._retrying.add(work.uuid)
        self.scheduler.add(("retry", rt.spec.name, work.uuid),
                           self.clock.now() + timedelta(seconds=delay), again)
        self.counters.count_retry()
        log.warning(kv(event="retry", service=rt.spec.name, dn=work.dn, uuid=work.uuid,
                       attempt=again.attempt, delay=f"{delay:.3g}s", reason=reason))
        return False

    def directory_back(self) -> None:
        """A stream reconnected: retries that were waiting for the directory go now, spread
        over up to a second (not all at once), their backoff started afresh."""
        spread = min(self.config.retry.initial, RECONNECT_SPREAD_SECONDS)
        for key, work in self.scheduler.select(
                lambda key, item: isinstance(item, Work) and item.outage):
            self.scheduler.add(key, self.clock.now() + timedelta(
                seconds=random.uniform(0, spread)), replace(work, attempt=0))

    # -- running -----------------------------------------------------------------------------------

    def start_workers(self) -> None:
        """Claim this host's aggregate files, sweep stale temp files, queue the journal's
        resumes, then start the workers (before any stream delivers a request)."""
        self.locks.acquire(self._aggregate_paths())
        sweep(self._written_directories())
        for rt in self.services.values():
            self.recovery.resume_journal(rt)
        self.scheduler.start()
        self.batches.start(closing_thread_connections)
        for number in range(self.config.workers):
            thread = threading.Thread(target=closing_thread_connections(self._worker),
                                      name=f"worker-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)
        for target, name in ((self._save_cookies_loop, "cookies"),
                             (self._refresh_aggregates_loop, "aggregates")):
            threading.Thread(target=closing_thread_connections(target), name=name,
                             daemon=True).start()

    def _aggregate_paths(self) -> list[Path]:
        paths = []
        for rt in self.services.values():
            try:
                paths += [path for _, _, path in self.pipeline.aggregate_steps(rt.spec)]
            except StepFailed as failure:  # the step fails with its code when it runs
                log.error(kv(event="aggregate-path-invalid", service=rt.spec.name,
                             msg=failure.message))
        return paths

    def _written_directories(self) -> list[Path]:
        state = self.config.state_dir
        found = [state, state / "inflight", state / "provisioned"]
        for rt in self.services.values():
            found += [rt.journal.directory, state / "provisioned" / rt.spec.name]
            found += self.pipeline.written_directories(rt.spec)
        return found

    def _save_cookies_loop(self) -> None:
        while not self._stopping.wait(COOKIE_SAVE_INTERVAL):
            self.save_cookies()

    def _refresh_aggregates_loop(self) -> None:
        """Files rendered from all entries follow changes made elsewhere (another host's
        daemon, an operator) even when nothing here changes."""
        while not self._stopping.wait(AGGREGATE_REFRESH_SECONDS):
            self.refresh_aggregates()

    def refresh_aggregates(self, specs: Iterable[ServiceSpec] | None = None) -> None:
        """Render the files of all entries of `specs` (default: every service) again; a
        failure is logged (the periodic refresh tries again)."""
        done: set[Path] = set()  # a file several of them show is rendered once
        for spec in specs if specs is not None else [rt.spec for rt in self.services.values()]:
            try:
                self.pipeline.refresh_aggregates(spec, done)
            except (StepFailed, DirectoryUnavailable) as exc:
                log.warning(kv(event="aggregate-refresh-failed", service=spec.name,
                               reason=str(exc)))

    def save_cookies(self) -> None:
        for rt in self.services.values():
            try:
                rt.save_cookie()
            except OSError as exc:
                log.error(kv(event="cookie-save-failed", service=rt.spec.name, reason=str(exc)))

    def load(self) -> tuple[int, int]:
        """(entries queued for a worker, entries queued or in a worker's hands), read without
        the engine's lock (for metrics and STATUS= lines). The stop markers a shutdown queues
        are not entries: the last metrics write, after the shutdown, shows an empty queue."""
        with self._queue.mutex:
            queued = sum(1 for item in self._queue.queue if item[-1] is not None)
        return queued, len(self._busy)

    def idle(self) -> bool:
        with self._lock:
            return not self._busy and not self._retrying and self._queue.empty()

    def wait_idle(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._busy or self._retrying:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._lock.wait(timeout=min(remaining or 0.5, 0.5))
        return True

    def run_streams(self, stop: threading.Event) -> list[threading.Thread]:
        threads = []
        for rt in self.services.values():
            thread = threading.Thread(target=closing_thread_connections(rt.stream.run),
                                      args=(stop,),
                                      name=f"stream-{rt.spec.name}", daemon=True)
            thread.start()
            threads.append(thread)
        return threads

    def once(self) -> int:
        """One refresh pass of every service, everything actionable processed: 0 if nothing
        failed, 1 if an entry failed or an internal error occurred, 69 if unreachable."""
        self.start_workers()
        try:
            for rt in self.services.values():
                rt.stream.run_once()
                self.recover(rt)
        except DirectoryUnavailable as exc:
            log.error(kv(event="unavailable", reason=str(exc)))
            self.shutdown(grace=self.config.shutdown_grace)
            return EX_UNAVAILABLE
        self.wait_idle()
        self.shutdown(grace=self.config.shutdown_grace)
        return EX_OK if self.counters.failed == 0 and self.counters.errors == 0 else EX_FAILED

    def shutdown(self, grace: float) -> bool:
        """Take no new work, let in-flight entries finish within `grace`, save cookies."""
        self._stopping.set()
        self.scheduler.stop()
        self.batches.stop()  # what is parked is rendered now and may still report
        deadline = time.monotonic() + grace
        with self._lock:
            # drop queued but unstarted work: the stream or the journal brings it back
            while True:
                try:
                    _, _, item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    self._busy.discard(item.uuid)
            for item in self.keys.close():  # parked work goes the same way
                self._busy.discard(item.uuid)
            while self._busy and time.monotonic() < deadline:
                self._lock.wait(timeout=0.1)
            finished = not self._busy
        for _ in self._threads:
            self._queue.put((PRIORITY_STOP, next(self._order), None))
        self.save_cookies()
        self.locks.release()
        self.aggregates.close()
        return finished

