"""The engine: from change notifications to claimed, provisioned and reported entries.

    change stream --> decide (lifecycle) --> now: worker queue / later: scheduler
    worker: re-read -> validate -> journal -> claim (CAS) -> pipeline -> report -> forget

Guarantees, and where they come from:
- one entry is never processed twice at once: `_busy` holds the UUIDs in the hands of a
  worker; a change arriving meanwhile waits in `_again` and is looked at afterwards;
- exactly once across daemons: the claim is a compare-and-swap on the mode (lifecycle);
- nothing stranded: the journal names this daemon's claims; `recover` resumes them;
- nothing lost: a cookie is stored only after all it covers is handled (watermark), and
  future-dated entries, which a cookie moves past, are found again by `recover` on every (re)connect.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import timedelta

import jinja2

from provisiond import lifecycle
from provisiond.aggregate import Aggregates
from provisiond.clock import Clock
from provisiond.config.model import Config
from provisiond.directory.access import Directory, Entry
from provisiond.directory.connection import ConnectionFactory, DirectoryUnavailable
from provisiond.directory.controls import assertion_control
from provisiond.directory.stream import Change
from provisiond.journal import Claim
from provisiond.logs import kv
from provisiond.pipeline import Job, Pipeline, StepFailed
from provisiond.render import make_environment
from provisiond.runtime import Counters, ServiceRuntime, Work
from provisiond.scheduler import Scheduler
from provisiond.values import InvalidValue, has_control_characters, parse_entry

log = logging.getLogger("provisiond.engine")

LOST_RACE = {16, 32, 122}  # noSuchAttribute, noSuchObject, assertionFailed
COOKIE_SAVE_INTERVAL = 1.0



class Engine:
    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or Clock()
        self.factory = ConnectionFactory(config.ldap)
        self.directory = Directory(self.factory)
        self.env: jinja2.Environment = make_environment(config.templates)
        self.aggregates = Aggregates(self.factory, config.services)
        self.pipeline = Pipeline(self.env, config.hooks, self.aggregates)
        self.scheduler = Scheduler(self.clock, self._due)
        self.counters = Counters()
        self.services = {spec.name: ServiceRuntime(self, spec) for spec in config.services}
        self._queue: queue.Queue[Work | None] = queue.Queue()
        self._lock = threading.Condition()
        self._busy: set[str] = set()
        self._again: dict[str, Work] = {}
        self._retrying: set[str] = set()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._refreshed: set[str] = set()
        self.first_sync = threading.Event()

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
        state = lifecycle.read_state(rt.spec.attributes, entry.attributes)
        decision = lifecycle.decide(state, self.clock.now())
        if decision.action is lifecycle.Action.WAIT and decision.due is not None:
            self.scheduler.add(("date", rt.spec.name, entry.uuid), decision.due,
                               Work(rt.spec.name, entry.uuid, entry.dn))
            log.info(kv(event="scheduled", service=rt.spec.name, dn=entry.dn, uuid=entry.uuid,
                        mode=decision.request, due=decision.due.strftime("%Y-%m-%d")))
        elif decision.action in (lifecycle.Action.ACT, lifecycle.Action.INVALID):
            self.submit(Work(rt.spec.name, entry.uuid, entry.dn,
                             seqs=(seq,) if seq is not None else ()))
            return
        rt.watermark.handled(seq)

    def submit(self, work: Work) -> None:
        with self._lock:
            if work.uuid in self._busy:
                earlier = self._again.get(work.uuid)
                seqs = (earlier.seqs if earlier else ()) + work.seqs
                self._again[work.uuid] = Work(work.service, work.uuid, work.dn, work.kind,
                                              work.attempt, seqs)
                return
            self._busy.add(work.uuid)
        self._queue.put(work)

    def _due(self, work: Work) -> None:
        with self._lock:
            self._retrying.discard(work.uuid)
        self.submit(work)

    def refresh_done(self, rt: ServiceRuntime) -> None:
        self._refreshed.add(rt.spec.name)
        if self._refreshed >= set(self.services):
            self.first_sync.set()

    # -- recovery --------------------------------------------------------------------------------

    def recover(self, rt: ServiceRuntime) -> None:
        """On start and every reconnect: resume our stranded claims, find future-dated work."""
        try:
            names = rt.spec.attributes
            attributes = rt.spec.ldap_attributes()
            claims = {c.uuid: c for c in rt.journal.claims()}
            if rt.spec.recover == "all":
                for entry in self.directory.search(rt.spec.base, rt.spec.working_filter,
                                                   attributes, rt.spec.scope):
                    state = lifecycle.read_state(names, entry.attributes)
                    if lifecycle.is_stranded(state) and entry.uuid not in claims:
                        claim = Claim(entry.uuid, entry.dn, state.working_request or "")
                        rt.journal.record(claim)
                        claims[entry.uuid] = claim
            for claim in claims.values():
                with self._lock:
                    if claim.uuid in self._busy or claim.uuid in self._retrying:
                        continue  # ours and in hand: nothing was stranded
                log.info(kv(event="resume", service=rt.spec.name, dn=claim.dn, uuid=claim.uuid,
                            mode=claim.request))
                self.submit(Work(rt.spec.name, claim.uuid, claim.dn, kind="resume"))
            if rt.saved_cookie:  # the stream will not re-deliver entries waiting for a date
                dated = f"(&{rt.spec.sync_filter}(!({names.execution_date}=0)))"
                for entry in self.directory.search(rt.spec.base, dated, attributes, rt.spec.scope):
                    self.consider(rt, entry, None)
        except DirectoryUnavailable as exc:
            log.warning(kv(event="recover-deferred", service=rt.spec.name, reason=str(exc)))

    # -- workers ---------------------------------------------------------------------------------

    def _worker(self) -> None:
        while True:
            work = self._queue.get()
            if work is None:
                return
            try:
                self._process(work)
            except Exception:  # noqa: BLE001 - a bug must not kill the worker
                log.exception(kv(event="internal-error", service=work.service, uuid=work.uuid))
            finally:
                self._finish(work)

    def _finish(self, work: Work) -> None:
        rt = self.services[work.service]
        for seq in work.seqs:
            rt.watermark.handled(seq)
        with self._lock:
            again = self._again.pop(work.uuid, None)
            if again is None or self._stopping.is_set():
                self._busy.discard(work.uuid)
                self._lock.notify_all()
                if again is not None:
                    for seq in again.seqs:
                        rt.watermark.handled(seq)
                return
        self._queue.put(again)

    def _fresh(self, rt: ServiceRuntime, work: Work) -> Entry | None:
        attributes = rt.spec.ldap_attributes()
        entry = self.directory.read(work.dn, attributes) if work.dn else None
        if entry is None or entry.uuid != work.uuid:  # renamed, or gone
            entry = self.directory.find_uuid(rt.spec.base, work.uuid, attributes)
        return entry

    def _process(self, work: Work) -> None:
        rt = self.services[work.service]
        spec, names = rt.spec, rt.spec.attributes
        try:
            entry = self._fresh(rt, work)
        except DirectoryUnavailable as exc:
            self._retry_later(rt, work, f"directory unavailable: {exc}")
            return
        if entry is None:
            if work.kind == "resume":
                rt.journal.forget(work.uuid)
            return
        state = lifecycle.read_state(names, entry.attributes)
        invalid: str | None = None
        if work.kind == "resume":
            if not lifecycle.is_stranded(state):
                rt.journal.forget(work.uuid)
                return
            request = state.working_request or ""
        else:
            decision = lifecycle.decide(state, self.clock.now())
            if decision.action is lifecycle.Action.WAIT:
                self.consider(rt, entry, None)
                return
            if decision.action is lifecycle.Action.IGNORE or decision.request is None:
                if lifecycle.is_stranded(state) and rt.journal.holds(entry.uuid):
                    self.submit_later_resume(rt, entry)
                return
            request = decision.request
            if decision.action is lifecycle.Action.INVALID:
                invalid = decision.reason

        values: dict[str, object] = {}
        invalid_code = spec.invalid_code
        try:
            values = parse_entry(spec.values, entry.attributes)
        except InvalidValue as exc:
            invalid = invalid or str(exc)
            invalid_code = exc.code or spec.invalid_code
        if has_control_characters(entry.dn):  # a DN may reach templates and logs
            invalid = invalid or f"the DN contains control characters: {entry.dn!r}"
        refs: dict[str, object] = {}
        if invalid is None and spec.references:
            try:
                refs, unresolved, code = self.aggregates.references(spec, values)
            except DirectoryUnavailable as exc:
                self._retry_later(rt, work, f"directory unavailable: {exc}")
                return
            if unresolved:
                invalid, invalid_code = unresolved, code
        if invalid is None and work.kind == "request":
            unmet = lifecycle.preconditions_met(spec.preconditions.get(request, {}), values)
            if unmet:
                log.info(kv(event="waiting", service=spec.name, dn=entry.dn, uuid=entry.uuid,
                            mode=request, reason=unmet))
                return

        if work.kind == "request" and not self._claim(rt, entry, state, request):
            return
        if invalid is not None:
            self._report_failure(rt, entry, request, invalid_code, f"validate: {invalid}",
                                 time.monotonic())
            return
        job = Job(service=spec, uuid=entry.uuid, dn=entry.dn, request=request, values=values,
                  refs=refs)
        self._provision(rt, work, entry, job)

    def _provision(self, rt: ServiceRuntime, work: Work, entry: Entry, job: Job) -> None:
        """Run the steps of a claimed entry and report the outcome. The entry stays in the
        aggregate overlay until its outcome is in the directory, so a concurrent aggregate
        render never sees it neither in flight nor provisioned."""
        spec, request, started = rt.spec, job.request, time.monotonic()
        self.aggregates.begin(job)
        try:
            try:
                outcome = self.pipeline.run(job, work.progress if work.kind == "resume" else None)
            except StepFailed as failure:
                if failure.transient and work.attempt < self.config.retry.limit:
                    self._retry_later(rt, Work(spec.name, entry.uuid, entry.dn, "resume",
                                               work.attempt, progress=failure.outcome),
                                      failure.message)
                else:
                    self._report_failure(rt, entry, request, failure.code, failure.message,
                                         started)
                return
            self._report(rt, entry, lifecycle.success_changes(
                spec.attributes, request, self.clock.now(), outcome.outputs, "ok"))
        finally:
            self.aggregates.end(job)
        rt.journal.forget(entry.uuid)
        self.counters.count(spec.name, "success")
        log.info(kv(event=lifecycle.DONE[request], service=spec.name, dn=entry.dn,
                    uuid=entry.uuid, mode=lifecycle.DONE[request], rc=0,
                    ms=int((time.monotonic() - started) * 1000)))

    def submit_later_resume(self, rt: ServiceRuntime, entry: Entry) -> None:
        """A claim whose answer was lost (server gone mid-modify) turned out to be ours."""
        log.info(kv(event="resume", service=rt.spec.name, dn=entry.dn, uuid=entry.uuid))
        with self._lock:
            self._again[entry.uuid] = Work(rt.spec.name, entry.uuid, entry.dn, kind="resume")

    def _claim(self, rt: ServiceRuntime, entry: Entry, state: lifecycle.EntryState,
               request: str) -> bool:
        names = rt.spec.attributes
        rt.journal.record(Claim(entry.uuid, entry.dn, request))
        try:
            result = self.directory.modify(
                entry.dn,
                lifecycle.claim_changes(names, state, request),
                controls=[assertion_control(lifecycle.claim_filter(names, request))],
            )
        except DirectoryUnavailable as exc:
            # The claim may or may not have been applied: keep the journal record, so the
            # retry (or the next start) resumes the entry if it is now ours at `-ing`.
            self._retry_later(rt, Work(rt.spec.name, entry.uuid, entry.dn), str(exc))
            return False
        if not result.ok:
            rt.journal.forget(entry.uuid)
            if result.code in LOST_RACE:
                self.counters.count_lost_race()
                log.debug(kv(event="claim-lost", service=rt.spec.name, dn=entry.dn,
                             uuid=entry.uuid, rc=result.code))
            else:
                log.error(kv(event="claim-failed", service=rt.spec.name, dn=entry.dn,
                             uuid=entry.uuid, rc=result.code, msg=result.description))
            return False
        log.info(kv(event="claimed", service=rt.spec.name, dn=entry.dn, uuid=entry.uuid,
                    mode=lifecycle.WORKING[request]))
        return True

    def _retry_later(self, rt: ServiceRuntime, work: Work, reason: str) -> None:
        if self._stopping.is_set():
            return  # the journal (if claimed) or the entry itself brings it back
        retry = self.config.retry
        delay = min(retry.initial * (2 ** work.attempt), retry.maximum)
        again = Work(work.service, work.uuid, work.dn, work.kind, work.attempt + 1,
                     progress=work.progress)
        with self._lock:
            self._retrying.add(work.uuid)
        self.scheduler.add(("retry", rt.spec.name, work.uuid),
                           self.clock.now() + timedelta(seconds=delay),
                           again)
        self.counters.count_retry()
        log.warning(kv(event="retry", service=rt.spec.name, dn=work.dn, uuid=work.uuid,
                       attempt=again.attempt, delay=f"{delay:g}s", reason=reason))

    def _report_failure(self, rt: ServiceRuntime, entry: Entry, request: str, code: int,
                        message: str, started: float) -> None:
        self._report(rt, entry, lifecycle.failure_changes(rt.spec.attributes, code, message))
        rt.journal.forget(entry.uuid)
        self.counters.count(rt.spec.name, "failure")
        log.error(kv(event="failed", service=rt.spec.name, dn=entry.dn, uuid=entry.uuid,
                     mode=lifecycle.WORKING[request], rc=code,
                     ms=int((time.monotonic() - started) * 1000), msg=lifecycle.clip(message)))

    def _report(self, rt: ServiceRuntime, entry: Entry, changes: lifecycle.Changes) -> None:
        """Write the outcome; while the directory is down, keep trying (the work is done)."""
        delay = self.config.retry.initial or 0.5
        while True:
            try:
                result = self.directory.modify(entry.dn, changes)
            except DirectoryUnavailable as exc:
                if self._stopping.wait(delay):
                    raise  # the journal resumes the entry on the next start
                log.warning(kv(event="report-retry", service=rt.spec.name, dn=entry.dn,
                               reason=str(exc)))
                delay = min(delay * 2, self.config.retry.maximum)
                continue
            if not result.ok:
                log.error(kv(event="report-failed", service=rt.spec.name, dn=entry.dn,
                             uuid=entry.uuid, rc=result.code, msg=result.description))
            return

    # -- running -----------------------------------------------------------------------------------

    def start_workers(self) -> None:
        self.scheduler.start()
        for number in range(self.config.workers):
            thread = threading.Thread(target=self._worker, name=f"worker-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)
        saver = threading.Thread(target=self._save_cookies_loop, name="cookies", daemon=True)
        saver.start()

    def _save_cookies_loop(self) -> None:
        while not self._stopping.wait(COOKIE_SAVE_INTERVAL):
            self.save_cookies()

    def save_cookies(self) -> None:
        for rt in self.services.values():
            try:
                rt.save_cookie()
            except OSError as exc:
                log.error(kv(event="cookie-save-failed", service=rt.spec.name, reason=str(exc)))

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
            thread = threading.Thread(target=rt.stream.run, args=(stop,),
                                      name=f"stream-{rt.spec.name}", daemon=True)
            thread.start()
            threads.append(thread)
        return threads

    def once(self) -> int:
        """One refresh pass of every service, everything actionable processed: 0 if no failure."""
        self.start_workers()
        try:
            for rt in self.services.values():
                rt.stream.run_once()
                self.recover(rt)
        except DirectoryUnavailable as exc:
            log.error(kv(event="unavailable", reason=str(exc)))
            self.shutdown(grace=self.config.shutdown_grace)
            return 69  # EX_UNAVAILABLE
        self.wait_idle()
        self.shutdown(grace=self.config.shutdown_grace)
        return 0 if self.counters.failed == 0 else 1

    def shutdown(self, grace: float) -> bool:
        """Take no new work, let in-flight entries finish within `grace`, save cookies."""
        self._stopping.set()
        self.scheduler.stop()
        deadline = time.monotonic() + grace
        with self._lock:
            # drop queued but unstarted work: the stream or the journal brings it back
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    self._busy.discard(item.uuid)
            while self._busy and time.monotonic() < deadline:
                self._lock.wait(timeout=0.1)
            finished = not self._busy
        for _ in self._threads:
            self._queue.put(None)
        self.save_cookies()
        return finished
