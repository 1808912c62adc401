"""Examining a requested entry before it is claimed: is there a job to do, and which?

Between reading an entry and claiming it, the engine decides what the claim is for: the
entry's values validated with their types, its DN checked, the entries it references found
(or waited for), no `unique:` value another entry keeps, the request's preconditions met,
and a delete or change of an entry others still reference refused (`dependents:`). A problem
with the entry itself is not decided here but carried to the claim: a claimed entry with an
invalid value is reported failed with the value's code and a message, so the portal sees it.
What cannot be decided now is deferred: the directory went away, a referenced entry is still
being provisioned, or a precondition is not met yet (the entry stays as it is until its next
change).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from provisiond.aggregates.references import Unresolved
from provisiond.aggregates.resolver import Resolver
from provisiond.core.waiting import Waiting
from provisiond.directory.access import Entry
from provisiond.directory.connection import DirectoryUnavailable
from provisiond.logfmt import kv
from provisiond.model import lifecycle
from provisiond.model.settings import ServiceSpec
from provisiond.model.values import InvalidValue, has_control_characters, parse_entry
from provisiond.model.work import Job

log = logging.getLogger("provisiond.engine")


@dataclass(frozen=True)
class Examined:
    """The job a claim is for; `invalid`: why it fails at once, with ReturnValue `code`."""

    job: Job
    invalid: str | None
    code: int


@dataclass(frozen=True)
class Deferred:
    """No claim now. `outage`: the directory went away (retry); `waiting`: for a referenced
    entry being provisioned (`reference`, `seen`: core/waiting.py); `unmet`: a precondition,
    until the entry changes (settled)."""

    why: Literal["outage", "waiting", "unmet"]
    reason: str
    reference: Unresolved | None = None
    seen: int = 0


class Intake:
    def __init__(self, resolver: Resolver, waiting: Waiting) -> None:
        self.resolver = resolver
        self.waiting = waiting

    def examine(self, spec: ServiceSpec, entry: Entry, request: str, invalid: str | None,
                requested: bool) -> Examined | Deferred:
        """What a claim of `entry` for `request` is for. `invalid`: a problem found already
        (an unreadable execution date); `requested`: a request, not a resume of our own claim
        (whose preconditions and dependents were checked before it was claimed)."""
        values: dict[str, object] = {}
        code = spec.invalid_code
        try:
            values = parse_entry(spec.values, entry.attributes)
        except InvalidValue as exc:
            invalid = invalid or str(exc)
            code = exc.code or spec.invalid_code
        if has_control_characters(entry.dn):  # a DN may reach templates and logs
            invalid = invalid or f"the DN contains control characters: {entry.dn!r}"
        refs: dict[str, object] = {}
        try:
            if invalid is None and spec.references:  # aggregates/references.py
                seen = self.waiting.successes
                found = self.resolver.check(spec, request, entry.dn, values)
                if found.waiting is not None:
                    return Deferred("waiting", found.waiting.reason, found.waiting, seen)
                self.waiting.over(spec.name, entry.uuid)
                refs, invalid, code = dict(found.refs), found.failure, found.code or code
            if invalid is None:  # a value another entry has (`unique:`, aggregates/unique.py)
                clash = self.resolver.clash(spec, request, entry.uuid, entry.dn, values,
                                            working=not requested)
                if clash is not None:
                    invalid, code = clash
            if invalid is None and requested:
                unmet = lifecycle.preconditions_met(spec.preconditions.get(request, {}), values)
                if unmet:
                    log.info(kv(event="waiting", service=spec.name, dn=entry.dn,
                                uuid=entry.uuid, mode=request, reason=unmet))
                    return Deferred("unmet", unmet)
                # `dependents:` of an entry others reference
                refused = self.resolver.refused(spec, request, entry.dn, entry.uuid, values)
                if refused is not None:
                    invalid, code = refused
        except DirectoryUnavailable as exc:
            return Deferred("outage", f"directory unavailable: {exc}")
        job = Job(service=spec, uuid=entry.uuid, dn=entry.dn, request=request, values=values,
                  refs=refs)
        return Examined(job, invalid, code)
