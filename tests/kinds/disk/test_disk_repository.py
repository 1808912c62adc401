"""The disk-repository kind end to end on LVM: a real slapd, the engine (in-process, and the
daemon as a process for the SIGKILL test), the shipped hooks, real LVM metadata on a loop
device and real filesystems on stand-in loop devices (support.py: no device-mapper here)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import ldap3
import pytest

from provisiond.testing.slapd import Slapd
from tests.kinds.disk.support import (
    DISKS,
    MESSAGE,
    RETURN,
    USERS,
    Lvm,
    StandIns,
    add_disk,
    disk_vars,
    outcome,
)
from tests.support import (
    connect,
    read,
    request,
    run_cli,
    running,
    start_daemon,
    stop_daemon,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.slow
MIB = 1024 * 1024


def config(tmp_path: Path, slapd: Slapd, group: Lvm, stand_ins: StandIns, site: Path,
           services: dict[str, Any] | None = None, **vars_: Any) -> Path:
    disk = {"kind": "disk-repository", "vars": disk_vars(group, stand_ins, site, **vars_)}
    return write_config(tmp_path / "cfg", slapd, {"disk-repository": disk, **(services or {})},
                        retry={"limit": 3, "initial": 0.2, "maximum": 1})


def tags_of(lvm: Lvm, name: str) -> set[str]:
    return set(lvm.volumes()[name][1])


def test_block_volume_add_modify_delete_keep(storage: Slapd, lvm: Lvm, stand_ins: StandIns,
                                             site: Path, tmp_path: Path) -> None:
    conn = connect(storage)
    stand_ins.block(lvm.vg, "repo01")
    path = config(tmp_path, storage, lvm, stand_ins, site)
    with running(path):
        dn = add_disk(conn, "repo01", pool=lvm.vg, size="10M")
        entry = outcome(conn, dn, "add")
        assert entry["provisiondMode"] == "added" and entry[RETURN] == "0", entry
        assert entry["provisiondDevicePath"] == str(stand_ins.path(lvm.vg, "repo01"))
        assert entry["provisiondAllocated"] == str(12 * MIB)  # whole extents
        assert tags_of(lvm, "repo01") == {f"provisiond-uuid:{entry['entryUUID']}",
                                          "provisiond-type:block"}

        request(conn, dn, "modify", provisiondSize="100M")
        entry = outcome(conn, dn, "modify")
        assert entry["provisiondMode"] == "modified", entry
        assert entry["provisiondAllocated"] == str(100 * MIB) == str(lvm.volumes()["repo01"][0])

        request(conn, dn, "modify", provisiondSize="50M")
        entry = outcome(conn, dn, "modify")
        assert entry[RETURN] == "23" and "shrink refused" in entry[MESSAGE], entry
        assert lvm.volumes()["repo01"][0] == 100 * MIB

        request(conn, dn, "modify", provisiondSize="100M", provisiondVolumeType="filesystem")
        entry = outcome(conn, dn, "modify")
        assert entry[RETURN] == "27" and "type cannot change" in entry[MESSAGE], entry

        request(conn, dn, "delete", provisiondVolumeType="block", provisiondIsActive="FALSE")
        entry = outcome(conn, dn, "delete")
        assert entry["provisiondMode"] == "deleted", entry
    (kept,) = lvm.volumes()
    assert kept.startswith("repo01.deleted-") and len(kept) == len("repo01.deleted-") + 16
    # `provisiond status` lists the volumes on the host, the kept one included
    status = run_cli("--config", str(path), "status")
    section = status.stdout.split("service disk-repository")[1].split("\nservice ")[0]
    assert (f"live       lvm {lvm.vg}/{kept} {100 * MIB} block {entry['entryUUID']}"
            in section), status.stdout + status.stderr


@pytest.mark.parametrize("fstype", ["xfs", "ext4"])
def test_filesystem_add_grow_delete_destroy(storage: Slapd, lvm: Lvm, stand_ins: StandIns,
                                            site: Path, tmp_path: Path, fstype: str) -> None:
    conn = connect(storage)
    stand_ins.filesystem(lvm.vg, "files1", 320 * MIB)  # what activation would make
    mountpoint, fstab = site / "mnt" / "files1", site / "fstab"
    with running(config(tmp_path, storage, lvm, stand_ins, site, filesystem=fstype,
                        on_delete="destroy")):
        dn = add_disk(conn, "files1", pool=lvm.vg, size="320M", volume_type="filesystem")
        entry = outcome(conn, dn, "add")
        assert entry["provisiondMode"] == "added", entry
        assert entry["provisiondPath"] == str(mountpoint)
        assert entry["provisiondDevicePath"] == str(stand_ins.path(lvm.vg, "files1"))
        assert os.path.ismount(mountpoint)
        assert f" {mountpoint} {fstype} defaults,nofail " in fstab.read_text()
        (mountpoint / "bacula.vol").write_text("volume")

        if fstype == "xfs":  # ext4 grows online only with CAP_SYS_RESOURCE (not here)
            stand_ins.grow("files1", 512 * MIB)
            request(conn, dn, "modify", provisiondSize="512M")
            entry = outcome(conn, dn, "modify")
            assert entry["provisiondMode"] == "modified", entry
            assert entry["provisiondAllocated"] == str(512 * MIB)
            info = os.statvfs(mountpoint)
            assert info.f_blocks * info.f_frsize > 400 * MIB

        request(conn, dn, "delete", provisiondIsActive="FALSE")
        entry = outcome(conn, dn, "delete")
        assert entry["provisiondMode"] == "deleted", entry
    assert not os.path.ismount(mountpoint) and not mountpoint.exists()
    assert fstab.read_text() == "" and lvm.volumes() == {}


def test_pool_not_allowed_and_existing_volumes(storage: Slapd, lvm: Lvm, stand_ins: StandIns,
                                               site: Path, tmp_path: Path) -> None:
    conn = connect(storage)
    stand_ins.block(lvm.vg, "taken", "again")
    lvm.run("lvcreate", "-q", "--yes", "-n", "taken", "-L", "8m", lvm.vg)  # an admin's
    with running(config(tmp_path, storage, lvm, stand_ins, site)):
        other = add_disk(conn, "elsewhere", pool="vg00", size="10M")
        entry = outcome(conn, other, "add")
        assert entry[RETURN] == "27" and "pool vg00 is not allowed" in entry[MESSAGE], entry
        wrong = add_disk(conn, "wrongbackend", pool=lvm.vg, backend="zfs")
        entry = outcome(conn, wrong, "add")
        assert entry[RETURN] == "27" and "not zfs" in entry[MESSAGE], entry

        taken = add_disk(conn, "taken", pool=lvm.vg, size="8M")
        entry = outcome(conn, taken, "add")
        assert entry[RETURN] == "21" and "carries no provisiond-uuid tag" in entry[MESSAGE]

        # adopted: the entry's own volume (asked to add again, as after a lost report)
        again = add_disk(conn, "again", pool=lvm.vg, size="8M")
        assert outcome(conn, again, "add")["provisiondMode"] == "added"
        request(conn, again, "add")
        assert outcome(conn, again, "add")["provisiondMode"] == "added"
    assert set(lvm.volumes()) == {"taken", "again"} and lvm.volumes()["taken"][1] == ()


def users_service() -> dict[str, Any]:
    """A small service whose entries reference disks (as iSCSI LUNs do): it only needs them."""
    return {"disk-users": {
        "base": USERS, "filter": "(objectClass=provisiondIscsiLun)",
        "attributes": {"mode": "provisiondMode", "state": "provisiondState",
                       "execution_date": "provisiondExecutionDate",
                       "return_value": "provisiondReturnValue", "message": "provisiondMessage"},
        "values": {"name": {"attribute": "cn", "type": "posix_name"},
                   "disk": {"attribute": "provisiondDisk", "type": "dn", "under": DISKS},
                   "active": {"attribute": "provisiondIsActive", "type": "boolean"}},
        "active": "(provisiondIsActive=TRUE)",
        "preconditions": {"delete": {"active": False}},
        "references": {"disk": "disk-repository"},
        "steps": {"add": [{"name": "use", "code": 5, "hook": [
            "/bin/test", "-b", "{{ refs.disk.outputs.device }}"]}], "delete": []},
    }}


def add_user(conn: ldap3.Connection, name: str, disk: str) -> str:
    dn = f"cn={name},{USERS}"
    assert conn.add(dn, ["provisiondIscsiLun", "provisiondProvisioning", "provisiondStatus"], {
        "cn": name, "provisiondLunNumber": "1", "provisiondDisk": disk,
        "provisiondIsActive": "TRUE", "provisiondMode": "add", "provisiondState": "0",
        "provisiondExecutionDate": "0"}), conn.result
    return dn


def test_delete_refused_while_referenced(storage: Slapd, lvm: Lvm, stand_ins: StandIns,
                                         site: Path, tmp_path: Path) -> None:
    conn = connect(storage)
    stand_ins.block(lvm.vg, "lun1")
    with running(config(tmp_path, storage, lvm, stand_ins, site, services=users_service())):
        disk = add_disk(conn, "lun1", pool=lvm.vg, size="16M")
        user = add_user(conn, "user1", disk)
        assert outcome(conn, disk, "add")["provisiondMode"] == "added"
        assert outcome(conn, user, "add")["provisiondMode"] == "added", read(conn, user)

        request(conn, disk, "modify", provisiondPool="othervg")  # a fixed value
        entry = outcome(conn, disk, "modify")
        assert entry[RETURN] == "24" and "pool" in entry[MESSAGE], entry
        request(conn, disk, "modify", provisiondPool=lvm.vg, provisiondSize="32M")
        assert outcome(conn, disk, "modify")["provisiondMode"] == "modified"  # growing is fine

        request(conn, disk, "delete", provisiondIsActive="FALSE")
        entry = outcome(conn, disk, "delete")
        assert entry[RETURN] == "24", entry
        assert "refused while 1 entry of other services references it" in entry[MESSAGE]
        assert f"disk-users {user}" in entry[MESSAGE]
        assert "lun1" in lvm.volumes()

        request(conn, user, "delete", provisiondIsActive="FALSE")
        assert outcome(conn, user, "delete")["provisiondMode"] == "deleted"
        request(conn, disk, "delete")
        assert outcome(conn, disk, "delete")["provisiondMode"] == "deleted"
    assert "lun1" not in lvm.volumes()


def test_fifty_volumes_at_once(storage: Slapd, lvm: Lvm, stand_ins: StandIns, site: Path,
                               tmp_path: Path) -> None:
    conn = connect(storage)
    names = [f"vol{i:02d}" for i in range(50)]
    stand_ins.block(lvm.vg, *names)
    dns = [add_disk(conn, name, pool=lvm.vg, size="8M") for name in names]  # queued at once
    with running(config(tmp_path, storage, lvm, stand_ins, site)):
        entries = [outcome(conn, dn, "add", timeout=120) for dn in dns]
    assert [e["provisiondMode"] for e in entries] == ["added"] * 50
    volumes = lvm.volumes()
    assert sorted(volumes) == names  # exactly them: none missing, none twice, no stray one
    for entry, name in zip(entries, names, strict=True):
        size, tags = volumes[name]
        assert size == 8 * MIB
        assert set(tags) == {"provisiond-type:block", f"provisiond-uuid:{entry['entryUUID']}"}
    check = lvm.run("vgck", lvm.vg)
    assert check.returncode == 0


def test_daemon_killed_mid_hook_converges(storage: Slapd, lvm: Lvm, stand_ins: StandIns,
                                          site: Path, tmp_path: Path) -> None:
    """The daemon is SIGKILLed while lvcreate's hook runs; the restarted daemon resumes the
    claim from its journal, the re-run adopts the volume, and the entry ends added once."""
    conn = connect(storage)
    stand_ins.block(lvm.vg, "slow1")
    gate = tmp_path / "gate"
    slow = tmp_path / "slow-lvm"  # holds the hook after lvcreate until the gate file exists
    slow.write_text(
        "#!/usr/bin/env python3\nimport os, subprocess, sys, time\n"
        "status = subprocess.call(['/usr/sbin/lvm', *sys.argv[1:]])\n"
        f"while sys.argv[1] == 'lvcreate' and not os.path.exists({str(gate)!r}):\n"
        "    time.sleep(0.05)\n"
        "sys.exit(status)\n")
    slow.chmod(0o755)
    path = config(tmp_path, storage, lvm, stand_ins, site, lvm=str(slow))
    daemon = start_daemon(path, log=tmp_path / "daemon.log")
    try:
        dn = add_disk(conn, "slow1", pool=lvm.vg, size="10M")
        wait_for(lambda: "slow1" in lvm.volumes(), timeout=30, what="lvcreate")
        assert read(conn, dn)["provisiondMode"] == "adding"
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=10)
    finally:
        gate.touch()  # the orphaned hook finishes; its report is lost with the daemon
    daemon = start_daemon(path, log=tmp_path / "daemon.log")
    try:
        entry = outcome(conn, dn, "add", timeout=60)
    finally:
        stop_daemon(daemon)
    assert entry["provisiondMode"] == "added" and entry[RETURN] == "0", entry
    assert entry["provisiondAllocated"] == str(12 * MIB)
    assert list(lvm.volumes()) == ["slow1"]
