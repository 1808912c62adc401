"""Claiming an entry: the compare-and-swap that makes it this daemon's.

A claim turns `add` into `adding` in one modify that asserts the entry still asks for it
(the Assertion control), so of two daemons (or two workers) exactly one wins. Before it is
sent, the claim is recorded in the journal; the server's answer then decides:
- accepted: the entry is ours; without a message attribute the claim is confirmed in the
  journal (the proof a resume checks: an fsynced line); with one, the token the claim wrote
  into the entry is that proof already, and the fsync is saved;
- refused because someone else got there first (the mode is gone, the entry renamed or
  deleted, the assertion failed): a lost race, nothing to do;
- refused for another reason: logged as a failed claim, nothing more to do (the entry stays
  as it is for an operator to see);
- no answer (the server or the connection went away): the claim may or may not have been
  applied, so the journal record stays and the caller tries again later; a retry (or the next
  start) resumes the entry only if it proves to be ours.
"""

from __future__ import annotations

import enum
import logging

from provisiond.core.journal import Claim, new_token
from provisiond.core.runtime import Counters, ServiceRuntime
from provisiond.directory.access import NO_SUCH_OBJECT, Directory, Entry
from provisiond.directory.connection import DirectoryUnavailable
from provisiond.directory.controls import equality_assertion
from provisiond.logfmt import kv
from provisiond.model import lifecycle

log = logging.getLogger("provisiond.engine")

LOST_RACE = {16, 32, 122}  # noSuchAttribute, noSuchObject, assertionFailed


class Claimed(enum.Enum):
    OURS = "ours"
    NOT_OURS = "not ours"  # lost, or refused: nothing more to do
    UNANSWERED = "unanswered"  # the directory went away: try again later
    STALE = "stale"  # the entry changed (or moved) since it was seen: read it and decide again


class Claimer:
    def __init__(self, directory: Directory, counters: Counters) -> None:
        self.directory = directory
        self.counters = counters

    def claim(self, rt: ServiceRuntime, entry: Entry, state: lifecycle.EntryState,
              request: str, serialize: str | None = None,
              csn: str | None = None,
              failing: tuple[int, str] | None = None) -> tuple[Claimed, str]:
        """Claim `entry` for `request`: the result, and for UNANSWERED the reason. `csn`: the
        entry as a change notification showed it, not read again: the claim asserts it is
        unchanged, and a claim refused for a reason a change explains is STALE. `failing`:
        the code and message of an entry claimed only to report it invalid
        (lifecycle.claim_changes)."""
        names = rt.spec.attributes
        token = new_token()
        rt.journal.record(Claim(entry.uuid, entry.dn, request, token=token))
        try:
            result = self.directory.modify(
                entry.dn,
                lifecycle.claim_changes(names, state, request, token, failing),
                controls=[equality_assertion(lifecycle.claim_terms(names, request, csn))],
            )
        except DirectoryUnavailable as exc:
            return Claimed.UNANSWERED, str(exc)  # the journal record stays (module doc)
        if not result.ok:
            rt.journal.forget(entry.uuid)
            if csn and result.code in LOST_RACE:
                return Claimed.STALE, result.description
            if result.code == NO_SUCH_OBJECT and self._still_there(rt, entry):
                self.counters.count(rt.spec.name, "failure")
                log.error(kv(event="claim-failed", service=rt.spec.name, dn=entry.dn,
                             uuid=entry.uuid, rc=result.code,
                             msg="the entry exists but its DN could not be addressed"))
            elif result.code in LOST_RACE:
                self.counters.count_lost_race()
                log.debug(kv(event="claim-lost", service=rt.spec.name, dn=entry.dn,
                             uuid=entry.uuid, rc=result.code))
            else:
                log.error(kv(event="claim-failed", service=rt.spec.name, dn=entry.dn,
                             uuid=entry.uuid, rc=result.code, msg=result.description))
            return Claimed.NOT_OURS, ""
        if not names.message:  # with one, the token the claim wrote is the proof (journal.py)
            rt.journal.confirm(entry.uuid)
        log.info(kv(event="claimed", service=rt.spec.name, dn=entry.dn, uuid=entry.uuid,
                    mode=rt.spec.lifecycle.working[request], serialize=serialize))
        return Claimed.OURS, ""

    def _still_there(self, rt: ServiceRuntime, entry: Entry) -> bool:
        try:
            return self.directory.find_uuid(rt.spec.base, entry.uuid, ["1.1"]) is not None
        except DirectoryUnavailable:
            return False
