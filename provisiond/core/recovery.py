"""Recovery: this daemon's stranded claims found again, and resumed only once proven its own.

At start (before any stream delivers a request, so a daemon in a crash loop still reaches
them) and on every reconnect, the journal's records are queued as resumes. A resume runs only
when the claim is proven ours (journal.ownership); a claim another daemon won is forgotten and
left to its owner. `recover: all` (one daemon per subtree) adopts every stranded entry.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Protocol

from provisiond.core.journal import Claim, Ownership, ownership
from provisiond.core.runtime import Work
from provisiond.directory.access import Directory, Entry
from provisiond.directory.connection import DirectoryUnavailable
from provisiond.logfmt import kv
from provisiond.model import lifecycle

if TYPE_CHECKING:
    from provisiond.core.runtime import ServiceRuntime

log = logging.getLogger("provisiond.engine")

# Read with every entry a worker looks at: who wrote it last (the proof of a claim).
LAST_WRITER = "modifiersName"


class EngineAccess(Protocol):
    """What recovery uses of the engine."""

    directory: Directory

    def submit(self, work: Work) -> None: ...

    def in_hand(self, uuid: str) -> bool: ...

    def consider(self, rt: ServiceRuntime, entry: Entry, seq: int | None) -> None: ...


class Recovery:
    def __init__(self, engine: EngineAccess) -> None:
        self.engine = engine
        self._identity: str | None = None
        self._lock = threading.Lock()

    def identity(self) -> str:
        """Who this daemon writes as, asked once (raises DirectoryUnavailable)."""
        with self._lock:
            if self._identity is None:
                self._identity = self.engine.directory.whoami()
            return self._identity

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
                    state = lifecycle.read_state(names, entry.attributes, rt.spec.lifecycle)
                    if lifecycle.is_stranded(state) and not rt.journal.holds(entry.uuid):
                        rt.journal.record(Claim(entry.uuid, entry.dn, state.working_request or "",
                                                confirmed=True))
            self.resume_journal(rt)
            if rt.saved_cookie:  # the stream will not re-deliver entries waiting for a date
                dated = f"(&{rt.spec.sync_filter}(!({names.execution_date}=0)))"
                for entry in self.engine.directory.search(rt.spec.base, dated, attributes,
                                                          rt.spec.scope):
                    self.engine.consider(rt, entry, None)
        except DirectoryUnavailable as exc:
            log.warning(kv(event="recover-deferred", service=rt.spec.name, reason=str(exc)))

    def prove(self, rt: ServiceRuntime, entry: Entry) -> bool:
        """Whether the stranded `entry` is ours to resume; a claim that is not is forgotten.
        Raises DirectoryUnavailable."""
        claim = rt.journal.get(entry.uuid)
        if claim is None:
            return False
        if rt.spec.recover == "all":
            return True
        names = rt.spec.attributes
        decided_without_identity = bool(names.message and claim.token) or claim.confirmed
        owner = ownership(
            claim,
            message=lifecycle.first(entry.attributes, names.message) if names.message else None,
            has_message=names.message is not None,
            last_writer=lifecycle.first(entry.attributes, LAST_WRITER),
            identity="" if decided_without_identity else self.identity(),
        )
        if owner is Ownership.OURS:
            return True
        log.info(kv(event="claim-not-ours", service=rt.spec.name, dn=entry.dn,
                    uuid=entry.uuid, msg="another daemon won the claim: left to its owner"))
        rt.journal.forget(entry.uuid)
        return False
