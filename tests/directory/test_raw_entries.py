"""Search entries decoded to raw values only (directory/raw_entries.py): everything provisiond
reads from them is what ldap3's own decoder gives, on a sync search and a plain one."""

from __future__ import annotations

import ldap3
import pytest

from provisiond.directory.connection import ConnectionFactory
from provisiond.directory.controls import sync_request_control
from provisiond.directory.raw_entries import raw_entries_only
from provisiond.testing.slapd import Slapd

BASE_RDN = "ou=rawdecode"


@pytest.fixture
def base(slapd: Slapd, writer: ldap3.Connection) -> str:
    base = f"{BASE_RDN},{slapd.suffix}"
    writer.add(base, ["organizationalUnit"], {"ou": "rawdecode"})
    entries = {
        "cn=plain": {"sn": "x"},
        "cn=multi": {"sn": ["one", "two", "three"], "description": "d" * 300},
        "cn=ütf ☃": {"sn": "välue ☃", "description": ["a\nb", " leading space"]},
        r"cn=comma\, plus\+ quote\"": {"sn": "esc"},
        "cn=binary": {"sn": "b", "userPassword": b"\x00\xff\xfe binary"},
    }
    for rdn, attributes in entries.items():
        assert writer.add(f"{rdn},{base}", ["person"], {"cn": rdn.split("=", 1)[1]
                                                        .replace("\\", ""), **attributes}), \
            writer.result
    return base


def comparable(response: list[dict]) -> list[dict]:
    """What provisiond reads of each message, with ldap3's case-insensitive dicts as dicts."""
    return [{key: (dict(value) if key in ("raw_attributes", "controls") else value)
             for key, value in message.items() if key != "attributes"}
            for message in response]


@pytest.mark.parametrize("sync", [False, True])
def test_entries_read_as_ldap3_reads_them(factory: ConnectionFactory, base: str,
                                          sync: bool) -> None:
    controls = [sync_request_control("refreshOnly", None)] if sync else None
    answers = []
    for raw in (False, True):
        connection = factory.open()
        if raw:
            raw_entries_only(connection)
        try:
            connection.search(base, "(objectClass=*)", search_scope=ldap3.SUBTREE,
                              dereference_aliases=ldap3.DEREF_NEVER,
                              attributes=["*", "entryUUID", "entryCSN"], controls=controls)
            answers.append((list(connection.response or []), dict(connection.result or {})))
        finally:
            connection.unbind()
    (plain, plain_result), (raw, raw_result) = answers
    assert len(plain) == 6 and comparable(raw) == comparable(plain)
    assert all(message["attributes"] == {} for message in raw)  # what is no longer built
    assert raw_result == plain_result
    if sync:  # each entry's Sync State control, as ldap3 decodes it
        assert all("1.3.6.1.4.1.4203.1.9.1.2" in message["controls"] for message in raw)


@pytest.mark.parametrize("raw", [b"cn=plain", "cn=ütf ☃".encode(), b"", bytearray(b"ou=x"),
                                 b"cn=\xff latin-1"])  # not UTF-8: ldap3's other encodings
def test_names_and_dns_decode_as_ldap3_decodes_them(raw: bytes) -> None:
    from ldap3.utils.conv import to_unicode

    from provisiond.directory.raw_entries import _text

    assert _text(raw) == to_unicode(raw, from_server=True)

