"""The reference graph's decisions, as pure functions: which entries an entry names, whether
a referenced entry can be used, must be waited for or fails the entry, and when a request of a
referenced entry is refused because others still need it.

An iSCSI LUN is added in the same LDAP write burst as its disk; its steps need the disk's
device, which exists only once the disk's own steps ran. So an entry whose referenced entry is
not yet provisioned (its add pending or in progress) *waits*; it fails, with the reference's
code and a message saying why, only when the referenced entry cannot come: it does not exist,
is not an entry of that service, is inactive, is being deleted or was deleted, or its request
failed. The other direction: a disk still exported as a LUN must not be deleted (nor a value
the LUN depends on changed) while the LUN is active: `dependents:` refuses such a request.

The reads these decisions need are made by aggregates/resolver.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from provisiond.directory.decode import dn_key
from provisiond.model import lifecycle
from provisiond.model.settings import Reference

NAMED_LIMIT = 5  # referencing entries a refusal names; the rest are counted


def parent_dn(dn: str) -> str | None:
    """The DN of the entry above `dn` (everything after its first unescaped comma), or None
    for a DN of one RDN."""
    escaped = False
    for index, char in enumerate(dn):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            parent = dn[index + 1:].strip()
            return parent or None
    return None


def named(reference: Reference, dn: str, values: Mapping[str, Any]) -> tuple[str, ...]:
    """The DNs `reference` names for the entry at `dn` with `values` (none: an optional value
    that is not set)."""
    if reference.parent:
        parent = parent_dn(dn)
        return (parent,) if parent else ()
    given = values.get(reference.name)
    if given is None:
        return ()
    if isinstance(given, list | tuple):
        return tuple(str(item) for item in given)
    return (str(given),)


def attach(refs: dict[str, Any], reference: Reference, found: Sequence[Any]) -> None:
    """Put what `reference` resolved to in `refs`: the list for a multi-valued value, else
    the one entry (absent when it did not resolve)."""
    if reference.multi:
        refs[reference.name] = list(found)
    elif found:
        refs[reference.name] = found[0]


def within(dn: str, base: str, scope: str) -> bool:
    """Whether `dn` is in the search `scope` (base, one, sub) below `base`."""
    try:
        entry, top = dn_key(dn), dn_key(base)
    except ValueError:
        return False
    depth = len(entry) - len(top)
    if depth < 0 or entry[depth:] != top:
        return False
    return {"base": depth == 0, "one": depth == 1}.get(scope, True)


@dataclass(frozen=True)
class Seen:
    """What a read of a referenced DN showed (the entry was not among the active entries the
    mirror of its service holds)."""

    exists: bool
    of_service: bool = False  # matches the service's filter, inside its base and scope
    active: bool = False  # matches its `active` filter too (no such filter: True)
    state: lifecycle.EntryState | None = None


@dataclass(frozen=True)
class Unresolved:
    """A referenced entry that cannot be used now: waited for (`wait`) or a failure."""

    reference: Reference
    dn: str
    reason: str
    wait: bool = False

    @property
    def message(self) -> str:
        what = "parent" if self.reference.parent else f'value "{self.reference.name}"'
        return (f"{what}: {self.dn} is not an active entry of service "
                f"{self.reference.service}: {self.reason}")


def judge(reference: Reference, dn: str, seen: Seen) -> Unresolved | None:
    """None: the entry read can be used; else why not, and whether to wait for it."""

    def fail(reason: str) -> Unresolved:
        return Unresolved(reference, dn, reason)

    def wait(reason: str) -> Unresolved:
        return Unresolved(reference, dn, reason, wait=True)

    if not seen.exists:
        return fail("it does not exist")
    if not seen.of_service or seen.state is None:
        return fail(f"it exists but is not an entry of service {reference.service}")
    state = seen.state
    cycle = state.lifecycle
    if lifecycle.is_failed(state):
        return fail(f"its {state.working_request} failed (ReturnValue {state.return_value})")
    if state.request is not None:
        effect = cycle.request(state.request).effect
        if effect == "create":
            due = state.execution_date
            when = f" (execution date {due})" if due and due.strip() not in ("", "0") else ""
            return wait(f"its {state.request} is pending{when}")
        if effect == "remove":
            return fail(f"it is being deleted ({state.request} requested)")
    elif state.working_request is not None:
        effect = cycle.request(state.working_request).effect
        if effect == "create":
            return wait(f"it is being provisioned ({state.mode})")
        if effect == "remove":
            return fail(f"it is being deleted ({state.mode})")
    elif state.done_request is not None:
        if cycle.request(state.done_request).effect == "remove":
            return fail(f"it was deleted ({state.mode})")
    else:
        return fail(f"it is not provisioned (mode {state.mode!r})")
    if not seen.active:
        return fail(f"it is inactive (the `active` filter of service {reference.service} "
                    "does not match it)")
    return None


def most_pressing(found: Sequence[Unresolved]) -> Unresolved | None:
    """The one that decides: a failure before a wait (waiting for one entry is pointless when
    another has failed for good)."""
    failures = [item for item in found if not item.wait]
    ordered = failures or list(found)
    return ordered[0] if ordered else None


def fixed_changed(fixed: Sequence[str], provisioned: Mapping[str, Any] | None,
                  values: Mapping[str, Any]) -> list[str]:
    """The `fixed` values a modify changes (nothing known was provisioned: none)."""
    if provisioned is None:
        return []
    return [name for name in fixed if provisioned.get(name) != values.get(name)]


def refusal(referencing: Sequence[tuple[str, str]], changed: Sequence[str] = ()) -> str:
    """The message of a request refused because entries (service, DN) still reference the
    entry; `changed`: the fixed values a modify would change (a delete: none)."""
    count = len(referencing)
    shown = "; ".join(f"{service} {dn}" for service, dn in referencing[:NAMED_LIMIT])
    more = f" and {count - NAMED_LIMIT} more" if count > NAMED_LIMIT else ""
    what = (f"changing {', '.join(changed)} is refused" if changed
            else "the delete is refused")
    return (f"{what} while {count} entr{'y' if count == 1 else 'ies'} of other services "
            f"reference{'s' if count == 1 else ''} it (dependents): {shown}{more}")
