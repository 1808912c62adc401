"""tests/kinds/disk/fake_zfs is faithful where zfs-fuse can say: the same command against the
fake and the real `zfs` (a zfs-fuse pool of the same name) gives the same stdout, the same
first stderr line and the same exit status. What only zvols do (zfs-fuse has none) follows
OpenZFS 2.1 and is covered in test_zfs_zvols.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.kinds.disk.zfs_fuse import ZFS, Pool, install_fake, zpool

__all__ = ["zpool"]  # the fixture
pytestmark = pytest.mark.slow  # a zfs-fuse pool

CASES = [
    ("get", "-Hp", "-o", "property,value",
     "type,refquota,volsize,volblocksize,mountpoint,mounted,canmount,provisiond:uuid", "{p}"),
    ("get", "-Hp", "-o", "name,property,value,source", "provisiond:uuid,type", "{p}"),
    ("get", "-Hp", "-r", "-d", "1", "-o", "name,property,value,source",
     "type,volsize,refquota,provisiond:uuid", "{p}"),
    ("get", "-H", "-o", "property,value", "refquota", "{p}"),
    ("get", "-Hp", "-o", "value", "type", "{p}", "{p}/missing"),
    ("get", "-Hp", "-o", "value", "type", "{p}/missing"),
    ("get", "-Hp", "-o", "value", "nosuchproperty", "{p}"),
    ("set", "volsize=1048576", "{p}/missing"),
    ("set", "provisiond:uuid=x", "{p}/missing"),
    ("rename", "{p}/missing", "{p}/other"),
    ("destroy", "{p}/missing"),
    ("destroy", "-r", "{p}/missing"),
    ("create", "-V", "1048576", "nosuchpool/v"),
    ("bogus",),
    (),
]


@pytest.mark.parametrize("case", CASES, ids=[" ".join(c) or "no-args" for c in CASES])
def test_the_fake_answers_as_zfs_fuse_does(zpool: Pool, tmp_path: Path,
                                           case: tuple[str, ...]) -> None:
    fake = install_fake(tmp_path / "fake", zpool.name)
    argv = [item.replace("{p}", zpool.name) for item in case]
    real = subprocess.run([ZFS, *argv], capture_output=True, text=True, check=False,
                          env={"LC_ALL": "C"})
    faked = fake.run(*argv)
    assert (faked.returncode, faked.stdout) == (real.returncode, real.stdout)
    first = (real.stderr.splitlines() or [""])[0]
    assert (faked.stderr.splitlines() or [""])[0] == first
