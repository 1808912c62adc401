"""Helpers for the disk-repository tests: real LVM metadata on a loop device, stand-in device
nodes, the kind's hooks loaded as modules, and disk entries in a real slapd.

This machine has no device-mapper (/work/shared/notes/targets.md): LVM runs with a private
LVM_SYSTEM_DIR whose lvm.conf turns activation off, so lvcreate, lvextend, lvrename, lvremove
and lvs change and read real metadata on a real PV, but no /dev/VG/LV node ever appears. The
kind's `device_dir` var says where the hooks look for nodes; the tests point it at a directory
of STAND-INS: `DEVICE_DIR/VG/NAME` symlinks to a loop device, what udev would make after
activation. A block volume's stand-in is the PV's own loop device (nothing writes to it); a
filesystem volume gets a loop device of its own over a sparse file of the volume's size, on
which mkfs, mount and the filesystem grow are real.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import subprocess
import sys
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ldap3

from tests.support import REPO, read, wait_for

SUFFIX = "dc=example,dc=org"
STORAGE = f"ou=storage,{SUFFIX}"
DISKS = f"ou=disks,{STORAGE}"
USERS = f"ou=users,{STORAGE}"  # the entries of the small test service referencing disks
OUS = "\n".join(f"dn: {dn}\nobjectClass: organizationalUnit\nou: {dn.split(',')[0][3:]}\n"
                for dn in (STORAGE, DISKS, USERS))
CLASSES = ["provisiondDiskRepository", "provisiondProvisioning", "provisiondStatus"]
RETURN, MESSAGE = "provisiondReturnValue", "provisiondMessage"
LVM = "/usr/sbin/lvm"


def load_script(name: str) -> types.ModuleType:
    """A hook in scripts/ as a module, for its pure functions."""
    path = REPO / "scripts" / name
    loader = importlib.machinery.SourceFileLoader(name.replace("-", "_"), str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module  # dataclasses look their module up there
    loader.exec_module(module)
    return module


def losetup(image: Path) -> str:
    done = subprocess.run(["/usr/sbin/losetup", "-f", "--show", str(image)], capture_output=True,
                          text=True, check=True)
    return done.stdout.strip()


def detach(device: str) -> None:
    subprocess.run(["/usr/sbin/losetup", "-d", device], capture_output=True, check=False)


@dataclass
class Lvm:
    """A volume group on a loop device over a sparse file, with a private LVM_SYSTEM_DIR."""

    directory: Path
    vg: str = "pvdtest"
    size: str = "4G"
    loop: str = ""

    @property
    def system_dir(self) -> Path:
        return self.directory / "lvm"

    def env(self) -> dict[str, str]:
        return {"LVM_SYSTEM_DIR": str(self.system_dir), "LC_ALL": "C",
                "LVM_SUPPRESS_FD_WARNINGS": "1", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([LVM, *argv], env=self.env(), capture_output=True, text=True,
                              check=False)
        assert not check or done.returncode == 0, (argv, done.stderr)
        return done

    def start(self) -> Lvm:
        image = self.directory / "pv.img"
        self.directory.mkdir(parents=True, exist_ok=True)
        subprocess.run(["/usr/bin/truncate", "-s", self.size, str(image)], check=True)
        self.loop = losetup(image)
        for sub in ("lvm", "lock", "backup", "archive"):
            (self.directory / sub).mkdir(exist_ok=True)
        (self.system_dir / "lvm.conf").write_text(
            f'devices {{ filter=["a|^{self.loop}$|","r|.*|"] use_devicesfile=0 '
            'obtain_device_list_from_udev=0 hints="none" }\n'
            "activation { udev_sync=0 udev_rules=0 monitoring=0 }\n"
            f'global {{ activation=0 use_lvmpolld=0 locking_dir="{self.directory}/lock" }}\n'
            f'backup {{ backup_dir="{self.directory}/backup" '
            f'archive_dir="{self.directory}/archive" }}\n')
        self.run("pvcreate", "-q", self.loop)
        self.run("vgcreate", "-q", self.vg, self.loop)
        return self

    def stop(self) -> None:
        if self.loop:
            self.run("vgremove", "-q", "-f", self.vg, check=False)
            self.run("pvremove", "-q", "-f", self.loop, check=False)
            detach(self.loop)

    def volumes(self) -> dict[str, tuple[int, tuple[str, ...]]]:
        """name -> (size in bytes, tags), straight from `lvs`."""
        out = self.run("lvs", "--noheadings", "--units", "b", "--nosuffix", "--separator", "|",
                       "-o", "lv_name,lv_size,lv_tags", self.vg).stdout
        found = {}
        for line in out.splitlines():
            if line.strip():
                name, size, tags = line.strip().split("|")
                found[name] = (int(size), tuple(t for t in tags.split(",") if t))
        return found

    def options(self, device_dir: Path, wait: float = 2) -> list[str]:
        """disk-lvm's options for this VG."""
        return [f"--lvm-system-dir={self.system_dir}", f"--device-dir={device_dir}",
                f"--wait={wait:g}"]


