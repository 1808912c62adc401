"""Reads outside the stream: the one paged reader, against a real slapd."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from provisiond.directory import access
from provisiond.directory.access import Directory, IncompleteResult
from provisiond.directory.connection import ConnectionFactory
from provisiond.model.settings import LdapSettings
from provisiond.testing.slapd import Slapd
from tests.support import add_identity, add_item, connect

LDAPMODIFY = "/usr/bin/ldapmodify"


def limit_results(slapd: Slapd, dn: str, limit: int) -> None:
    """A server-side cap on what `dn` may read, paged or not (olcLimits, set over ldapi)."""
    rule = f'dn.exact="{dn}" size.soft={limit} size.hard={limit} size.prtotal={limit}'
    ldif = ("dn: olcDatabase={1}mdb,cn=config\nchangetype: modify\n"
            f"replace: olcLimits\nolcLimits: {rule}\n")
    subprocess.run([LDAPMODIFY, "-Q", "-Y", "EXTERNAL", "-H", slapd.ldapi_uri], input=ldif,
                   text=True, check=True, capture_output=True)


def directory_as(slapd: Slapd, ldap: dict[str, str]) -> Directory:
    return Directory(ConnectionFactory(LdapSettings(
        uri=slapd.uri, bind_dn=ldap["bind_dn"], bind_password_file=ldap["bind_password_file"])))


def test_a_search_reads_every_page(slapd: Slapd, monkeypatch: pytest.MonkeyPatch,
                                   tmp_path: Path) -> None:
    conn = connect(slapd)
    for number in range(7):
        add_item(conn, f"item{number}")
    monkeypatch.setattr(access, "PAGE_SIZE", 3)
    ldap = add_identity(conn, slapd, "reader", tmp_path)
    found = directory_as(slapd, ldap).search("ou=demo,dc=example,dc=org",
                                             "(objectClass=provisiondDemoItem)", ["cn"])
    assert sorted(e.attributes["cn"][0] for e in found) == [f"item{n}" for n in range(7)]


def test_a_result_the_server_cuts_short_is_an_error(slapd: Slapd, tmp_path: Path) -> None:
    conn = connect(slapd)
    for number in range(5):
        add_item(conn, f"item{number}")
    ldap = add_identity(conn, slapd, "limited", tmp_path)
    limit_results(slapd, ldap["bind_dn"], 2)
    with pytest.raises(IncompleteResult, match="cut short"):
        directory_as(slapd, ldap).search("ou=demo,dc=example,dc=org",
                                         "(objectClass=provisiondDemoItem)", ["cn"])
