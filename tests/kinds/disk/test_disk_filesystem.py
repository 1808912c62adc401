"""scripts/disk-filesystem for real: mkfs.ext4/mkfs.xfs, mount, the fstab line, growing and
unmounting, on loop devices standing in for LVM volumes (no device-mapper here: support.py),
as root. Also: a device holding something else is never formatted, a mkfs cut short by SIGKILL
is made again on the re-run, busy is exit 75, and concurrent fstab updates lose no line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.kinds.disk.support import Lvm, StandIns, load_script
from tests.support import REPO

HOOK = REPO / "scripts" / "disk-filesystem"
MIB = 1024 * 1024
fs_hook = load_script("disk-filesystem")


def ensure(device: Path, mountpoint: Path, fstype: str, fstab: Path,
           *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(HOOK), "ensure", str(device), str(mountpoint),
                           fstype, f"--fstab={fstab}", "--wait=1", *extra],
                          capture_output=True, text=True, check=False, timeout=120)


def unmount(mountpoint: Path, fstab: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(HOOK), "unmount", str(mountpoint),
                           f"--fstab={fstab}"], capture_output=True, text=True, check=False,
                          timeout=60)


def probe(device: Path) -> dict[str, str]:
    out = subprocess.run(["/usr/sbin/blkid", "-p", "-o", "export", str(device)], capture_output=True,
                         text=True, check=False).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def mounted(mountpoint: Path) -> bool:
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        return any(line.split()[4] == str(mountpoint) for line in handle)


def fs_size(mountpoint: Path) -> int:
    info = os.statvfs(mountpoint)
    return info.f_blocks * info.f_frsize


def has_cap_sys_resource() -> bool:
    """ext4's online grow (resize2fs on a mounted filesystem) needs CAP_SYS_RESOURCE."""
    with open("/proc/self/status", encoding="ascii") as handle:
        effective = next(line for line in handle if line.startswith("CapEff:")).split()[1]
    return bool(int(effective, 16) >> 24 & 1)


# -- pure parts --------------------------------------------------------------------------------


def test_argument_lists_and_texts() -> None:
    programs = fs_hook.DEFAULTS
    assert fs_hook.mkfs_argv(programs, "ext4", "/dev/vg0/r1") == [
        "/usr/sbin/mkfs.ext4", "-F", "-q", "-E", "nodiscard", "-L", "pvd-making", "/dev/vg0/r1"]
    assert fs_hook.mkfs_argv(programs, "xfs", "/dev/vg0/r1")[:2] == ["/usr/sbin/mkfs.xfs", "-f"]
    assert fs_hook.grow_argv(programs, "xfs", "/dev/vg0/r1", "/srv/r1") == [
        "/usr/sbin/xfs_growfs", "/srv/r1"]
    assert fs_hook.fstab_line("/dev/vg0/r1", "/srv/r1", "ext4") == (
        "/dev/vg0/r1 /srv/r1 ext4 defaults,nofail 0 2\n")
    text = "# comment /srv/r1\nUUID=x / ext4 defaults 0 1\n/dev/vg0/r1 /srv/r1 ext4 d 0 2"
    assert fs_hook.fstab_without(text, "/srv/r1") == "# comment /srv/r1\nUUID=x / ext4 defaults 0 1\n"
    assert fs_hook.fstab_with(text, "new\n", "/srv/r1").endswith("0 1\nnew\n")
    info = "36 35 7:3 / /srv/a\\040b rw - ext4 /dev/loop3 rw\n37 35 7:4 / /srv/c rw - xfs x rw\n"
    assert fs_hook.mounted_at(info, "/srv/a b") == (7, 3)
    assert fs_hook.mounted_at(info, "/srv/a") is None
    assert fs_hook.mkfs_needed(fs_hook.Probe(), "ext4", "d")
    assert fs_hook.mkfs_needed(fs_hook.Probe("ext4", "pvd-making"), "ext4", "d")
    assert not fs_hook.mkfs_needed(fs_hook.Probe("ext4", "provisiond"), "ext4", "d")
    assert not fs_hook.mkfs_needed(fs_hook.Probe("ext4", None), "ext4", "d")  # adopted
    with pytest.raises(fs_hook.Failed, match="holds LVM2_member, not ext4"):
        fs_hook.mkfs_needed(fs_hook.Probe("LVM2_member"), "ext4", "d")


