"""Fixtures for the disk-repository tests: a volume group on a loop device, stand-in device
nodes, and a slapd holding ou=disks,ou=storage,dc=example,dc=org (see support.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisiond.testing.slapd import Slapd, destroy, start_private_slapd
from tests.conftest import require_root, require_slapd
from tests.kinds.disk.support import OUS, Lvm, StandIns, short_tempdir, unmount_below


def require_lvm() -> None:
    require_root()
    if shutil.which("lvm", path="/usr/sbin:/sbin") is None:
        pytest.skip("Debian's lvm2 is not installed (scripts/dev/test installs it)")


@pytest.fixture
def lvm(tmp_path: Path) -> Iterator[Lvm]:
    """A fresh VG `pvdtest` (4 GiB sparse PV), real LVM metadata, activation off."""
    require_lvm()
    group = Lvm(tmp_path / "lvm").start()
    yield group
    group.stop()


@pytest.fixture
def stand_ins(tmp_path: Path, lvm: Lvm) -> Iterator[StandIns]:
    devices = StandIns(tmp_path / "dev", lvm.loop)
    devices.device_dir.mkdir()
    yield devices
    unmount_below(tmp_path)  # before the loops go: a test that failed may leave mounts
    devices.stop()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    """Where the kind mounts filesystems (site/mnt) and keeps its fstab (site/fstab)."""
    path = tmp_path / "site"
    path.mkdir()
    yield path
    unmount_below(path)


@pytest.fixture
def storage() -> Iterator[Slapd]:
    """A running slapd with the project schema and the storage OUs."""
    require_slapd()
    server = start_private_slapd(short_tempdir(), extra_ldif=OUS)
    yield server
    destroy(server)
