"""The LDAP Modify request, encoded here and sent on an ldap3 connection.

Every entry costs two modifies (the claim and the report), and ldap3 builds each through
pyasn1 objects: building, checking and encoding a small ModifyRequest cost about a third of
the daemon's CPU per entry (issue 12, measured with yappi). The request is a fixed, simple
structure (RFC 4511 section 4.6), so it is encoded directly here and written to the
connection's socket; the answer is read and decoded by ldap3 as for any request, so the
result, the errors and the reconnects are ldap3's. `tests/directory/test_modify.py` compares
the bytes with ldap3's own encoding of the same request.

Used only on ldap3's synchronous strategy (the workers' connections); anything else goes
through `Connection.modify`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPSocketOpenError, LDAPSocketSendError
from ldap3.strategy.sync import SyncStrategy

from provisiond.directory.ber import element, integer, octets

OPERATIONS = {ldap3.MODIFY_ADD: 0, ldap3.MODIFY_DELETE: 1, ldap3.MODIFY_REPLACE: 2,
              ldap3.MODIFY_INCREMENT: 3}
Changes = Mapping[str, Sequence[tuple[str, Sequence[str]]]]
Control = tuple[str, bool, bytes | None]


def modify_message(message_id: int, dn: str, changes: Changes,
                   controls: Sequence[Control] = ()) -> bytes:
    """The LDAPMessage of a ModifyRequest, BER-encoded as ldap3 encodes it."""
    items = b"".join(
        element(0x30, element(0x0A, bytes((OPERATIONS[operation],)))  # change: operation ENUMERATED
             + element(0x30, octets(attribute)  # modification: type and SET OF vals
                    + element(0x31, b"".join(octets(value) for value in values))))
        for attribute, operations in changes.items() for operation, values in operations)
    request = element(0x66, octets(dn) + element(0x30, items))  # [APPLICATION 6] ModifyRequest
    encoded_controls = b""
    if controls:
        encoded_controls = element(0xA0, b"".join(
            element(0x30, octets(oid) + (b"\x01\x01\xff" if critical else b"")
                 + (octets(value) if value is not None else b""))
            for oid, critical, value in controls))
    return element(0x30, integer(message_id) + request + encoded_controls)


def send_modify(connection: ldap3.Connection, dn: str, changes: Changes,
                controls: Sequence[Control] = ()) -> Mapping[str, Any]:
    """`connection.modify(dn, changes, controls)`, its request encoded here; the result as
    ldap3 gives it (`connection.result`). Raises what ldap3 raises for a broken socket."""
    if not isinstance(connection.strategy, SyncStrategy) or not changes:
        connection.modify(dn, dict(changes), controls=list(controls) or None)
        return connection.result or {}
    with connection.connection_lock:
        if not connection.listening or connection.socket is None:
            raise LDAPSocketOpenError("unable to send message, socket is not open")
        strategy = connection.strategy
        message_id = connection.server.next_message_id()
        connection.request = {"type": "modifyRequest", "entry": dn, "changes": changes,
                              "controls": controls}
        # ldap3 matches the answer to what is outstanding under its message id
        strategy._outstanding[message_id] = connection.request
        try:
            connection.socket.sendall(modify_message(message_id, dn, changes, controls))
        except OSError as exc:
            strategy._outstanding.pop(message_id, None)
            raise LDAPSocketSendError(f"socket sending error {exc}") from exc
        strategy.post_send_single_response(message_id)
        return connection.result or {}
