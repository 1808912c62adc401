"""The disk-repository kind end to end on ZFS: a real slapd, the engine (in-process, and the
daemon as a process for the SIGKILL test), the shipped hooks; datasets on a REAL zfs-fuse pool
(zfs_fuse.py), zvols against tests/kinds/disk/fake_zfs (zfs-fuse cannot make volumes)."""

from __future__ import annotations

import errno
import signal
from pathlib import Path
from typing import Any

import pytest

from provisiond.testing.slapd import Slapd
from tests.kinds.disk.support import DISKS, MESSAGE, RETURN, add_disk, outcome
from tests.kinds.disk.test_zfs_datasets import write
from tests.kinds.disk.zfs_fuse import ZFS, Pool, install_fake, prop, zfs, zpool
from tests.support import (
    connect,
    request,
    run_cli,
    running,
    start_daemon,
    stop_daemon,
    wait_for,
    write_config,
)

__all__ = ["zpool"]  # the fixture
pytestmark = pytest.mark.slow
MIB = 1 << 20


def config(tmp_path: Path, slapd: Slapd, pools: list[str], **vars_: Any) -> Path:
    disk = {"kind": "disk-repository",
            "vars": {"base": DISKS, "pools": [f"{pool}=zfs" for pool in pools],
                     "device_wait": 2, **vars_}}
    return write_config(tmp_path / "cfg", slapd, {"disk-repository": disk},
                        retry={"limit": 3, "initial": 0.2, "maximum": 1})


def dataset_config(tmp_path: Path, slapd: Slapd, pool: Pool, **vars_: Any) -> Path:
    return config(tmp_path, slapd, [pool.name], mount_root=str(pool.mount_root), zfs=ZFS,
                  **vars_)


def test_dataset_add_modify_delete_keep(storage: Slapd, zpool: Pool, tmp_path: Path) -> None:
    conn = connect(storage)
    mount = zpool.mount_root / "files1"
    dataset = zpool.dataset("files1")
    path = dataset_config(tmp_path, storage, zpool)
    with running(path):
        dn = add_disk(conn, "files1", pool=zpool.name, size="8M", volume_type="filesystem",
                      backend="zfs")
        entry = outcome(conn, dn, "add")
        assert entry["provisiondMode"] == "added" and entry[RETURN] == "0", entry
        assert entry["provisiondPath"] == str(mount)
        assert entry["provisiondAllocated"] == str(8 * MIB)
        assert prop(dataset, "provisiond:uuid") == entry["entryUUID"]
        with pytest.raises(OSError) as full:  # the quota is ZFS's own, enforced
            write(mount / "data", 12 * MIB)
        assert full.value.errno == errno.EDQUOT

        request(conn, dn, "modify", provisiondSize="32M")
        entry = outcome(conn, dn, "modify")
        assert entry["provisiondMode"] == "modified", entry
        assert entry["provisiondAllocated"] == str(32 * MIB) == prop(dataset, "refquota")
        write(mount / "data", 12 * MIB)  # fits now

        request(conn, dn, "modify", provisiondSize="16M")
        entry = outcome(conn, dn, "modify")
        assert entry[RETURN] == "23" and "allow_shrink is false" in entry[MESSAGE], entry
        assert prop(dataset, "refquota") == str(32 * MIB)

        request(conn, dn, "modify", provisiondSize="32M", provisiondVolumeType="block")
        entry = outcome(conn, dn, "modify")
        assert entry[RETURN] == "27" and "type cannot change" in entry[MESSAGE], entry

        request(conn, dn, "delete", provisiondVolumeType="filesystem",
                provisiondIsActive="FALSE")
        entry = outcome(conn, dn, "delete")
        assert entry["provisiondMode"] == "deleted", entry
    (kept,) = zpool.children()
    assert kept.startswith("files1.deleted-") and len(kept) == len("files1.deleted-") + 16
    assert prop(zpool.dataset(kept), "mounted") == "no"
    assert not mount.exists()
    # `provisiond status` lists the pool's volumes (disk-pool runs disk-zfs list), kept ones too
    status = run_cli("--config", str(path), "status")
    section = status.stdout.split("service disk-repository")[1].split("\nservice ")[0]
    assert (f"zfs {zpool.name}/{kept} {32 * MIB} filesystem {entry['entryUUID']}"
            in section), status.stdout + status.stderr


def test_dataset_allow_shrink_and_destroy(storage: Slapd, zpool: Pool, tmp_path: Path) -> None:
    conn = connect(storage)
    mount = zpool.mount_root / "files2"
    with running(dataset_config(tmp_path, storage, zpool, allow_shrink=True,
                                on_delete="destroy")):
        dn = add_disk(conn, "files2", pool=zpool.name, size="32M", volume_type="filesystem",
                      backend="zfs")
        assert outcome(conn, dn, "add")["provisiondMode"] == "added"
        write(mount / "data", 6 * MIB)
        request(conn, dn, "modify", provisiondSize="4M")
        entry = outcome(conn, dn, "modify")
        assert entry[RETURN] == "23" and "the dataset holds" in entry[MESSAGE], entry
        request(conn, dn, "modify", provisiondSize="12M")
        entry = outcome(conn, dn, "modify")
        assert entry["provisiondMode"] == "modified", entry
        assert prop(zpool.dataset("files2"), "refquota") == str(12 * MIB)
        request(conn, dn, "delete", provisiondIsActive="FALSE")
        assert outcome(conn, dn, "delete")["provisiondMode"] == "deleted"
    assert zpool.children() == [] and not mount.exists()


