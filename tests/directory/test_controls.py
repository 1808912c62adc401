"""RFC 4533 / RFC 4528 controls: fixed byte vectors, and the Assertion control enforced by slapd."""

from __future__ import annotations

import uuid
from pathlib import Path

import ldap3
import pytest

from provisiond.directory.ber import element
from provisiond.directory.connection import ConnectionFactory
from provisiond.directory.controls import (
    ASSERTION_OID,
    SYNC_REQUEST_OID,
    ControlError,
    StateName,
    SyncDone,
    SyncInfo,
    SyncState,
    assertion_control,
    decode_sync_done,
    decode_sync_info,
    decode_sync_state,
    equality_assertion,
    sync_request_control,
)
from provisiond.model.settings import LdapSettings
from provisiond.testing.slapd import Slapd

U1 = uuid.UUID("2d82a132-7a98-1041-874e-5f9e84e2ee22")
U2 = uuid.UUID("2d82c018-7a98-1041-874f-5f9e84e2ee22")
COOKIE = b"rid=000,sid=001,csn=20240101000000.000000Z#000000#001#000000"


def tlv(tag: int, content: bytes) -> bytes:
    assert len(content) < 128
    return bytes([tag, len(content)]) + content


def test_sync_request_refresh_only_without_cookie() -> None:
    assert sync_request_control("refreshOnly", None) == (SYNC_REQUEST_OID, True, b"0\x03\n\x01\x01")


def test_sync_request_persist_with_cookie_and_reload_hint() -> None:
    oid, critical, value = sync_request_control("refreshAndPersist", COOKIE.decode(), True)
    assert (oid, critical) == (SYNC_REQUEST_OID, True)
    assert value == tlv(0x30, b"\x0a\x01\x03" + tlv(0x04, COOKIE) + b"\x01\x01\xff")


def test_sync_request_omits_default_reload_hint() -> None:
    _, _, value = sync_request_control("refreshOnly", "csn=x")
    assert value == tlv(0x30, b"\x0a\x01\x01" + tlv(0x04, b"csn=x"))


@pytest.mark.parametrize(
    ("number", "state"), [(0, "present"), (1, "add"), (2, "modify"), (3, "delete")]
)
def test_decode_sync_state(number: int, state: StateName) -> None:
    value = tlv(0x30, bytes([0x0A, 1, number]) + tlv(0x04, U1.bytes) + tlv(0x04, COOKIE))
    assert decode_sync_state(value) == SyncState(state, str(U1), COOKIE.decode())


def test_decode_sync_state_without_cookie() -> None:
    value = tlv(0x30, b"\x0a\x01\x01" + tlv(0x04, U1.bytes))
    assert decode_sync_state(value) == SyncState("add", str(U1), None)


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"\x30\x03\x0a\x01\x01",  # no UUID
        tlv(0x30, b"\x0a\x01\x01" + tlv(0x04, b"short")),
        tlv(0x30, b"\x0a\x01\x07" + tlv(0x04, U1.bytes)),  # unknown state
        tlv(0x30, b"\x0a\x01\x01" + tlv(0x04, U1.bytes)) + b"\x00",  # trailing bytes
    ],
)
def test_decode_sync_state_rejects_garbage(value: bytes) -> None:
    with pytest.raises(ControlError):
        decode_sync_state(value)


def test_decode_sync_done() -> None:
    assert decode_sync_done(b"\x30\x00") == SyncDone(None, False)
    assert decode_sync_done(b"\x30\x02\x04\x00") == SyncDone(None, False)  # empty cookie
    value = tlv(0x30, tlv(0x04, COOKIE) + b"\x01\x01\xff")
    assert decode_sync_done(value) == SyncDone(COOKIE.decode(), True)


def test_decode_sync_info_newcookie() -> None:
    assert decode_sync_info(tlv(0x80, COOKIE)) == SyncInfo("newcookie", COOKIE.decode())


def test_decode_sync_info_refresh_phases() -> None:
    assert decode_sync_info(b"\xa1\x00") == SyncInfo("refreshDelete", None, refresh_done=True)
    value = tlv(0xA2, tlv(0x04, COOKIE) + b"\x01\x01\x00")
    assert decode_sync_info(value) == SyncInfo("refreshPresent", COOKIE.decode(), refresh_done=False)


def test_decode_sync_info_sync_id_set() -> None:
    uuids = tlv(0x31, tlv(0x04, U1.bytes) + tlv(0x04, U2.bytes))
    deletes = decode_sync_info(tlv(0xA3, tlv(0x04, COOKIE) + b"\x01\x01\xff" + uuids))
    assert deletes == SyncInfo(
        "syncIdSet", COOKIE.decode(), refresh_deletes=True, uuids=(str(U1), str(U2))
    )
    present = decode_sync_info(tlv(0xA3, uuids))
    assert present == SyncInfo("syncIdSet", None, refresh_deletes=False, uuids=(str(U1), str(U2)))


def test_decode_sync_info_rejects_unknown_choice() -> None:
    with pytest.raises(ControlError):
        decode_sync_info(b"\xa7\x00")