def test_concurrent_fstab_updates_lose_no_line(tmp_path: Path) -> None:
    fstab = tmp_path / "fstab"
    fstab.write_text("UUID=x / ext4 defaults 0 1\n")
    points = [f"/srv/v{i}" for i in range(40)]
    threads = [threading.Thread(target=fs_hook.update_fstab,
                                args=(str(fstab), fs_hook.fstab_line(f"/dev/vg/{i}", p, "xfs"),
                                      p)) for i, p in enumerate(points)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = fstab.read_text().splitlines()
    assert lines[0] == "UUID=x / ext4 defaults 0 1" and len(lines) == 41
    assert {line.split()[1] for line in lines[1:]} == set(points)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".fstab.")]


# -- real filesystems --------------------------------------------------------------------------


@pytest.mark.parametrize("fstype", ["ext4", "xfs"])
def test_ensure_makes_mounts_and_is_idempotent(lvm: Lvm, stand_ins: StandIns, site: Path,
                                               fstype: str) -> None:
    size = 320 * MIB  # mkfs.xfs wants 300 MiB at least
    stand_ins.filesystem(lvm.vg, "r1", size)
    device, mountpoint, fstab = stand_ins.path(lvm.vg, "r1"), site / "mnt" / "r1", site / "fstab"
    done = ensure(device, mountpoint, fstype, fstab)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"provisiond-set path={mountpoint}\n"
    made = probe(device)
    assert (made["TYPE"], made["LABEL"]) == (fstype, "provisiond")
    assert mounted(mountpoint) and fs_size(mountpoint) > size // 2
    passno = "0" if fstype == "xfs" else "2"
    assert fstab.read_text() == f"{device} {mountpoint} {fstype} defaults,nofail 0 {passno}\n"
    (mountpoint / "backup.dat").write_text("precious")

    again = ensure(device, mountpoint, fstype, fstab)
    assert again.returncode == 0 and "made" not in again.stderr
    assert probe(device)["UUID"] == made["UUID"]  # not formatted again
    subprocess.run(["/usr/bin/umount", str(mountpoint)], check=True)  # e.g. after a reboot
    remount = ensure(device, mountpoint, fstype, fstab)
    assert remount.returncode == 0 and "made" not in remount.stderr
    assert (mountpoint / "backup.dat").read_text() == "precious"

    gone = unmount(mountpoint, fstab)
    assert gone.returncode == 0, gone.stderr
    assert not mounted(mountpoint) and not mountpoint.exists() and fstab.read_text() == ""
    assert unmount(mountpoint, fstab).returncode == 0  # already gone
    assert probe(device)["UUID"] == made["UUID"]  # unmount leaves the data


def test_a_device_holding_something_else_is_never_formatted(
        lvm: Lvm, stand_ins: StandIns, site: Path) -> None:
    stand_ins.filesystem(lvm.vg, "r1", 64 * MIB)
    device = stand_ins.path(lvm.vg, "r1")
    subprocess.run(["/usr/sbin/mkfs.ext4", "-q", "-L", "admins", str(device)], check=True)
    before = probe(device)["UUID"]
    done = ensure(device, site / "mnt" / "r1", "xfs", site / "fstab")
    assert done.returncode == 65 and "holds ext4, not xfs; not formatting it" in done.stderr
    assert probe(device)["UUID"] == before and not (site / "fstab").exists()
    adopted = ensure(device, site / "mnt" / "r1", "ext4", site / "fstab")  # the admin's ext4
    assert adopted.returncode == 0 and "made" not in adopted.stderr
    assert probe(device) | {"UUID": before} == probe(device)


def test_a_mkfs_cut_short_is_made_again(lvm: Lvm, stand_ins: StandIns, site: Path,
                                        tmp_path: Path) -> None:
    stand_ins.filesystem(lvm.vg, "r1", 64 * MIB)
    device, mountpoint, fstab = stand_ins.path(lvm.vg, "r1"), site / "mnt" / "r1", site / "fstab"
    mkfs = tmp_path / "mkfs-then-die"  # mkfs finishes, the hook dies before relabelling
    mkfs.write_text("#!/usr/bin/env python3\nimport os, signal, subprocess, sys\n"
                    "subprocess.call(['/usr/sbin/mkfs.ext4', *sys.argv[1:]])\n"
                    "os.kill(os.getppid(), signal.SIGKILL)\n")
    mkfs.chmod(0o755)
    killed = ensure(device, mountpoint, "ext4", fstab, f"--mkfs-ext4={mkfs}")
    assert killed.returncode == -9 and probe(device)["LABEL"] == "pvd-making"
    first = probe(device)["UUID"]
    rerun = ensure(device, mountpoint, "ext4", fstab)
    assert rerun.returncode == 0 and "made ext4" in rerun.stderr, rerun.stderr
    assert probe(device)["LABEL"] == "provisiond" and probe(device)["UUID"] != first
    assert mounted(mountpoint)


