"""Shared fixtures: a real, private slapd per test (about 0.1 s to start)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisiond.testing.slapd import Slapd, slapd_available, start_private_slapd

REPO = Path(__file__).resolve().parents[1]

DEMO_OU = (
    "dn: ou=demo,dc=example,dc=org\nobjectClass: organizationalUnit\nou: demo\n"
)


def require_slapd() -> None:
    if not slapd_available():
        pytest.skip("Debian's slapd is not installed (the README's test command installs it)")


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (loop devices, mounts, chown); CI runs as root")


@pytest.fixture
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """A running private slapd with the project schema and `ou=demo,dc=example,dc=org`."""
    require_slapd()
    # Short path: the ldapi socket path is limited to 107 bytes.
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="pvd-", dir="/tmp"))
    server = start_private_slapd(directory, extra_ldif=DEMO_OU)
    yield server
    server.stop()
    import shutil

    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def password_file(tmp_path: Path, slapd: Slapd) -> Path:
    return slapd.write_password_file(tmp_path / "bind.secret")


@pytest.fixture(autouse=True)
def _reset_provisiond_logger() -> Iterator[None]:
    """setup_logging() detaches the `provisiond` logger from the root (so nothing bypasses
    redaction); put it back after each test so caplog works in the next one."""
    yield
    import logging

    logger = logging.getLogger("provisiond")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.propagate = True
    logger.setLevel(logging.NOTSET)
