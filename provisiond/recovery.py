"""Recovery: this daemon's stranded claims found again, and resumed only once proven its own.

At start (before any stream delivers a request, so a daemon in a crash loop still reaches
them) and on every reconnect, the journal's records are queued as resumes. A resume runs
only when the claim is proven ours (journal.ownership); another daemon's claim is forgotten;
an unproven one is looked at again after a quiet period longer than any live owner could
hold the entry without writing to it, and resumed only if nothing touched it meanwhile.
`recover: all` (one daemon per subtree) adopts every stranded entry as its own.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

from provisiond import lifecycle
from provisiond.clock import Clock
from provisiond.config.model import Config, HookAction, ServiceSpec
from provisiond.directory.access import Directory, Entry
from provisiond.directory.connection import DirectoryUnavailable
from provisiond.journal import Claim, Ownership, ownership
from provisiond.logs import kv
from provisiond.runtime import Work
from provisiond.scheduler import Scheduler

if TYPE_CHECKING:
    from provisiond.runtime import ServiceRuntime

log = logging.getLogger("provisiond.engine")


class EngineAccess(Protocol):
    """What recovery uses of the engine."""

    config: Config
    clock: Clock
    directory: Directory
    scheduler: Scheduler

    def submit(self, work: Work) -> None: ...

    def in_hand(self, uuid: str) -> bool: ...

    def consider(self, rt: ServiceRuntime, entry: Entry, seq: int | None) -> None: ...

    def fresh(self, rt: ServiceRuntime, work: Work) -> Entry | None: ...

    def retry_delay(self, attempt: int) -> float: ...


def quiet_period(spec: ServiceSpec, request: str, config: Config) -> float:
    """The longest a live daemon can hold a claim of `request` without writing to the entry:
    every step at its timeout, on every transient retry, plus the retry waits."""
    hooks, retry = config.hooks, config.retry
    steps = sum((s.action.timeout if isinstance(s.action, HookAction) and s.action.timeout
                 else hooks.timeout) + hooks.kill_grace for s in spec.steps_for(request))
    return steps * (retry.limit + 1) + retry.maximum * retry.limit + 60.0


def entry_csn(entry: Entry) -> str:
    return (entry.attributes.get("entrycsn") or ("",))[0]


class Recovery:
    def __init__(self, engine: EngineAccess) -> None:
        self.engine = engine

    def resume_journal(self, rt: ServiceRuntime) -> None:
        """Queue our journalled claims (resumes go ahead of every request)."""
        for claim in rt.journal.claims():
            if self.engine.in_hand(claim.uuid):
                continue  # ours and in hand: nothing was stranded
            log.info(kv(event="resume", service=rt.spec.name, dn=claim.dn, uuid=claim.uuid,
                        mode=claim.request))
            self.engine.submit(Work(rt.spec.name, claim.uuid, claim.dn, kind="resume"))

    def recover(self, rt: ServiceRuntime) -> None:
        """On start and every reconnect: resume our stranded claims, find future-dated work."""
        try:
            names = rt.spec.attributes
            attributes = rt.spec.ldap_attributes()
            if rt.spec.recover == "all":
                for entry in self.engine.directory.search(rt.spec.base, rt.spec.working_filter,
                                                   attributes, rt.spec.scope):
                    state = lifecycle.read_state(names, entry.attributes)
                    if lifecycle.is_stranded(state) and not rt.journal.holds(entry.uuid):
                        rt.journal.record(Claim(entry.uuid, entry.dn, state.working_request or ""))
            self.resume_journal(rt)
            if rt.saved_cookie:  # the stream will not re-deliver entries waiting for a date
                dated = f"(&{rt.spec.sync_filter}(!({names.execution_date}=0)))"
                for entry in self.engine.directory.search(rt.spec.base, dated, attributes, rt.spec.scope):
                    self.engine.consider(rt, entry, None)
        except DirectoryUnavailable as exc:
            log.warning(kv(event="recover-deferred", service=rt.spec.name, reason=str(exc)))

    def prove(self, rt: ServiceRuntime, work: Work, entry: Entry) -> bool:
        """Whether the stranded `entry` is ours to resume (journal.py says how that is
        proven); a claim that is not is forgotten or watched, never resumed blindly."""
        claim = rt.journal.get(entry.uuid)
        if claim is None:
            return False
        names = rt.spec.attributes
        message = lifecycle.first(entry.attributes, names.message) if names.message else None
        owner = ownership(claim, message, names.message is not None)
        if owner is Ownership.OURS or (owner is Ownership.UNPROVEN and rt.spec.recover == "all"):
            return True
        if owner is Ownership.THEIRS:
            log.info(kv(event="claim-not-ours", service=rt.spec.name, dn=entry.dn,
                        uuid=entry.uuid, msg="another daemon's claim: left to its owner"))
            rt.journal.forget(entry.uuid)
            return False
        quiet = quiet_period(rt.spec, claim.request, self.engine.config)
        log.warning(kv(event="claim-unproven", service=rt.spec.name, dn=entry.dn,
                       uuid=entry.uuid, wait=f"{quiet:g}s",
                       msg="interrupted inside the claim's round trip: resumed if the entry "
                           "stays untouched for longer than a live owner could take"))
        self.engine.scheduler.add(("unproven", rt.spec.name, entry.uuid),
                           self.engine.clock.now() + timedelta(seconds=quiet),
                           replace(work, kind="unproven", csn=entry_csn(entry)))
        return False

    def check_unproven(self, rt: ServiceRuntime, work: Work) -> None:
        try:
            entry = self.engine.fresh(rt, work)
        except DirectoryUnavailable:
            self.engine.scheduler.add(("unproven", work.service, work.uuid),
                               self.engine.clock.now() + timedelta(seconds=self.engine.retry_delay(0)), work)
            return
        state = lifecycle.read_state(rt.spec.attributes, entry.attributes) if entry else None
        if entry is None or state is None or not lifecycle.is_stranded(state):
            rt.journal.forget(work.uuid)  # its owner finished it (or it is gone)
            return
        if entry_csn(entry) != work.csn:  # written to meanwhile: somebody is at work; wait again
            self.prove(rt, work, entry)
            return
        log.warning(kv(event="resume", service=rt.spec.name, dn=entry.dn, uuid=entry.uuid,
                       msg="unproven claim, untouched for the quiet period"))
        rt.journal.record(Claim(entry.uuid, entry.dn, state.working_request or "",
                                confirmed=True))
        self.engine.submit(Work(rt.spec.name, entry.uuid, entry.dn, kind="resume"))
