"""Fixtures for the operator commands: a configured demo service against a private slapd."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ldap3
import pytest

from provisiond.testing.slapd import Slapd
from tests.support import connect, demo_service, write_config


@dataclass
class Site:
    slapd: Slapd
    conn: ldap3.Connection
    config: Path
    root: Path
    directory: Path


@pytest.fixture
def site(slapd: Slapd, tmp_path: Path) -> Site:
    root = tmp_path / "root"
    root.mkdir()
    directory = tmp_path / "cfg"
    config = write_config(directory, slapd, demo_service(root))
    return Site(slapd=slapd, conn=connect(slapd), config=config, root=root, directory=directory)
