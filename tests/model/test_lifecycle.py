"""The state machine's rules, checked as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from ldap3 import MODIFY_ADD, MODIFY_DELETE, MODIFY_REPLACE

from provisiond.model import lifecycle
from provisiond.model.lifecycle import Action, EntryState
from provisiond.model.settings import StateAttributes

NOW = datetime(2026, 11, 22, 13, 45, 7, tzinfo=UTC)
NAMES = StateAttributes()


def state(mode: str | None = "add", st: str | None = "0", date: str | None = "0",
          rv: str | None = None) -> EntryState:
    return EntryState(mode=mode, state=st, execution_date=date, return_value=rv)


@pytest.mark.parametrize(
    ("entry", "action"),
    [
        (state(), Action.ACT),
        (state(mode="Modify"), Action.ACT),
        (state(mode="delete"), Action.ACT),
        (state(date="20261122"), Action.ACT),  # today (UTC) counts
        (state(date="20130812"), Action.ACT),  # overdue dates are not lost (legacy bug)
        (state(date="20261123"), Action.WAIT),
        (state(date="2026-11-23"), Action.INVALID),
        (state(date="20261340"), Action.INVALID),
        (state(mode="adding"), Action.IGNORE),
        (state(mode="added", st="20261122T000000Z"), Action.IGNORE),
        (state(st="20261122T000000Z"), Action.IGNORE),
        (state(mode=None), Action.IGNORE),
    ],
)
def test_decide(entry: EntryState, action: Action) -> None:
    assert lifecycle.decide(entry, NOW).action is action


def test_future_date_is_due_at_midnight_utc() -> None:
    decision = lifecycle.decide(state(date="20261201"), NOW)
    assert decision.due == datetime(2026, 12, 1, tzinfo=UTC)
    assert decision.request == "add"


def test_stranded_needs_working_mode_state_zero_and_no_return_value() -> None:
    assert lifecycle.is_stranded(state(mode="adding"))
    assert not lifecycle.is_stranded(state(mode="adding", rv="5"))
    assert not lifecycle.is_stranded(state(mode="add"))
    assert not lifecycle.is_stranded(state(mode="added", st="20261122T000000Z"))


def test_claim_is_delete_old_add_new_and_clears_return_value() -> None:
    changes = lifecycle.claim_changes(NAMES, state(mode="Add"), "add")
    assert changes["sstProvisioningMode"] == [(MODIFY_DELETE, ["Add"]), (MODIFY_ADD, ["adding"])]
    assert changes["sstProvisioningReturnValue"] == [(MODIFY_REPLACE, [])]
    assert lifecycle.claim_filter(NAMES, "add") == (
        "(&(sstProvisioningMode=add)(sstProvisioningState=0))"
    )


def test_a_claim_made_to_report_a_failure_writes_its_code_and_message_at_once() -> None:
    with_message = StateAttributes(message="provisiondMessage")
    plain = lifecycle.claim_changes(with_message, state(mode="add"), "add", "0123abcd")
    assert plain["provisiondMessage"] == [(MODIFY_REPLACE, ["in progress: claim 0123abcd"])]
    failing = lifecycle.claim_changes(with_message, state(mode="add"), "add", "0123abcd",
                                      failing=(30, "validate: value \"x\":\n bad"))
    assert failing["sstProvisioningMode"] == plain["sstProvisioningMode"]
    assert failing["sstProvisioningReturnValue"] == [(MODIFY_REPLACE, ["30"])]
    assert failing["provisiondMessage"] == [(MODIFY_REPLACE, ['validate: value "x": bad'])]
    without = lifecycle.claim_changes(NAMES, state(mode="add"), "add", failing=(30, "bad"))
    assert set(without) == {"sstProvisioningMode", "sstProvisioningReturnValue"}


def test_success_sets_done_mode_utc_timestamp_and_zero() -> None:
    changes = lifecycle.success_changes(NAMES, "modify", NOW, {"x": ("1",), "y": ()})
    assert changes["sstProvisioningMode"][1] == (MODIFY_ADD, ["modified"])
    assert changes["sstProvisioningState"] == [(MODIFY_REPLACE, ["20261122T134507Z"])]
    assert changes["sstProvisioningReturnValue"] == [(MODIFY_REPLACE, ["0"])]
    assert changes["x"] == [(MODIFY_REPLACE, ["1"])]
    assert changes["y"] == [(MODIFY_REPLACE, [])]  # an emptied multi output: removed


def test_failure_touches_only_return_value_and_message() -> None:
    names = StateAttributes(message="provisiondMessage")
    changes = lifecycle.failure_changes(names, 7, "bad\nthing")
    assert set(changes) == {"sstProvisioningReturnValue", "provisiondMessage"}
    assert changes["provisiondMessage"] == [(MODIFY_REPLACE, ["bad thing"])]


def test_failure_writes_the_outputs_it_is_given_as_a_whole() -> None:
    changes = lifecycle.failure_changes(NAMES, 7, "no", {"slots": ("4", "2")})
    assert changes["slots"] == [(MODIFY_REPLACE, ["4", "2"])]
    with pytest.raises(TypeError):  # one text would be written character by character
        lifecycle.failure_changes(NAMES, 7, "no", {"slots": "42"})


def test_retry_only_for_failed_entries() -> None:
    changes = lifecycle.retry_changes(NAMES, state(mode="adding", rv="5"))
    assert changes["sstProvisioningMode"] == [(MODIFY_DELETE, ["adding"]), (MODIFY_ADD, ["add"])]
    with pytest.raises(ValueError):
        lifecycle.retry_changes(NAMES, state(mode="added", rv="0"))
    with pytest.raises(ValueError):
        lifecycle.retry_changes(NAMES, state(mode="adding"))


def test_preconditions() -> None:
    assert lifecycle.preconditions_met({"active": False}, {"active": False}) is None
    assert "active" in (lifecycle.preconditions_met({"active": False}, {"active": True}) or "")
