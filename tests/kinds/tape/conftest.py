"""Fixtures for the tape tests: a private slapd with the libraries subtree, a site."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisiond.testing.slapd import Slapd
from tests.kinds.tape.support import OUS, Site
from tests.support import connect


@pytest.fixture
def tape_slapd(slapd: Slapd) -> Slapd:
    """The shared private slapd with ou=libraries,ou=tape,ou=storage,dc=example,dc=org."""
    conn = connect(slapd)
    for entry in OUS.strip().split("\n\n"):
        dn = entry.splitlines()[0].removeprefix("dn: ")
        assert conn.add(dn, ["organizationalUnit"], {"ou": dn.split(",")[0][3:]}), conn.result
    conn.unbind()
    return slapd


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path / "site").create()
