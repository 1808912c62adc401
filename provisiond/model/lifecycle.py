"""The provisioning state machine, as pure functions.

    add    -> adding    -> added      (state: UTC YYYYMMDDThhmmssZ, ReturnValue 0)
    modify -> modifying -> modified
    delete -> deleting  -> deleted
    failure: mode stays at `-ing`, state stays 0, ReturnValue = the failing step's code

stoney cloud's daemon defined these transitions (the mode names are declared once, in
model/states.py: a service's `lifecycle`, by default the resource one above); this module
decides, from an entry's attributes and the date, what to do with it, and computes the LDAP
modifications for a claim, a success, a failure and a retry. Nothing here performs I/O, so
every rule is unit-tested directly.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

from ldap3 import MODIFY_ADD, MODIFY_DELETE, MODIFY_REPLACE

from provisiond.model.settings import StateAttributes
from provisiond.model.states import RESOURCE, Lifecycle

# The resource lifecycle's names, for log lines of callers that hold only a request.
WORKING = RESOURCE.working
DONE = RESOURCE.done
REQUEST_OF_WORKING = {working: request for request, working in WORKING.items()}
STATE_FORMAT = "%Y%m%dT%H%M%SZ"
MESSAGE_LIMIT = 1000


class Action(enum.Enum):
    IGNORE = "ignore"  # nothing requested (settled, failed, or another daemon's work)
    ACT = "act"  # claim now and run the steps
    WAIT = "wait"  # requested for a future day: act when it comes
    INVALID = "invalid"  # requested, but the execution date is unreadable


@dataclass(frozen=True)
class EntryState:
    mode: str | None
    state: str | None
    execution_date: str | None
    return_value: str | None
    lifecycle: Lifecycle = field(default=RESOURCE, repr=False)  # its service's

    @property
    def request(self) -> str | None:
        """The requested mode (add/modify/delete), case-insensitively, or None."""
        return self.lifecycle.requested(self.mode)

    @property
    def working_request(self) -> str | None:
        """For an entry at adding/modifying/deleting, the mode it was requested as."""
        return self.lifecycle.request_at_working(self.mode)

    @property
    def done_request(self) -> str | None:
        """For an entry at added/modified/deleted, the request that got it there."""
        return self.lifecycle.request_at_done(self.mode)


@dataclass(frozen=True)
class Decision:
    action: Action
    request: str | None = None
    due: datetime | None = None  # for WAIT: when it becomes actionable (UTC)
    reason: str = ""


def first(attributes: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = attributes.get(name.lower())
    return values[0] if values else None


def read_state(names: StateAttributes, attributes: Mapping[str, Sequence[str]],
               lifecycle: Lifecycle = RESOURCE) -> EntryState:
    """`attributes` has lowercased keys, as the change stream delivers them; `lifecycle` is
    the entry's service's."""
    return EntryState(
        mode=first(attributes, names.mode),
        state=first(attributes, names.state),
        execution_date=first(attributes, names.execution_date),
        return_value=first(attributes, names.return_value),
        lifecycle=lifecycle,
    )


def parse_execution_date(value: str | None) -> date | None:
    """'0' (or absent) means now (None); otherwise a YYYYMMDD day. Raises ValueError."""
    if value is None or value.strip() in ("", "0"):
        return None
    text = value.strip()
    if not re.fullmatch(r"\d{8}", text):
        raise ValueError(f"execution date {text!r} is not 0 or YYYYMMDD")
    return datetime.strptime(text, "%Y%m%d").date()


def decide(entry: EntryState, now: datetime) -> Decision:
    """What to do with an entry seen at `now` (UTC)."""
    request = entry.request
    if request is None or (entry.state or "").strip() != "0":
        return Decision(Action.IGNORE)
    try:
        day = parse_execution_date(entry.execution_date)
    except ValueError as exc:
        return Decision(Action.INVALID, request, reason=str(exc))
    if day is not None and day > now.astimezone(UTC).date():
        due = datetime.combine(day, time(0, 0), tzinfo=UTC)
        return Decision(Action.WAIT, request, due=due)
    return Decision(Action.ACT, request)


def is_stranded(entry: EntryState) -> bool:
    """At `-ing`, state 0 and no ReturnValue: claimed, then interrupted before a report."""
    return (
        entry.working_request is not None
        and (entry.state or "").strip() == "0"
        and entry.return_value is None
    )


def is_failed(entry: EntryState) -> bool:
    """At `-ing`, state 0 and a non-zero ReturnValue: the steps failed and an operator is
    needed (`status` lists it as failed; only such an entry may be retried)."""
    return (
        entry.working_request is not None
        and (entry.state or "").strip() == "0"
        and entry.return_value not in (None, "0")
    )


def preconditions_met(required: Mapping[str, Any], values: Mapping[str, Any]) -> str | None:
    """None when every required value matches, else a sentence saying which does not."""
    for name, expected in required.items():
        if values.get(name) != expected:
            return f"{name} must be {expected!r}, is {values.get(name)!r}"
    return None


Changes = dict[str, list[tuple[str, list[str]]]]


def claim_terms(names: StateAttributes, request: str,
                csn: str | None = None) -> tuple[tuple[str, str], ...]:
    """The assertion a claim carries, as equality terms all of which must hold: still
    requested and still pending; with `csn`, also unchanged since the entry was read (its
    entryCSN), so a claim may act on the values a change notification carried instead of
    reading the entry again."""
    terms = ((names.mode, request), (names.state, "0"))
    return terms + ((("entryCSN", csn),) if csn else ())


def claim_filter(names: StateAttributes, request: str, csn: str | None = None) -> str:
    """`claim_terms` as an LDAP filter."""
    return "(&" + "".join(f"({name}={value})" for name, value in
                          claim_terms(names, request, csn)) + ")"


def claim_message(token: str) -> str:
    """The message a claim writes: says what is going on, and carries the claim's token,
    the proof of ownership a resume checks (journal.py)."""
    return f"in progress: claim {token}"


def claim_changes(names: StateAttributes, entry: EntryState, request: str,
                  token: str = "", failing: tuple[int, str] | None = None) -> Changes:
    """add -> adding in one modify; deleting the old value fails if it is gone (lost race).
    `failing`: the entry is claimed only to report that it is invalid, with this code and
    message; the claim writes both at once, so the entry reads as failed from the claim on
    (another entry's `unique:` examination must not take it for one being provisioned
    meanwhile, and a reader that sees the code also sees why). Such a claim carries no token:
    a failed entry is never resumed, so nothing needs to prove whose it is."""
    changes: Changes = {
        names.mode: [(MODIFY_DELETE, [entry.mode or request]),
                     (MODIFY_ADD, [entry.lifecycle.request(request).working])],
        names.return_value: [(MODIFY_REPLACE, [] if failing is None else [str(failing[0])])],
    }
    if names.message:
        message = clip(failing[1]) if failing else claim_message(token) if token else None
        changes[names.message] = [(MODIFY_REPLACE, [message] if message else [])]
    return changes


def success_changes(
    names: StateAttributes,
    request: str,
    now: datetime,
    outputs: Mapping[str, Sequence[str]] | None = None,
    message: str | None = None,
    lifecycle: Lifecycle = RESOURCE,
) -> Changes:
    """The request done; `outputs` (attribute -> texts) replace the attributes' values."""
    declared = lifecycle.request(request)
    changes: Changes = {
        names.mode: [(MODIFY_DELETE, [declared.working]), (MODIFY_ADD, [declared.done])],
        names.state: [(MODIFY_REPLACE, [now.astimezone(UTC).strftime(STATE_FORMAT)])],
        names.return_value: [(MODIFY_REPLACE, ["0"])],
    }
    if names.message:
        changes[names.message] = [(MODIFY_REPLACE, [clip(message)] if message else [])]
    return _with_outputs(changes, outputs)


