"""One description of the state machine: filters, mode names, `status` categories, `retry`
eligibility and the CLI's `--mode` choices all derive from a `Lifecycle` (model/states.py),
for today's resource lifecycle exactly as they were written out before, and for a one-shot
operation lifecycle (add -> adding -> added; a delete acknowledged, running no steps) without
another line of code."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from ldap3 import MODIFY_ADD, MODIFY_DELETE

from provisiond.commands import render
from provisiond.config.syntax import check_filter
from provisiond.model import lifecycle, settings
from provisiond.model.lifecycle import EntryState
from provisiond.model.settings import ServiceSpec, StateAttributes
from provisiond.model.states import OPERATION, RESOURCE, Lifecycle, Request, request_choices
from provisiond.operate import status

NOW = datetime(2026, 11, 22, 13, 45, 7, tzinfo=UTC)
NAMES = StateAttributes()
SPEC = ServiceSpec(name="x", base="ou=x", filter="(objectClass=x)", attributes=NAMES,
                   values=(), outputs=(), steps={}, active="(a=TRUE)")
M = "sstProvisioningMode"


def entry(mode: str | None, st: str = "0", rv: str | None = None, date: str = "0",
          cycle: Lifecycle = RESOURCE) -> EntryState:
    return EntryState(mode=mode, state=st, execution_date=date, return_value=rv,
                      lifecycle=cycle)


# -- the resource lifecycle: exactly what was written out by hand before ------------------------

def test_resource_filters_are_the_hand_written_ones() -> None:
    assert SPEC.lifecycle is RESOURCE
    assert SPEC.sync_filter == (
        f"(&(objectClass=x)(|({M}=add)({M}=modify)({M}=delete))(sstProvisioningState=0))")
    assert SPEC.working_filter == (
        f"(&(objectClass=x)(|({M}=adding)({M}=modifying)({M}=deleting)))")
    assert SPEC.aggregate_filter == (
        f"(&(objectClass=x)(|({M}=added)({M}=modify)({M}=modifying)({M}=modified)"
        f"({M}=delete))(a=TRUE))")


def test_resource_names() -> None:
    assert RESOURCE.request_names == settings.REQUEST_MODES == ("add", "modify", "delete")
    assert lifecycle.WORKING == {"add": "adding", "modify": "modifying", "delete": "deleting"}
    assert lifecycle.DONE == {"add": "added", "modify": "modified", "delete": "deleted"}
    assert lifecycle.REQUEST_OF_WORKING == {
        "adding": "add", "modifying": "modify", "deleting": "delete"}
    assert RESOURCE.modes == ("add", "adding", "added", "modify", "modifying", "modified",
                              "delete", "deleting", "deleted")
    assert RESOURCE.terminal == ("added", "modified", "deleted")
    assert RESOURCE.alive == ("added", "modify", "modifying", "modified", "delete")


def test_cli_mode_choices_derive_from_the_lifecycles_without_ldap3() -> None:
    assert render.MODES == request_choices() == ("add", "modify", "delete")
    code = ("import sys; import provisiond.commands.render as r; "
            "assert 'ldap3' not in sys.modules, 'ldap3 imported'; print(' '.join(r.MODES))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["add", "modify", "delete"]


# -- a one-shot operation: add -> adding -> added; delete acknowledged without steps -----------

def test_operation_names_and_filters() -> None:
    assert OPERATION.request_names == ("add", "delete")
    assert OPERATION.acting == ("add",) and RESOURCE.acting == RESOURCE.request_names
    assert OPERATION.modes == ("add", "adding", "added", "delete", "deleting", "deleted")
    assert OPERATION.working == {"add": "adding", "delete": "deleting"}
    assert OPERATION.done == {"add": "added", "delete": "deleted"}
    assert OPERATION.terminal == ("added", "deleted") and OPERATION.alive == ("added", "delete")
    spec = replace(SPEC, lifecycle=OPERATION)
    assert spec.sync_filter == (
        f"(&(objectClass=x)(|({M}=add)({M}=delete))(sstProvisioningState=0))")
    assert spec.working_filter == f"(&(objectClass=x)(|({M}=adding)({M}=deleting)))"
    assert spec.aggregate_filter == f"(&(objectClass=x)(|({M}=added)({M}=delete))(a=TRUE))"
    for text in (spec.sync_filter, spec.working_filter, spec.aggregate_filter):
        assert check_filter(text) == text  # well-formed (raises if not)


def test_operation_entries_know_only_their_modes() -> None:
    assert lifecycle.decide(entry("Add", cycle=OPERATION), NOW).action is lifecycle.Action.ACT
    assert lifecycle.decide(entry("modify", cycle=OPERATION), NOW).action \
        is lifecycle.Action.IGNORE
    assert entry("adding", cycle=OPERATION).working_request == "add"
    assert entry("modifying", cycle=OPERATION).working_request is None
    assert entry("deleting", cycle=OPERATION).working_request == "delete"
    assert lifecycle.is_stranded(entry("adding", cycle=OPERATION))
    assert not lifecycle.is_stranded(entry("modifying", cycle=OPERATION))
    claim = lifecycle.claim_changes(NAMES, entry("add", cycle=OPERATION), "add")
    assert claim[M] == [(MODIFY_DELETE, ["add"]), (MODIFY_ADD, ["adding"])]
    done = lifecycle.success_changes(NAMES, "add", NOW, lifecycle=OPERATION)
    assert done[M] == [(MODIFY_DELETE, ["adding"]), (MODIFY_ADD, ["added"])]
    with pytest.raises(KeyError):
        lifecycle.success_changes(NAMES, "modify", NOW, lifecycle=OPERATION)


def test_read_state_carries_the_lifecycle() -> None:
    attributes = {M.lower(): ["modify"], "sstprovisioningstate": ["0"]}
    assert lifecycle.read_state(NAMES, attributes).request == "modify"
    assert lifecycle.read_state(NAMES, attributes, OPERATION).request is None


def test_a_lifecycle_with_clashing_or_unsafe_modes_is_refused() -> None:
    with pytest.raises(ValueError, match="distinct"):
        Lifecycle("bad", (Request("add", "adding", "added", "create"),
                          Request("redo", "adding", "redone", "change")))
    with pytest.raises(ValueError, match="distinct"):
        Lifecycle("bad", (Request("add", "add*", "added", "create"),))
    with pytest.raises(ValueError, match="distinct"):
        Lifecycle("bad", ())


# -- status categories and retry eligibility ---------------------------------------------------

@pytest.mark.parametrize(("state", "category"), [
    (entry("add"), "pending"),
    (entry("Modify"), "pending"),
    (entry("delete", date="20261201"), "scheduled"),
    (entry("add", st="20261122T000000Z"), "other"),
    (entry("adding"), "working"),
    (entry("deleting", rv="3"), "failed"),
    (entry("modifying", rv="0"), "other"),
    (entry("modifying", st="20261122T000000Z", rv="3"), "other"),
    (entry("added", st="20261122T000000Z"), "done"),
    (entry("Deleted", st="20261122T000000Z"), "done"),
    (entry("removed"), "other"),
    (entry(None), "other"),
    (entry("add", cycle=OPERATION), "pending"),
    (entry("adding", rv="9", cycle=OPERATION), "failed"),
    (entry("added", st="20261122T000000Z", cycle=OPERATION), "done"),
    (entry("modified", st="20261122T000000Z", cycle=OPERATION), "other"),
    (entry("modify", cycle=OPERATION), "other"),
])
def test_status_categories(state: EntryState, category: str) -> None:
    assert status.classify(state, NOW, 10.0, 900.0) == category


def test_status_stuck_and_mode_order() -> None:
    assert status.classify(entry("adding"), NOW, 1000.0, 900.0) == "stuck"
    assert [status.mode_rank(RESOURCE, m)[0] for m in ("add", "adding", "deleted")] == [0, 1, 8]
    assert status.mode_rank(RESOURCE, "(none)") > status.mode_rank(RESOURCE, "deleted")
    assert status.mode_rank(OPERATION, "added") < status.mode_rank(OPERATION, "modify")


@pytest.mark.parametrize(("state", "failed"), [
    (entry("adding", rv="5"), True),
    (entry("Modifying", rv="1"), True),
    (entry("deleting", rv="70"), True),
    (entry("adding"), False),  # working, not failed
    (entry("adding", rv="0"), False),
    (entry("adding", st="20261122T000000Z", rv="5"), False),
    (entry("added", st="20261122T000000Z", rv="0"), False),
    (entry("add", rv="5"), False),
    (entry("adding", rv="5", cycle=OPERATION), True),
    (entry("deleting", rv="5", cycle=OPERATION), True),
    (entry("modifying", rv="5", cycle=OPERATION), False),
])
def test_retry_eligibility(state: EntryState, failed: bool) -> None:
    assert lifecycle.is_failed(state) is failed
    assert (status.classify(state, NOW, 10.0, 900.0) == "failed") is failed
    if failed:
        changes = lifecycle.retry_changes(NAMES, state)
        assert changes[M] == [(MODIFY_DELETE, [state.mode]),
                              (MODIFY_ADD, [state.working_request])]
    else:
        with pytest.raises(ValueError):
            lifecycle.retry_changes(NAMES, state)