def test_assertion_control_encodes_ldap_filter() -> None:
    oid, critical, value = assertion_control("(provisiondMode=add)")
    assert (oid, critical) == (ASSERTION_OID, True)
    assert value == tlv(0xA3, tlv(0x04, b"provisiondMode") + tlv(0x04, b"add"))
    _, _, value = assertion_control("(&(a=b)(!(c=*)))")
    assert value == tlv(0xA0, tlv(0xA3, b"\x04\x01a\x04\x01b") + tlv(0xA2, b"\x87\x01c"))


@pytest.mark.parametrize("text", ["(a=b", "a=b", "(a=b)(c=d)", ""])
def test_assertion_control_rejects_bad_filters(text: str) -> None:
    with pytest.raises(ValueError):
        assertion_control(text)


def test_assertion_control_is_enforced_by_slapd(slapd: Slapd, password_file: Path) -> None:
    # timeout must be an int: ldap3 packs the receive timeout with struct 'LL' on Linux.
    settings = LdapSettings(
        uri=slapd.uri, bind_dn=slapd.root_dn, bind_password_file=str(password_file), timeout=5
    )
    connection = ConnectionFactory(settings).open()
    dn = "cn=claim,ou=demo,dc=example,dc=org"
    assert connection.add(
        dn,
        ["provisiondDemoItem", "provisiondProvisioning"],
        {"provisiondMode": "modify", "provisiondState": "0", "provisiondExecutionDate": "0"},
    ), connection.result
    claim = {"provisiondMode": [(ldap3.MODIFY_REPLACE, ["adding"])]}

    assert not connection.modify(dn, claim, controls=[assertion_control("(provisiondMode=add)")])
    assert connection.result["result"] == 122

    assert connection.modify(dn, {"provisiondMode": [(ldap3.MODIFY_REPLACE, ["add"])]})
    assert connection.modify(dn, claim, controls=[assertion_control("(provisiondMode=add)")])
    connection.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["provisiondMode"])
    assert connection.response[0]["attributes"]["provisiondMode"] == ["adding"]
    connection.unbind()


@pytest.mark.parametrize("terms", [
    (("provisiondMode", "add"), ("provisiondState", "0")),
    (("sstProvisioningMode", "modify"), ("sstProvisioningState", "0"),
     ("entryCSN", "20261204183357.123456Z#000000#000#000000")),
    (("description", "x" * 200), ("cn", "y" * 70000)),  # long-form lengths
])
def test_the_hand_encoded_claim_assertion_is_what_ldap3_encodes(
        terms: tuple[tuple[str, str], ...]) -> None:
    text = "(&" + "".join(f"({name}={value})" for name, value in terms) + ")"
    assert equality_assertion(terms) == assertion_control(text)


@pytest.mark.parametrize("value", [
    tlv(0x30, b"\x0a\x01\x02" + tlv(0x04, U1.bytes) + tlv(0x04, COOKIE)),
    tlv(0x30, b"\x0a\x01\x00" + tlv(0x04, U1.bytes)),
    tlv(0x30, b"\x0a\x01\x03" + tlv(0x04, U1.bytes) + tlv(0x04, b"")),  # an empty cookie
    element(0x30, b"\x0a\x01\x01" + tlv(0x04, U1.bytes)  # long-form lengths
            + element(0x04, b"rid=001,csn=" + b"9" * 200)),
])
def test_the_sync_state_is_read_as_pyasn1_reads_it(value: bytes) -> None:
    from pyasn1.codec.ber import decoder
    from pyasn1.type import namedtype, univ

    class SyncStateValue(univ.Sequence):  # RFC 4533, section 2.2
        componentType = namedtype.NamedTypes(
            namedtype.NamedType("state", univ.Enumerated()),
            namedtype.NamedType("entryUUID", univ.OctetString()),
            namedtype.OptionalNamedType("cookie", univ.OctetString()),
        )

    reference, rest = decoder.decode(value, asn1Spec=SyncStateValue())
    cookie = reference["cookie"]
    expected = SyncState(("present", "add", "modify", "delete")[int(reference["state"])],
                         str(uuid.UUID(bytes=bytes(reference["entryUUID"]))),
                         bytes(cookie).decode() if cookie.isValue and bytes(cookie) else None)
    assert rest == b"" and decode_sync_state(value) == expected


@pytest.mark.parametrize("value", [
    b"\x30\x80\x00\x00",  # an indefinite length
    tlv(0x31, b"\x0a\x01\x01" + tlv(0x04, U1.bytes)),  # a SET
    tlv(0x30, b"\x02\x01\x01" + tlv(0x04, U1.bytes)),  # an INTEGER state
    tlv(0x30, b"\x0a\x01\x01" + tlv(0x04, U1.bytes) + tlv(0x04, b"c") + tlv(0x04, b"d")),
    b"\x30\x85\x00\x00\x00\x00\x05",  # a length of five bytes
    tlv(0x30, b"\x0a\x05\x01"),  # the state longer than its sequence
])
def test_malformed_sync_states_are_refused(value: bytes) -> None:
    with pytest.raises(ControlError):
        decode_sync_state(value)