def test_busy_unmount_is_tried_again_later(lvm: Lvm, stand_ins: StandIns, site: Path) -> None:
    stand_ins.filesystem(lvm.vg, "r1", 64 * MIB)
    device, mountpoint, fstab = stand_ins.path(lvm.vg, "r1"), site / "mnt" / "r1", site / "fstab"
    assert ensure(device, mountpoint, "ext4", fstab).returncode == 0
    user = subprocess.Popen(["/usr/bin/sleep", "30"], cwd=mountpoint)
    try:
        busy = unmount(mountpoint, fstab)
        assert busy.returncode == 75 and "target is busy" in busy.stderr
        assert mounted(mountpoint) and fstab.read_text()
    finally:
        user.kill()
        user.wait()
    assert unmount(mountpoint, fstab).returncode == 0 and not mounted(mountpoint)


def test_missing_device_is_tried_again_later(site: Path) -> None:
    done = ensure(site / "dev" / "vg" / "nothing", site / "mnt" / "r1", "ext4", site / "fstab")
    assert done.returncode == 75 and "did not appear within 1 s" in done.stderr
    assert not (site / "fstab").exists()


@pytest.mark.parametrize("fstype", ["xfs", "ext4"])
def test_a_grown_device_grows_the_mounted_filesystem(lvm: Lvm, stand_ins: StandIns,
                                                     site: Path, fstype: str) -> None:
    if fstype == "ext4" and not has_cap_sys_resource():
        pytest.skip("ext4 grows online only with CAP_SYS_RESOURCE, which this container "
                    "drops (resize2fs: Permission denied); xfs covers the path here")
    stand_ins.filesystem(lvm.vg, "r1", 320 * MIB)
    device, mountpoint, fstab = stand_ins.path(lvm.vg, "r1"), site / "mnt" / "r1", site / "fstab"
    assert ensure(device, mountpoint, fstype, fstab).returncode == 0
    before = fs_size(mountpoint)
    stand_ins.grow("r1", 512 * MIB)
    grown = ensure(device, mountpoint, fstype, fstab)
    assert grown.returncode == 0, grown.stderr
    assert fs_size(mountpoint) > before + 150 * MIB


def test_the_programs_it_needs_are_installed() -> None:
    for name in ("mkfs.ext4", "mkfs.xfs", "resize2fs", "xfs_growfs", "e2label", "xfs_admin",
                 "blkid"):
        assert shutil.which(name, path="/usr/sbin:/sbin"), name


def dying(directory: Path, program: str) -> Path:
    """`program`, then a SIGKILL of the hook that ran it (after the change, before the rest)."""
    path = directory / f"{Path(program).name}-then-die"
    path.write_text("#!/usr/bin/env python3\nimport os, signal, subprocess, sys\n"
                    f"subprocess.call([{program!r}, *sys.argv[1:]])\n"
                    "os.kill(os.getppid(), signal.SIGKILL)\n")
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("program", ["mount", "umount"])
def test_a_rerun_after_sigkill_after_mount_or_umount_converges(
        lvm: Lvm, stand_ins: StandIns, site: Path, tmp_path: Path, program: str) -> None:
    stand_ins.filesystem(lvm.vg, "r1", 64 * MIB)
    device, mountpoint, fstab = stand_ins.path(lvm.vg, "r1"), site / "mnt" / "r1", site / "fstab"
    wrapper = dying(tmp_path, f"/usr/bin/{program}")
    if program == "mount":
        killed = ensure(device, mountpoint, "ext4", fstab, f"--mount={wrapper}")
        assert killed.returncode == -9 and mounted(mountpoint) and not killed.stdout
        rerun = ensure(device, mountpoint, "ext4", fstab)
        assert rerun.returncode == 0 and rerun.stdout == f"provisiond-set path={mountpoint}\n"
        assert mounted(mountpoint) and len(fstab.read_text().splitlines()) == 1
        return
    assert ensure(device, mountpoint, "ext4", fstab).returncode == 0
    killed = subprocess.run([sys.executable, str(HOOK), "unmount", str(mountpoint),
                             f"--fstab={fstab}", f"--umount={wrapper}"], capture_output=True,
                            text=True, check=False, timeout=60)
    assert killed.returncode == -9 and not mounted(mountpoint) and fstab.read_text()
    rerun = unmount(mountpoint, fstab)
    assert rerun.returncode == 0 and fstab.read_text() == "" and not mountpoint.exists()
