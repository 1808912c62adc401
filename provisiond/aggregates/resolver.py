"""The reads behind the reference graph (the decisions are aggregates/references.py).

A referenced entry is looked up first where it is cheapest and most current: the mirror of
its service (its active entries, brought up to date by a refreshOnly pass, with this daemon's
own reports settled in), with the jobs in flight laid over. Only an entry that is not there is
read from the directory (a base search of its DN with its service's filter and state
attributes), so the entry waiting for its disk, or failing because the disk failed, can say
which. The same mirrors tell which active or in-flight entries of other services reference an
entry, for `dependents:`, and which of its own service have a value it has, for `unique:`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ldap3.utils.conv import escape_filter_chars

from provisiond.aggregates.mirror import Aggregates, Member, holders, member_of
from provisiond.aggregates.references import (
    Seen,
    Unresolved,
    attach,
    fixed_changed,
    judge,
    most_pressing,
    named,
    parent_dn,
    refusal,
    within,
)
from provisiond.aggregates.unique import (
    IN_FLIGHT,
    NEW,
    SETTLED,
    Clash,
    Holder,
    clash,
    items,
    items_of,
    may_clash,
)
from provisiond.directory.decode import same_dn
from provisiond.model import lifecycle
from provisiond.model.settings import Reference, ServiceSpec
from provisiond.model.values import InvalidValue, ValueSpec, as_text, parse_entry


@dataclass(frozen=True)
class Resolution:
    """What an entry's references came to: `refs` for its templates; or an entry to wait
    for (`waiting`); or the failure (`failure`, `code`) it must be reported with."""

    refs: Mapping[str, Any] = field(default_factory=dict)
    waiting: Unresolved | None = None
    failure: str | None = None
    code: int = 0


class Resolver:
    def __init__(self, aggregates: Aggregates) -> None:
        self.aggregates = aggregates
        self.services = aggregates.services
        self._dependents = {name: [other for other in self.services.values()
                                   if any(r.service == name for r in other.references)]
                            for name in self.services}

    # -- an entry's references ---------------------------------------------------------------

    def check(self, spec: ServiceSpec, request: str, dn: str,
              values: Mapping[str, Any]) -> Resolution:
        """The references of the entry at `dn` asking for `request`. A removal waits for
        nothing and fails on no reference: what can be resolved is given to its steps.
        Raises DirectoryUnavailable."""
        refs, unresolved = self.resolve(spec, dn, values)
        removing = spec.lifecycle.request(request).effect == "remove"
        decisive = None if removing else most_pressing(unresolved)
        if decisive is None:
            return Resolution(refs)
        if decisive.wait:
            return Resolution(refs, waiting=decisive)
        return Resolution(refs, failure=decisive.message, code=decisive.reference.code)

    def resolve(self, spec: ServiceSpec, dn: str, values: Mapping[str, Any]
                ) -> tuple[dict[str, Any], list[Unresolved]]:
        """`refs` (name -> Member, a list for a multi-valued reference) and what did not
        resolve. Raises DirectoryUnavailable."""
        refs: dict[str, Any] = {}
        unresolved: list[Unresolved] = []
        current: dict[str, dict[str, Member]] = {}  # one refresh pass per service
        for reference in spec.references:
            target = self.services[reference.service]
            if target.name not in current:
                current[target.name] = target_members(self.aggregates, target)
            found = []
            for named_dn in named(reference, dn, values):
                member, problem = self._find(reference, target, current[target.name], named_dn)
                if member is not None:
                    found.append(member)
                if problem is not None:
                    unresolved.append(problem)
            attach(refs, reference, found)
        return refs, unresolved

    def _find(self, reference: Reference, target: ServiceSpec, members: Mapping[str, Member],
              dn: str) -> tuple[Member | None, Unresolved | None]:
        member = next((m for m in members.values() if same_dn(m.dn, dn)), None)
        if member is not None:
            return member, None
        if any(same_dn(gone, dn) for gone in self._removing(target)):
            return None, Unresolved(reference, dn, "it is being deleted")
        seen, entry = self._read(target, dn)
        problem = judge(reference, dn, seen)
        if problem is not None or entry is None:
            return None, problem
        try:  # an active entry the mirror's last pass did not show yet: as read
            values = parse_entry(target.values, entry.attributes)
        except InvalidValue as exc:
            return None, Unresolved(reference, dn, f"its values are invalid: {exc}")
        return member_of(target, entry.uuid, entry.dn, values, entry.attributes), None

    def _removing(self, target: ServiceSpec) -> list[str]:
        return [dn for dn, values in self.aggregates.overlays(target).values() if values is None]

    def _read(self, target: ServiceSpec, dn: str) -> tuple[Seen, Any]:
        """What the directory says of `dn` as an entry of `target` (and the entry read)."""
        directory = self.aggregates.directory
        found = directory.search(dn, target.filter, target.mirrored_attributes(), scope="base")
        if not found:
            exists = bool(directory.search(dn, "(objectClass=*)", ["1.1"], scope="base"))
            return Seen(exists=exists), None
        entry = found[0]
        active = not target.active or bool(directory.search(
            dn, f"(&{target.filter}{target.active})", ["1.1"], scope="base"))
        state = lifecycle.read_state(target.attributes, entry.attributes, target.lifecycle)
        return Seen(exists=True, of_service=within(entry.dn, target.base, target.scope),
                    active=active, state=state), entry

    # -- the other direction: who references an entry ---------------------------------------

    def dependent_services(self, spec: ServiceSpec) -> list[ServiceSpec]:
        """The services whose entries may reference entries of `spec`."""
        return self._dependents.get(spec.name, [])

    def referencing(self, spec: ServiceSpec, dn: str) -> list[tuple[str, str]]:
        """(service, DN) of the active or in-flight entries of other services that reference
        the entry of `spec` at `dn`. Raises DirectoryUnavailable."""
        found = []
        for other in self.dependent_services(spec):
            references = [r for r in other.references if r.service == spec.name]
            for member in self.aggregates.entries(other):
                if not same_dn(member.dn, dn) and any(same_dn(named_dn, dn) for reference in references
                                           for named_dn in named(reference, member.dn,
                                                                 member.values)):
                    found.append((other.name, member.dn))
        return found

    def refused(self, spec: ServiceSpec, request: str, dn: str, uuid: str,
                values: Mapping[str, Any]) -> tuple[str, int] | None:
        """Why `dependents:` refuses `request` of the entry, and the ReturnValue; or None.
        Raises DirectoryUnavailable."""
        effect = spec.lifecycle.request(request).effect
        policy = spec.dependents
        if not self.dependent_services(spec):
            return None
        if effect == "remove":
            changed: list[str] = []
            if policy.delete != "refuse":
                return None
        elif effect == "change" and policy.fixed:
            changed = fixed_changed(policy.fixed, self._provisioned(spec, uuid), values)
            if not changed:
                return None
        else:
            return None
        referencing = self.referencing(spec, dn)
        if not referencing:
            return None
        return refusal(referencing, changed), policy.code or spec.invalid_code

    # -- values no two entries share (`unique:`) ----------------------------------------------

    def clash(self, spec: ServiceSpec, request: str, uuid: str, dn: str,
              values: Mapping[str, Any], working: bool = False) -> tuple[str, int] | None:
        """Why the entry may not have one of its `unique:` values (aggregates/unique.py) and
        the ReturnValue (the value's code, else invalid_code); None for a removal, which
        takes no value from anyone. `working`: a resume of this daemon's claim of it.
        Raises DirectoryUnavailable."""
        if not spec.unique or spec.lifecycle.request(request).effect == "remove":
            return None
        found = self.clashing(spec, uuid, dn, values, working)
        if found is None:
            return None
        code = next((value.code for value in spec.values if value.name == found.rule.value), None)
        return found.message, code or spec.invalid_code

    def clashing(self, spec: ServiceSpec, uuid: str, dn: str, values: Mapping[str, Any],
                 working: bool = False) -> Clash | None:
        """The Clash, if any. The others: the active entries (the mirror, the jobs in flight
        laid over) and the requested or claimed ones the directory holds (a burst's other
        new entries). The entry is settled when the mirror holds it provisioned with these
        very values, in flight when `working`, else new."""
        found, unsettled = self.aggregates.with_overlays(spec)
        own = found.get(uuid)
        stage = (SETTLED if own is not None and uuid not in unsettled and own.values == values
                 else IN_FLIGHT if working else NEW)
        requested = {holder.uuid: holder for holder in self._requested(spec, dn, values)}
        # Only the members with one of the entry's values can clash with it (the others are
        # never compared: one examination must not cost O(active entries)).
        wanted = items_of(spec.unique, values)
        candidates = {key: member for key, member in found.items()
                      if key != uuid and may_clash(spec.unique, wanted, member.values)}
        # The directory says best whether an entry is provisioned: a job that has reported
        # may still be laid over the files, a claim the mirror showed may be done by now.
        others = [holder if holder.stage == SETTLED else
                  requested.pop(holder.uuid, replace(holder, stage=SETTLED))
                  for holder in holders(candidates, unsettled,
                                        set(self.aggregates.overlays(spec)))]
        others += requested.values()  # not active, or active with other values than asked
        return clash(spec.unique, Holder(uuid, dn, values, stage), others, spec.values)

    def _requested(self, spec: ServiceSpec, dn: str, values: Mapping[str, Any]) -> list[Holder]:
        """The active entries of `spec` the directory holds requested (NEW) or claimed and
        not failed (IN_FLIGHT) for an add or a modify, with valid values, that share one of
        the unique `values`. The directory picks them (an equality filter per value; for a
        rule per parent, among the entries below the entry's parent only): a burst of n new
        entries would otherwise read and parse all n for each, O(n^2). One search for the
        service-wide rules, one below the parent for the rules per parent."""
        by_name = {value.name: value for value in spec.values}
        parent = parent_dn(dn)
        found: dict[str, Holder] = {}
        for per_parent in (False, True):
            uniques = [by_name[rule.value] for rule in spec.unique
                       if rule.per_parent is per_parent]
            if not uniques:
                continue
            base, scope = (spec.base, spec.scope) if not per_parent else (parent or "", "one")
            for holder in self._requested_sharing(spec, base, scope, uniques, values):
                found.setdefault(holder.uuid, holder)
        return list(found.values())

    def _requested_sharing(self, spec: ServiceSpec, base: str, scope: str,
                           uniques: list[ValueSpec], values: Mapping[str, Any]) -> list[Holder]:
        cycle, names = spec.lifecycle, spec.attributes
        modes = [mode for request in cycle.requests if request.effect != "remove"
                 for mode in (request.name, request.working)]
        shared = "".join(f"({value.attribute}={escape_filter_chars(as_text(item))})"
                         for value in uniques for item in items(values.get(value.name)))
        if not shared:
            return []
        if any(value.type.name not in VERBATIM for value in uniques):
            shared = ""  # the directory may hold another spelling (10M for 10485760): read all
        wanted = (f"(&{spec.filter}{spec.active}(|"
                  + "".join(f"({names.mode}={mode})" for mode in modes)
                  + f")({names.state}=0)" + (f"(|{shared})" if shared else "") + ")")
        found = []
        for entry in self.aggregates.directory.search(base, wanted, spec.ldap_attributes(),
                                                      scope=scope):
            state = lifecycle.read_state(names, entry.attributes, cycle)
            if lifecycle.is_failed(state):
                continue
            try:
                values = parse_entry(spec.values, entry.attributes)
            except InvalidValue:
                continue
            stage = NEW if state.request is not None else IN_FLIGHT
            found.append(Holder(entry.uuid, entry.dn, values, stage))
        return found

    def _provisioned(self, spec: ServiceSpec, uuid: str) -> dict[str, Any] | None:
        """The values this daemon last provisioned the entry with (None: not known)."""
        store = self.aggregates.mirror(spec).store
        saved = store.load(uuid) if store is not None else None
        if saved is None:
            return None
        try:
            return parse_entry(spec.values, saved)
        except InvalidValue:
            return None


def target_members(aggregates: Aggregates, target: ServiceSpec) -> dict[str, Member]:
    """The active entries of `target` as the mirror holds them now (uuid -> Member), without
    those whose removal is in flight."""
    members = aggregates.mirror(target).current()
    for uuid, (_, values) in aggregates.overlays(target).items():
        if values is None:
            members.pop(uuid, None)
    return members


# Value types whose text form is the raw LDAP value itself (they reject, never rewrite), so
# the directory's equality match finds the entries sharing a value.
VERBATIM = frozenset({"string", "iqn", "posix_name", "path_segment", "integer"})