@dataclass
class StandIns:
    """What udev would make after activation: DEVICE_DIR/VG/NAME device nodes (symlinks)."""

    device_dir: Path
    block_device: str  # the PV's loop device: the stand-in of every block volume
    loops: list[str] = field(default_factory=list)
    images: dict[str, Path] = field(default_factory=dict)

    def path(self, vg: str, name: str) -> Path:
        return self.device_dir / vg / name

    def block(self, vg: str, *names: str) -> None:
        for name in names:
            self._link(vg, name, self.block_device)

    def filesystem(self, vg: str, name: str, size: int) -> str:
        """A loop device of `size` bytes of its own (mkfs writes to it)."""
        image = self.device_dir.parent / f"standin-{vg}-{name}.img"
        subprocess.run(["/usr/bin/truncate", "-s", str(size), str(image)], check=True)
        loop = losetup(image)
        self.loops.append(loop)
        self.images[name] = image
        self._link(vg, name, loop)
        return loop

    def grow(self, name: str, size: int) -> None:
        """The stand-in follows an lvextend, as the LV's device would."""
        subprocess.run(["/usr/bin/truncate", "-s", str(size), str(self.images[name])], check=True)
        for device in self.loops:
            back = subprocess.run(["/usr/sbin/losetup", "-n", "-O", "BACK-FILE", device],
                                  capture_output=True, text=True, check=False).stdout.strip()
            if back == str(self.images[name]):
                subprocess.run(["/usr/sbin/losetup", "-c", device], check=True)

    def _link(self, vg: str, name: str, device: str) -> None:
        link = self.path(vg, name)
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink():
            link.unlink()
        link.symlink_to(device)

    def stop(self) -> None:
        for loop in self.loops:
            detach(loop)


def unmount_below(root: Path) -> None:
    """Unmount whatever a test left mounted under `root` (deepest first)."""
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        points = [line.split()[4] for line in handle]
    for point in sorted((p for p in points if p.startswith(str(root) + "/")), reverse=True):
        subprocess.run(["/usr/bin/umount", "-l", point], capture_output=True, check=False)


def short_tempdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="pvd-", dir="/tmp"))  # ldapi path limit


# -- the kind on a real slapd ----------------------------------------------------------------


def disk_vars(group: Lvm, stand_ins: StandIns, site: Path, **overrides: Any) -> dict[str, Any]:
    """The kind's vars for this volume group, its stand-ins and the test's site."""
    return {"base": DISKS, "pools": [f"{group.vg}=lvm"], "mount_root": str(site / "mnt"),
            "fstab": str(site / "fstab"), "device_dir": str(stand_ins.device_dir),
            "device_wait": 2, "lvm_system_dir": str(group.system_dir), **overrides}


def add_disk(conn: ldap3.Connection, name: str, *, pool: str, size: str = "64M",
             volume_type: str = "block", backend: str = "lvm", active: str = "TRUE",
             mode: str = "add") -> str:
    dn = f"cn={name},{DISKS}"
    assert conn.add(dn, CLASSES, {
        "cn": name, "provisiondBackend": backend, "provisiondPool": pool,
        "provisiondVolumeType": volume_type, "provisiondSize": size,
        "provisiondIsActive": active, "provisiondMode": mode, "provisiondState": "0",
        "provisiondExecutionDate": "0"}), conn.result
    return dn


def outcome(conn: ldap3.Connection, dn: str, mode: str, timeout: float = 60) -> dict[str, str]:
    """The entry once its request `mode` (add, modify, delete) has an outcome: done
    (added, ...) or failed (a ReturnValue other than 0 while at adding, ...)."""
    done = {"add": "added", "modify": "modified", "delete": "deleted"}[mode]
    working = {"add": "adding", "modify": "modifying", "delete": "deleting"}[mode]

    def settled() -> dict[str, str] | None:
        entry = read(conn, dn)
        if entry.get("provisiondMode") == done:
            return entry
        if entry.get("provisiondMode") == working and entry.get(RETURN) not in (None, "0"):
            return entry
        return None

    return wait_for(settled, timeout=timeout, what=f"{dn} {mode} outcome")
