"""Fixtures for the tape tests: a private slapd with the libraries subtree, a site."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisiond.testing.slapd import Slapd, destroy, start_private_slapd
from tests.conftest import require_slapd
from tests.kinds.tape.support import OUS, Site


@pytest.fixture
def tape_slapd() -> Iterator[Slapd]:
    """A running slapd for dc=example,dc=org with ou=libraries,ou=tape,ou=storage."""
    require_slapd()
    directory = Path(tempfile.mkdtemp(prefix="pvd-", dir="/tmp"))  # short: ldapi path limit
    server = start_private_slapd(directory, extra_ldif=OUS)
    yield server
    destroy(server)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path / "site").create()
