"""Values no two entries of a service may share (`unique:`), decided as pure functions.

Many entries render into ONE file (tgt's targets.conf, scst.conf). Two targets with one IQN,
or two LUNs of a target with one LUN number, make that file invalid for its reader, and then
every entry rendered into it fails, not only the one that brought the duplicate. So the entry
that came later fails alone, at its examination (core/intake.py), with the value's code and a
message naming the value and the other entry; the file keeps serving the others.

Which one came first, deterministically (the stage, then the DN):
1. an entry *settled* with the value (provisioned with it: in the files, no change of it
   pending, in flight or failed) keeps it before any other;
2. then an entry *in flight* with it (claimed: its steps run; it was examined before the
   others came);
3. then a *new* one (an add or a modify requested, not claimed yet): between two of one stage
   (two new ones of one burst, or two settled ones made before `unique:` was declared) the
   one whose DN sorts first (lowercased) keeps it.
A failed entry keeps nothing. A daemon examines and claims the entries of a service with
`unique:` one at a time (core/runtime.py `ServiceRuntime.examining`), so an examination sees
every earlier one's claim: two new entries cannot both pass by each seeing the other only
requested. Files of all entries apply the same rule (aggregates/mirror.py
`Aggregates.entries`): an entry that lost is left out of them, so the file stays valid even
when two daemons sharing a subtree let two entries pass at the same moment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from provisiond.aggregates.references import parent_dn
from provisiond.model.settings import Unique
from provisiond.model.values import ValueSpec

SETTLED, IN_FLIGHT, NEW = 0, 1, 2  # stages, in the order they keep a value
WHY = {SETTLED: "it is provisioned with it", IN_FLIGHT: "it is being provisioned with it",
       NEW: "it is also new and its DN sorts first"}


@dataclass(frozen=True)
class Holder:
    """An entry as the decision sees it, at its `stage` (SETTLED, IN_FLIGHT, NEW)."""

    uuid: str
    dn: str
    values: Mapping[str, Any]
    stage: int

    @property
    def rank(self) -> tuple[int, str]:
        """Sorts the entry that keeps a shared value first."""
        return (self.stage, self.dn.lower())


@dataclass(frozen=True)
class Clash:
    """`entry` may not have `value` of `rule`: `other` keeps it."""

    rule: Unique
    value: Any
    other: Holder
    secret: bool = False  # the value is never quoted

    @property
    def message(self) -> str:
        shown = "its value" if self.secret else f"{self.value!s}"
        where = " below the same parent" if self.rule.per_parent else ""
        return (f'value "{self.rule.value}": {shown} is already used by {self.other.dn}'
                f"{where}, and {WHY[self.other.stage]} (unique: each entry of the service needs its own, or the "
                "file of all entries would be invalid for every entry)")


def items(value: Any) -> list[Any]:
    """A value's items: a multi-valued value's, a single one, or none when unset."""
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def keys(rule: Unique, holder: Holder) -> set[tuple[str, str]]:
    """What `holder` claims under `rule`: (its parent DN, lowercased, or '' when the rule is
    service-wide; the item's text), for each item of the value (none when unset)."""
    scope = (parent_dn(holder.dn) or "").lower() if rule.per_parent else ""
    return {(scope, str(item)) for item in items(holder.values.get(rule.value))}


def items_of(rules: Sequence[Unique], values: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(the rule's value name, an item's text) for each item of each rule's value: what two
    entries must have in common to share a key under some rule, whatever their parents."""
    return {(rule.value, str(item)) for rule in rules for item in items(values.get(rule.value))}


def may_clash(rules: Sequence[Unique], wanted: set[tuple[str, str]],
              values: Mapping[str, Any]) -> bool:
    """Whether an entry with `values` can share a key with one whose `items_of` are `wanted`:
    a cheap test before `keys` (which parses DNs for rules per parent) is asked, so that an
    examination compares its entry with the few others that have one of its values, not with
    every active entry (issue 12: a burst of 1,000 iSCSI targets cost O(n^2))."""
    return bool(wanted) and not wanted.isdisjoint(items_of(rules, values))


def clash(rules: Sequence[Unique], entry: Holder, others: Iterable[Holder],
          values: Sequence[ValueSpec] = ()) -> Clash | None:
    """Why `entry` may not have one of its values (the first rule, then the other entry that
    keeps it first); None when it may. `others`: the service's other active and in-flight
    entries; `values`: the declarations (a secret value is never quoted)."""
    others = [other for other in others if other.uuid != entry.uuid]
    secret = {spec.name for spec in values if spec.secret}
    for rule in rules:
        wanted = keys(rule, entry)
        if not wanted:
            continue
        before = sorted((other for other in others if other.rank < entry.rank
                         and wanted & keys(rule, other)), key=lambda other: other.rank)
        if before:
            shared = min(wanted & keys(rule, before[0]))
            return Clash(rule, shared[1], before[0], rule.value in secret)
    return None


def losers(rules: Sequence[Unique], holders: Sequence[Holder],
           values: Sequence[ValueSpec] = ()) -> dict[str, Clash]:
    """The entries (uuid -> why) a file of all entries leaves out: each one that a kept entry
    ranks before on a shared value. An entry left out keeps nothing from the ones after it.
    One pass in rank order over what the kept ones claim (each render of a file of all
    entries asks: comparing every pair made a burst of n entries cost O(n^2) per render)."""
    secret = {spec.name for spec in values if spec.secret}
    claimed: list[dict[tuple[str, str], Holder]] = [{} for _ in rules]
    lost: dict[str, Clash] = {}
    for holder in sorted(holders, key=lambda holder: holder.rank):
        wanted = [keys(rule, holder) for rule in rules]
        found = None
        for rule, owners, mine in zip(rules, claimed, wanted, strict=True):
            taken = sorted((owners[key].rank, key) for key in mine if key in owners)
            if taken:
                owner = owners[taken[0][1]]
                shared = min(key for key in mine if owners.get(key) is owner)
                found = Clash(rule, shared[1], owner, rule.value in secret)
                break
        if found is not None:
            lost[holder.uuid] = found
            continue
        for owners, mine in zip(claimed, wanted, strict=True):
            for key in mine:
                owners[key] = holder
    return lost
