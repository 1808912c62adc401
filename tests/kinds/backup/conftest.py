"""Fixtures for the backup-account tests: a private slapd with the stoney compatibility schema."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisiond.testing.slapd import Slapd, destroy, start_private_slapd
from tests.conftest import require_slapd
from tests.kinds.backup.support import INDEXES, OUS, ROOT_DN, SCHEMA_FILES, SUFFIX, Site


@pytest.fixture
def stoney() -> Iterator[Slapd]:
    """A running slapd for dc=stoney-cloud,dc=org with the accounts subtree."""
    require_slapd()
    directory = Path(tempfile.mkdtemp(prefix="pvd-", dir="/tmp"))  # short: ldapi path limit
    server = start_private_slapd(directory, extra_ldif=OUS, suffix=SUFFIX, root_dn=ROOT_DN,
                                 schema_files=SCHEMA_FILES, indexes=INDEXES)
    yield server
    destroy(server)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path / "site").create()