def test_pool_not_allowed_and_a_dataset_not_ours(storage: Slapd, zpool: Pool,
                                                 tmp_path: Path) -> None:
    conn = connect(storage)
    zfs("create", "-o", "refquota=8M", "-o", f"mountpoint={zpool.mount_root}/admins",
        zpool.dataset("admins"))
    with running(dataset_config(tmp_path, storage, zpool)):
        other = add_disk(conn, "elsewhere", pool="tank", size="8M", volume_type="filesystem",
                         backend="zfs")
        entry = outcome(conn, other, "add")
        assert entry[RETURN] == "27" and "pool tank is not allowed" in entry[MESSAGE], entry
        taken = add_disk(conn, "admins", pool=zpool.name, size="8M", volume_type="filesystem",
                         backend="zfs")
        entry = outcome(conn, taken, "add")
        assert entry[RETURN] == "21" and "carries no provisiond:uuid" in entry[MESSAGE], entry
    assert zpool.children() == ["admins"]
    assert prop(zpool.dataset("admins"), "provisiond:uuid") == "-"


def test_zvol_add_modify_delete_on_the_fake(storage: Slapd, tmp_path: Path) -> None:
    conn = connect(storage)
    fake = install_fake(tmp_path / "fakezfs", "tank")
    node = fake.device_dir / "zvol" / "tank" / "lun1"
    with running(config(tmp_path, storage, ["tank"], zfs=str(fake.program),
                        device_dir=str(fake.device_dir), zfs_volblocksize="16K",
                        allow_shrink=True, on_delete="destroy")):
        dn = add_disk(conn, "lun1", pool="tank", size="10M", backend="zfs")
        entry = outcome(conn, dn, "add")
        assert entry["provisiondMode"] == "added", entry
        assert entry["provisiondDevicePath"] == str(node)
        assert entry["provisiondAllocated"] == str(10 * MIB)
        assert fake.state()["datasets"]["tank/lun1"]["volblocksize"] == 16384

        request(conn, dn, "modify", provisiondSize="20M")
        entry = outcome(conn, dn, "modify")
        assert entry["provisiondAllocated"] == str(20 * MIB), entry

        request(conn, dn, "modify", provisiondSize="10M")  # allow_shrink covers quotas only
        entry = outcome(conn, dn, "modify")
        assert entry[RETURN] == "23" and "shrinking a ZFS volume" in entry[MESSAGE], entry

        request(conn, dn, "delete", provisiondSize="20M", provisiondIsActive="FALSE")
        assert outcome(conn, dn, "delete")["provisiondMode"] == "deleted"
    assert fake.state()["datasets"] == {} and not node.exists()


def test_daemon_killed_mid_hook_converges(storage: Slapd, zpool: Pool, tmp_path: Path) -> None:
    """The daemon is SIGKILLed while disk-zfs create runs (held after `zfs create`); the
    restarted daemon resumes the claim, the re-run adopts the dataset, the entry ends added."""
    conn = connect(storage)
    gate = tmp_path / "gate"
    slow = tmp_path / "slow-zfs"
    slow.write_text(
        "#!/usr/bin/env python3\nimport os, subprocess, sys, time\n"
        f"status = subprocess.call([{ZFS!r}, *sys.argv[1:]])\n"
        f"while sys.argv[1] == 'create' and not os.path.exists({str(gate)!r}):\n"
        "    time.sleep(0.05)\n"
        "sys.exit(status)\n")
    slow.chmod(0o755)
    path = config(tmp_path, storage, [zpool.name], mount_root=str(zpool.mount_root),
                  zfs=str(slow))
    daemon = start_daemon(path, log=tmp_path / "daemon.log")
    try:
        dn = add_disk(conn, "slow1", pool=zpool.name, size="8M", volume_type="filesystem",
                      backend="zfs")
        wait_for(lambda: zpool.exists("slow1"), timeout=30, what="zfs create")
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=10)
    finally:
        gate.touch()
    daemon = start_daemon(path, log=tmp_path / "daemon.log")
    try:
        entry = outcome(conn, dn, "add", timeout=60)
    finally:
        stop_daemon(daemon)
    assert entry["provisiondMode"] == "added" and entry[RETURN] == "0", entry
    assert entry["provisiondPath"] == str(zpool.mount_root / "slow1")
    assert zpool.children() == ["slow1"]
    assert prop(zpool.dataset("slow1"), "provisiond:uuid") == entry["entryUUID"]