def failure_changes(names: StateAttributes, code: int, message: str,
                    outputs: Mapping[str, Sequence[str]] | None = None) -> Changes:
    """Mode stays at `-ing`, state stays 0: only the code (and message) are written, and the
    outputs declared `on_failure` (attribute -> texts), replacing the attributes' values."""
    changes: Changes = {names.return_value: [(MODIFY_REPLACE, [str(code)])]}
    if names.message:
        changes[names.message] = [(MODIFY_REPLACE, [clip(message)])]
    return _with_outputs(changes, outputs)


def _with_outputs(changes: Changes, outputs: Mapping[str, Sequence[str]] | None) -> Changes:
    """An output replaces its attribute as a whole: no texts remove it (a cleared multi)."""
    for attribute, texts in (outputs or {}).items():
        if isinstance(texts, str):  # the texts of one value, not its characters
            raise TypeError(f"output {attribute}: a sequence of texts, not a str")
        changes[attribute] = [(MODIFY_REPLACE, list(texts))]
    return changes


def retry_changes(names: StateAttributes, entry: EntryState) -> Changes:
    """Put a failed entry back to its request (adding -> add, ReturnValue removed)."""
    if not is_failed(entry):
        raise ValueError("only a failed entry (at -ing, state 0, a non-zero ReturnValue) can be "
                         "retried")
    changes: Changes = {
        names.mode: [(MODIFY_DELETE, [entry.mode or ""]),
                     (MODIFY_ADD, [entry.working_request or ""])],
        names.state: [(MODIFY_REPLACE, ["0"])],
        names.return_value: [(MODIFY_DELETE, [entry.return_value or ""])],
    }
    if names.message:
        changes[names.message] = [(MODIFY_REPLACE, [])]
    return changes


def clip(message: str) -> str:
    """One line, bounded: messages land in syslog and in an LDAP attribute."""
    flat = " ".join(message.split())
    return flat if len(flat) <= MESSAGE_LIMIT else flat[: MESSAGE_LIMIT - 3] + "..."
