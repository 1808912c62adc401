"""The Modify request provisiond encodes itself (directory/modify.py): byte for byte what
ldap3 encodes for the same request, and carried out by a real slapd with ldap3's answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ldap3
import pytest
from ldap3.operation.modify import modify_operation
from ldap3.protocol.convert import build_controls_list
from ldap3.protocol.rfc4511 import LDAPMessage, MessageID, ProtocolOp
from ldap3.utils.asn1 import encode

from provisiond.directory.access import Directory
from provisiond.directory.connection import ConnectionFactory
from provisiond.directory.controls import equality_assertion
from provisiond.directory.modify import modify_message
from provisiond.model.settings import LdapSettings
from provisiond.testing.slapd import Slapd
from tests.support import add_item, connect, read


def ldap3_bytes(message_id: int, dn: str, changes: dict[str, Any],
                controls: list[Any] | None) -> bytes:
    """What ldap3's Connection.send puts on the wire for this modify."""
    message = LDAPMessage()
    message["messageID"] = MessageID(message_id)
    message["protocolOp"] = ProtocolOp().setComponentByName(
        "modifyRequest", modify_operation(dn, changes, True))
    built = build_controls_list(controls)
    if built is not None:
        message["controls"] = built
    return bytes(encode(message))


CLAIM = {"provisiondMode": [(ldap3.MODIFY_DELETE, ["add"]), (ldap3.MODIFY_ADD, ["adding"])],
         "provisiondReturnValue": [(ldap3.MODIFY_REPLACE, [])],
         "provisiondMessage": [(ldap3.MODIFY_REPLACE, ["in progress: claim 0123abcd"])]}


@pytest.mark.parametrize(("message_id", "dn", "changes", "controls"), [
    (1, "cn=a,ou=demo,dc=example,dc=org", CLAIM,
     [equality_assertion((("provisiondMode", "add"), ("provisiondState", "0")))]),
    (127, "cn=b,dc=x", {"description": [(ldap3.MODIFY_REPLACE, ["ünïcødé", "two"])]}, None),
    (128, "uid=4000001,ou=accounts,ou=backup,ou=services,dc=stoney-cloud,dc=org",
     {"sstProvisioningState": [(ldap3.MODIFY_REPLACE, ["20261204T120000Z"])]}, None),
    (70000, "cn=" + "x" * 300 + ",dc=x",  # long-form lengths, a three-byte message id
     {"description": [(ldap3.MODIFY_ADD, ["y" * 70000])],
      "cn": [(ldap3.MODIFY_DELETE, ["z"]), (ldap3.MODIFY_INCREMENT, ["1"])]},
     [("1.3.6.1.1.12", False, None), ("1.2.3", True, b"\x00\x01")]),
])
def test_the_modify_request_is_what_ldap3_encodes(message_id: int, dn: str,
                                                  changes: dict[str, Any],
                                                  controls: list[Any] | None) -> None:
    assert modify_message(message_id, dn, changes, controls or ()) == \
        ldap3_bytes(message_id, dn, changes, controls)


def test_slapd_carries_out_the_request_and_ldap3_reads_the_answer(
        slapd: Slapd, password_file: Path) -> None:
    conn = connect(slapd)
    dn = add_item(conn, "modified")
    directory = Directory(ConnectionFactory(LdapSettings(
        uri=slapd.uri, bind_dn=slapd.root_dn, bind_password_file=str(password_file))))
    asserting = [equality_assertion((("provisiondMode", "add"), ("provisiondState", "0")))]
    claim = {"provisiondMode": [(ldap3.MODIFY_DELETE, ["add"]), (ldap3.MODIFY_ADD, ["adding"])]}
    result = directory.modify(dn, claim, controls=asserting)
    assert (result.ok, result.code) == (True, 0)
    assert read(conn, dn)["provisiondMode"] == "adding"
    again = directory.modify(dn, claim, controls=asserting)  # the assertion no longer holds
    assert (again.ok, again.code) == (False, 122)
    gone = directory.modify("cn=nobody,ou=demo,dc=example,dc=org", {
        "description": [(ldap3.MODIFY_REPLACE, ["x"])]})
    assert (gone.ok, gone.code) == (False, 32)
