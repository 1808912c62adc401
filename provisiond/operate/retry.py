"""`provisiond retry DN`: put a failed entry back to its request, in one atomic modify.

A failed entry stays at its working mode (`adding`/`modifying`/`deleting`, see
model/states.py) with state 0 and a non-zero ReturnValue (and a message) so that an operator
sees it. Once the cause is fixed, retry turns it back into
the request (adding -> add), removes the ReturnValue and the message, and sets state 0; the
daemon sees the change like any other request and runs the steps again from the first.

The modify deletes the exact mode and ReturnValue values it read, and carries an Assertion
control for the failed state, so if anything changed the entry in between (another operator,
the daemon, a portal) the server refuses it as a whole and nothing is half-done.
"""

from __future__ import annotations

import json
from typing import Any, TextIO

from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars

from provisiond.directory.connection import DirectoryUnavailable
from provisiond.directory.controls import assertion_control
from provisiond.exitcodes import EX_DATAERR, EX_OK, EX_TEMPFAIL
from provisiond.model import lifecycle
from provisiond.model.settings import Config, StateAttributes
from provisiond.operate.common import (
    OperateError,
    Reader,
    find_entry,
    terminal_safe,
)

CHANGED_MEANWHILE = {16, 32, 122}  # noSuchAttribute, noSuchObject, assertionFailed


def failed_filter(names: StateAttributes, state: lifecycle.EntryState) -> str:
    """The assertion the retry carries: still exactly the failure that was read."""
    mode = escape_filter_chars(state.mode or "")
    code = escape_filter_chars(state.return_value or "")
    return f"(&({names.mode}={mode})({names.state}=0)({names.return_value}={code}))"


def retry(config: Config, dn: str) -> dict[str, Any]:
    """Retry the failed entry at `dn`; raises OperateError (EX_DATAERR when it is not failed,
    EX_TEMPFAIL when it changed meanwhile)."""
    with Reader(config, write=True) as reader:
        spec, entry = find_entry(config, reader, dn)
        names = spec.attributes
        state = lifecycle.read_state(names, entry.attributes, spec.lifecycle)
        message = lifecycle.first(entry.attributes, names.message) if names.message else None
        if not lifecycle.is_failed(state):
            raise OperateError(
                f"{entry.dn} is not a failed entry (mode {state.mode}, state {state.state}, "
                f"ReturnValue {state.return_value}); only an entry left at -ing with state 0 "
                "and a non-zero ReturnValue can be retried", EX_DATAERR)
        changes = lifecycle.retry_changes(names, state)
        try:
            reader.connection.modify(entry.dn, dict(changes),
                                     controls=[assertion_control(failed_filter(names, state))])
        except (LDAPException, OSError) as exc:
            raise DirectoryUnavailable(f"modify of {entry.dn} failed: {exc}") from exc
        result = reader.connection.result or {}
        code = int(result.get("result", -1))
        if code in CHANGED_MEANWHILE:
            raise OperateError(f"{entry.dn} changed since it was read ({result.get('description')}"
                               "); nothing was modified, look at it again", EX_TEMPFAIL)
        if code != 0:
            raise DirectoryUnavailable(
                f"modify of {entry.dn} refused: {result.get('description')} "
                f"({result.get('message') or code})")
    return {"dn": entry.dn, "uuid": entry.uuid, "service": spec.name,
            "from": {"mode": state.mode, "return_value": state.return_value, "message": message},
            "to": {"mode": state.working_request, "state": "0"}}


def main(config: Config, dn: str, out: TextIO, *, as_json: bool = False) -> int:
    done = retry(config, dn)
    if as_json:
        json.dump(done, out, indent=2)
        out.write("\n")
    else:
        before = done["from"]
        why = f": {terminal_safe(before['message'])}" if before["message"] else ""
        print(f"{terminal_safe(done['dn'])}: {before['mode']} (ReturnValue "
              f"{before['return_value']}{why}) -> {done['to']['mode']}, state 0; "
              f"service {done['service']} picks it up", file=out)
    return EX_OK
