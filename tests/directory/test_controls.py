"""RFC 4533 / RFC 4528 controls: fixed byte vectors, the sync controls read as pyasn1 reads RFC
4533's ASN.1 (the reference their hand-written decoders are compared with), and the Assertion
control enforced by slapd."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import ldap3
import pytest
from pyasn1.codec.ber import decoder
from pyasn1.type import constraint, namedtype, tag, univ

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


# -- Sync Info and Sync Done: read as pyasn1 reads RFC 4533's ASN.1 -----------------------------


class _Cookie(univ.OctetString):
    pass


class _SyncDoneValue(univ.Sequence):  # RFC 4533, section 2.4
    componentType = namedtype.NamedTypes(
        namedtype.OptionalNamedType("cookie", _Cookie()),
        namedtype.DefaultedNamedType("refreshDeletes", univ.Boolean(False)),
    )


class _RefreshPhase(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.OptionalNamedType("cookie", _Cookie()),
        namedtype.DefaultedNamedType("refreshDone", univ.Boolean(True)),
    )


class _SyncIdSet(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.OptionalNamedType("cookie", _Cookie()),
        namedtype.DefaultedNamedType("refreshDeletes", univ.Boolean(False)),
        namedtype.NamedType("syncUUIDs", univ.SetOf(
            componentType=univ.OctetString().subtype(
                subtypeSpec=constraint.ValueSizeConstraint(16, 16)))),
    )


def _implicit(number: int, spec: univ.Asn1Item) -> univ.Asn1Item:
    form = tag.tagFormatSimple if number == 0 else tag.tagFormatConstructed
    return spec.subtype(implicitTag=tag.Tag(tag.tagClassContext, form, number))


class _SyncInfoValue(univ.Choice):  # RFC 4533, section 2.5 (the module has IMPLICIT TAGS)
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("newcookie", _implicit(0, _Cookie())),
        namedtype.NamedType("refreshDelete", _implicit(1, _RefreshPhase())),
        namedtype.NamedType("refreshPresent", _implicit(2, _RefreshPhase())),
        namedtype.NamedType("syncIdSet", _implicit(3, _SyncIdSet())),
    )


def _reference(value: bytes, spec: univ.Asn1Item) -> univ.Asn1Item:
    decoded, rest = decoder.decode(value, asn1Spec=spec)
    assert rest == b"", "trailing bytes"
    return decoded


def _text(cookie: univ.Asn1Item) -> str | None:
    raw = bytes(cookie) if cookie.isValue else b""
    return raw.decode("utf-8", errors="replace") if raw else None


def pyasn1_sync_done(value: bytes) -> SyncDone:
    decoded = _reference(value, _SyncDoneValue())
    return SyncDone(_text(decoded["cookie"]), bool(decoded["refreshDeletes"]))


def pyasn1_sync_info(value: bytes) -> SyncInfo:
    decoded = _reference(value, _SyncInfoValue())
    kind, inner = decoded.getName(), decoded.getComponent()
    if kind == "newcookie":
        return SyncInfo(kind, _text(inner))
    if kind == "syncIdSet":
        return SyncInfo(kind, _text(inner["cookie"]), refresh_deletes=bool(inner["refreshDeletes"]),
                        uuids=tuple(str(uuid.UUID(bytes=bytes(u))) for u in inner["syncUUIDs"]))
    return SyncInfo(kind, _text(inner["cookie"]), refresh_done=bool(inner["refreshDone"]))


COOKIES = {"absent": None, "empty": b"", "cookie": COOKIE,
           "long": COOKIE * 5}  # over 127 bytes: a long-form length
FLAGS = {"default": b"", "true": b"\x01\x01\xff", "false": b"\x01\x01\x00", "nonzero": b"\x01\x01\x05"}


def _uuids(count: int) -> bytes:
    return element(0x31, b"".join(element(0x04, uuid.UUID(int=n * 0x9E3779B97F4A7C15).bytes)
                                  for n in range(count)))


def _sequences() -> Iterator[tuple[str, bytes]]:
    """`cookie OPTIONAL, <flag> BOOLEAN DEFAULT ...`, how every sequence here begins."""
    for (cname, cookie), (fname, flag) in itertools.product(COOKIES.items(), FLAGS.items()):
        yield f"{cname}-{fname}", (b"" if cookie is None else element(0x04, cookie)) + flag


def _sync_infos() -> dict[str, bytes]:
    values = {f"newcookie-{name}": element(0x80, cookie)
              for name, cookie in COOKIES.items() if cookie is not None}
    for name, start in _sequences():
        values[f"refreshDelete-{name}"] = element(0xA1, start)
        values[f"refreshPresent-{name}"] = element(0xA2, start)
        for count in (0, 1, 2, 7, 8, 50):  # 8 UUIDs make a set over 127 bytes
            values[f"syncIdSet-{name}-{count}"] = element(0xA3, start + _uuids(count))
    return values


SYNC_INFOS = _sync_infos()
SYNC_DONES = {name: element(0x30, start) for name, start in _sequences()}


@pytest.mark.parametrize("value", SYNC_INFOS.values(), ids=SYNC_INFOS.keys())
def test_the_sync_info_is_read_as_pyasn1_reads_it(value: bytes) -> None:
    assert decode_sync_info(value) == pyasn1_sync_info(value)


@pytest.mark.parametrize("value", SYNC_DONES.values(), ids=SYNC_DONES.keys())
def test_the_sync_done_is_read_as_pyasn1_reads_it(value: bytes) -> None:
    assert decode_sync_done(value) == pyasn1_sync_done(value)


MALFORMED_INFOS = [
    b"", b"\x80", b"\x80\x05abc",  # truncated
    tlv(0x80, b"c") + b"\x00",  # trailing bytes
    b"\xa4\x00", b"\x84\x00", b"\x30\x00", b"\x04\x00", b"\x00\x00",  # no such choice
    b"\x81\x00",  # refreshDelete not constructed
    tlv(0xA1, tlv(0x04, b"c") + tlv(0x04, b"d")),  # two cookies
    tlv(0xA2, b"\x01\x01\xff" + tlv(0x04, b"c")),  # the flag before the cookie
    tlv(0xA1, b"\x01\x01\xff\x01\x01\x00"),  # two flags
    tlv(0xA2, b"\x02\x01\x00"), tlv(0xA2, b"\x05\x00"),  # not a cookie or a BOOLEAN
    tlv(0xA1, tlv(0x80, b"c")),  # a context-tagged cookie
    tlv(0xA3, tlv(0x04, b"c")),  # syncIdSet without syncUUIDs
    tlv(0xA3, b"\x31\x00\x01\x01\xff"),  # syncUUIDs before the flag
    tlv(0xA3, b"\x31\x00\x31\x00"), tlv(0xA3, b"\x30\x00"), tlv(0xA3, b"\x11\x00"),
    tlv(0xA3, tlv(0x31, tlv(0x04, U1.bytes[:15]))),  # a syncUUID of 15 bytes
    tlv(0xA3, tlv(0x31, tlv(0x04, U1.bytes + b"\x00"))),  # of 17 bytes
    tlv(0xA3, tlv(0x31, tlv(0x80, U1.bytes))), tlv(0xA3, tlv(0x31, tlv(0x04, U1.bytes) + b"\x04")),
    tlv(0xA3, tlv(0x31, tlv(0x04, U1.bytes))[:-1]),  # the set longer than its sequence
    b"\xa1\x80\x00\x00",  # indefinite length: pyasn1 reads an empty CHOICE and its caller failed
]
MALFORMED_DONES = [
    b"", b"\x30", b"\x30\x03\x04\x01", b"\x30\x00\x00", b"\x31\x00", b"\x10\x00", b"\xa0\x00",
    tlv(0x30, b"\x01\x01\xff" + tlv(0x04, b"c")), tlv(0x30, b"\x05\x00"),
    tlv(0x30, tlv(0x04, b"c") + b"\x01\x01\xff\x05\x00"), tlv(0x30, b"\x81\x01\xff"),
]


Decoder = Callable[[bytes], object]
INFO: tuple[Decoder, Decoder] = (decode_sync_info, pyasn1_sync_info)
DONE: tuple[Decoder, Decoder] = (decode_sync_done, pyasn1_sync_done)


@pytest.mark.parametrize(("decode", "reference", "value"), [
    *((*INFO, value) for value in MALFORMED_INFOS), *((*DONE, value) for value in MALFORMED_DONES),
])
def test_malformed_sync_infos_and_dones_are_refused_as_pyasn1_refuses_them(
        decode: Decoder, reference: Decoder, value: bytes) -> None:
    with pytest.raises(Exception):  # noqa: B017 - pyasn1 has several ways to fail
        reference(value)
    with pytest.raises(ControlError):
        decode(value)


@pytest.mark.parametrize(("decode", "reference", "value"), [
    (*DONE, b"\x30\x80\x00\x00"),  # an indefinite length (RFC 4511, section 5.1)
    (*INFO, b"\xa0\x03\x04\x01c"),  # a constructed OCTET STRING (idem)
    (*INFO, tlv(0xA1, b"\x24\x03\x04\x01c")),
    (*INFO, tlv(0xA3, tlv(0x31, tlv(0x24, tlv(0x04, U1.bytes))))),
    (*DONE, b"\x30\x02\x01\x00"), (*INFO, b"\xa1\x04\x01\x02\x00\xff"),  # BOOLEANs not one byte
    (*INFO, b"\x9f\x00\x00"),  # [0] in the high-tag-number form, with a zero
    (*INFO, b"\x80\x85\x00\x00\x00\x00\x01c"),  # a length in five bytes
])
def test_what_ldap_forbids_is_refused_though_pyasn1_reads_it(
        decode: Decoder, reference: Decoder, value: bytes) -> None:
    """X.690 and RFC 4511 forbid these; pyasn1's BER decoder reads them. (The Sync State
    decoder refuses them too: ber.read.)"""
    reference(value)
    with pytest.raises(ControlError):
        decode(value)


def _mutants(value: bytes) -> Iterator[bytes]:
    """Every prefix, and every byte replaced by one of the bytes that matter in BER."""
    yield from (value[:end] for end in range(len(value)))
    for at, byte in itertools.product(range(len(value)), b"\x00\x01\x04\x05\x0f\x10\x11\x30"
                                      b"\x31\x7f\x80\x81\x82\x9f\xa0\xa1\xa2\xa3\xa4\xff"):
        yield value[:at] + bytes([byte]) + value[at + 1:]


@pytest.mark.parametrize(("decode", "reference", "value"), [
    (*INFO, tlv(0x80, b"csn=1")),
    *((*INFO, SYNC_INFOS[name]) for name in (
        "refreshPresent-cookie-false", "syncIdSet-empty-true-1", "syncIdSet-absent-default-2")),
    (*DONE, tlv(0x30, tlv(0x04, b"csn") + b"\x01\x01\xff")),
])
def test_damaged_values_are_read_as_pyasn1_reads_them_or_refused(
        decode: Decoder, reference: Decoder, value: bytes) -> None:
    """What the decoders accept, pyasn1 reads the same; what pyasn1 refuses, they refuse."""
    for mutant in _mutants(value):
        try:
            expected: object = reference(mutant)
        except Exception:  # pyasn1 has several ways to fail
            expected = ControlError
        try:
            actual: object = decode(mutant)
        except ControlError:
            actual = ControlError
        assert actual in (expected, ControlError), mutant.hex()
