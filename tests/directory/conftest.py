"""Fixtures of the directory tests: a connection factory for the private slapd, a writer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import ldap3
import pytest

from provisiond.directory.connection import ConnectionFactory
from provisiond.model.settings import LdapSettings
from provisiond.testing.slapd import Slapd


@pytest.fixture
def factory(slapd: Slapd, password_file: Path) -> ConnectionFactory:
    # timeout must be an int: ldap3 packs the receive timeout with struct 'LL' on Linux.
    return ConnectionFactory(
        LdapSettings(
            uri=slapd.uri, bind_dn=slapd.root_dn, bind_password_file=str(password_file), timeout=5
        )
    )


@pytest.fixture
def writer(factory: ConnectionFactory) -> Iterator[ldap3.Connection]:
    connection = factory.open()
    yield connection
    if not connection.closed:
        connection.unbind()
