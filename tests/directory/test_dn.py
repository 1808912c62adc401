"""DNs exactly as the server sent them (issue 8.4): slapd accepts a DN whose value is not valid
UTF-8 (`cn=\\ED\\A0\\80`); ldap3 decodes it lossily (latin-1), so reads and claims named another
DN. The bytes are kept instead, as an RFC 4514 string with the invalid ones hex-escaped."""

from __future__ import annotations

import subprocess
from pathlib import Path

import ldap3
import pytest
from ldap3.utils.dn import parse_dn

from provisiond.config import load_config
from provisiond.core.engine import Engine
from provisiond.directory.access import Directory
from provisiond.directory.connection import ConnectionFactory
from provisiond.directory.decode import dn_text, response_dn
from provisiond.testing.slapd import Slapd
from tests.directory.test_stream import OU, Recorder, stream
from tests.support import demo_service, write_config

BAD_DN = rf"cn=\ED\A0\80,{OU}"  # an encoded UTF-16 surrogate: not valid UTF-8


def test_valid_utf8_is_decoded_as_it_is() -> None:
    assert dn_text("cn=Zoë,ou=x".encode()) == "cn=Zoë,ou=x"
    assert dn_text(rb"cn=a\2Cb,ou=x") == r"cn=a\2Cb,ou=x"  # escapes stay as sent


def test_invalid_bytes_become_hex_escapes() -> None:
    assert dn_text(b"cn=\xed\xa0\x80,ou=x") == r"cn=\ED\A0\80,ou=x"
    assert dn_text(b"cn=a\xffb\xc3\xa9,ou=x") == r"cn=a\FFbé,ou=x"  # valid parts stay text
    assert dn_text(b"cn=\xc3,ou=x") == r"cn=\C3,ou=x"  # a truncated sequence
    assert parse_dn(dn_text(b"cn=\xed\xa0\x80,ou=x"))[0][:2] == ("cn", r"\ED\A0\80")


def test_response_dn_prefers_the_raw_bytes() -> None:
    assert response_dn({"dn": "cn=í\xa0\x80,ou=x", "raw_dn": b"cn=\xed\xa0\x80,ou=x"}) \
        == r"cn=\ED\A0\80,ou=x"
    assert response_dn({"dn": "cn=a,ou=x", "raw_dn": "cn=a,ou=x"}) == "cn=a,ou=x"
    assert response_dn({"dn": "cn=a,ou=x"}) == "cn=a,ou=x"
    assert response_dn({}) == ""


@pytest.fixture
def bad_entry(writer: ldap3.Connection, slapd: Slapd) -> str:
    """An entry whose DN holds bytes that are not UTF-8, checked with ldapsearch (base64)."""
    ok = writer.add(BAD_DN, ["provisiondDemoItem", "provisiondProvisioning"], {
        "provisiondMode": "add", "provisiondState": "0", "provisiondExecutionDate": "0",
        "provisiondSize": "10M"})
    assert ok, writer.result
    shown = subprocess.run(
        ["/usr/bin/ldapsearch", "-x", "-LLL", "-o", "ldif-wrap=no", "-H", slapd.uri, "-b", OU,
         "(cn=*)", "dn"], capture_output=True, text=True, check=True).stdout
    assert "dn:: Y2497aCALG91PWRlbW8sZGM9ZXhhbXBsZSxkYz1vcmc=" in shown  # base64 of the bytes
    return BAD_DN


def test_a_dn_from_the_stream_reaches_its_entry(factory: ConnectionFactory, bad_entry: str
                                                ) -> None:
    recorder = Recorder()
    stream(factory, "refresh", recorder).run_once()
    (change,) = recorder.changes
    assert change.dn == bad_entry
    directory = Directory(factory)
    found = directory.read(change.dn, ["provisiondMode"])
    assert found is not None and found.uuid == change.uuid and found.dn == bad_entry
    result = directory.modify(change.dn, {"provisiondState": [(ldap3.MODIFY_REPLACE, ["1"])]})
    assert result.ok, result
    (by_uuid,) = directory.search(OU, f"(entryUUID={change.uuid})", ["cn"])
    assert by_uuid.dn == bad_entry


def test_once_fails_such_an_entry_visibly(slapd: Slapd, tmp_path: Path, bad_entry: str,
                                          writer: ldap3.Connection) -> None:
    """Never silently ignored: the demo service rejects its name with ReturnValue 2."""
    root = tmp_path / "root"
    root.mkdir()
    config = write_config(tmp_path / "cfg", slapd, demo_service(root))
    assert Engine(load_config(config)).once() == 1  # one entry failed
    writer.search(bad_entry, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["*"])
    assert writer.result["result"] == 0, writer.result
    entry = {name: values[0].decode(errors="replace")
             for name, values in writer.response[0]["raw_attributes"].items()}
    assert entry["provisiondMode"] == "adding" and entry["provisiondReturnValue"] == "2"
    assert entry["provisiondMessage"].startswith("validate: ")


def test_dn_keys_are_cached_and_failures_are_not() -> None:
    """dn_key is asked for the same DNs at every render of a file of all entries: the second
    answer comes from the cache, and something that is not a DN fails every time."""
    from provisiond.directory.decode import dn_key

    dn = "cn=Cached Entry,ou=Cache,dc=example,dc=org"
    first = dn_key(dn)
    hits = dn_key.cache_info().hits
    assert dn_key(dn) == first == (("cn", "cached entry"), ("ou", "cache"),
                                    ("dc", "example"), ("dc", "org"))
    assert dn_key.cache_info().hits == hits + 1
    for _ in range(2):
        with pytest.raises(ValueError):
            dn_key("not a dn")
