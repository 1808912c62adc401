"""Real quotas: ext4 on a loop device mounted with usrquota, the real setquota and repquota.

The kernel of the CI machine has no quota support, so `quotaon` fails and nothing is
enforced; setquota and repquota still read and write the aquota.user file for real, which is
what the backup-account kind's quota step does. Needs root (losetup, mount); CI runs as root.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisiond.testing.slapd import Slapd
from tests.conftest import require_root
from tests.kinds.backup.support import (
    Site,
    add_account,
    config_for,
    connect,
    ids_for,
    request,
    running,
    wait_failed,
    wait_mode,
)

UID = "1234567"
TOOLS = ("losetup", "mkfs.ext4", "mount", "umount", "quotacheck", "setquota", "repquota")


def _run(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr}")
    return result.stdout


@pytest.fixture
def quota_mount(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB ext4 filesystem with user quota files, mounted at tmp_path/mnt."""
    require_root()
    found = {tool: shutil.which(tool) or "" for tool in TOOLS}
    missing = [tool for tool, path in found.items() if not path]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (Debian packages quota, e2fsprogs, mount)")
    image, mountpoint = tmp_path / "quota.img", tmp_path / "mnt"
    mountpoint.mkdir()
    with open(image, "wb") as handle:
        handle.truncate(64 << 20)
    _run(found["mkfs.ext4"], "-q", "-F", str(image))
    try:
        device = _run(found["losetup"], "--find", "--show", str(image)).strip()
    except RuntimeError as exc:
        pytest.skip(f"no loop device available: {exc}")
    mounted = False
    try:
        try:
            _run(found["mount"], "-o", "usrquota,grpquota", device, str(mountpoint))
        except RuntimeError as exc:
            pytest.skip(f"cannot mount a loop device here: {exc}")
        mounted = True
        _run(found["quotacheck"], "-cugm", str(mountpoint))
        yield mountpoint
    finally:
        if mounted:
            subprocess.run([found["umount"], str(mountpoint)], check=False)
        subprocess.run([found["losetup"], "-d", device], check=False)


def limits(mountpoint: Path, uid_number: int) -> tuple[int, int] | None:
    """(block soft, block hard) of a user from `repquota -v -n -O csv`, None if not listed."""
    repquota = shutil.which("repquota") or "/usr/sbin/repquota"
    for line in _run(repquota, "-v", "-n", "-O", "csv", str(mountpoint)).splitlines()[1:]:
        fields = line.split(",")
        if fields[0] == f"#{uid_number}":
            return int(fields[4]), int(fields[5])
    return None


@pytest.mark.root
def test_quota_follows_the_account(stoney: Slapd, quota_mount: Path, tmp_path: Path) -> None:
    site = Site(tmp_path / "site").create()
    backup_root = quota_mount / "backup"
    backup_root.mkdir()
    config = config_for(tmp_path / "cfg", stoney, site, backup_root=str(backup_root),
                        quota_mount_point=str(quota_mount), setquota="/usr/sbin/setquota",
                        quota_soft_percent=90)
    conn = connect(stoney)
    with running(config):
        dn = add_account(conn, UID, quota="1073741824")
        wait_mode(conn, dn, "added")
        assert limits(quota_mount, int(UID)) == (943718, 1048576)
        home = backup_root / "7" / "567" / "234" / UID / "home"
        assert home.stat().st_uid == int(UID)

        request(conn, dn, "modify", sstQuota="5368709120")  # 5 GiB
        wait_mode(conn, dn, "modified")
        assert limits(quota_mount, int(UID)) == (4718592, 5242880)

        request(conn, dn, "delete", sstIsActive="FALSE")
        wait_mode(conn, dn, "deleted")
        assert limits(quota_mount, int(UID)) in (None, (0, 0))
    archived = list((backup_root / "archive").glob(f"{UID}-*"))
    assert len(archived) == 1 and (archived[0] / "home").is_dir()


def test_setquota_failure_is_code_6(stoney: Slapd, tmp_path: Path) -> None:
    """The real setquota on a directory without quotas: code 6, and the message says why."""
    if not Path("/usr/sbin/setquota").exists():
        pytest.skip("needs /usr/sbin/setquota (Debian package quota)")
    site = Site(tmp_path / "site").create()
    config = config_for(tmp_path / "cfg", stoney, site, setquota="/usr/sbin/setquota",
                        quota_mount_point=str(site.base), messages=True)  # no quota there
    conn = connect(stoney)
    with running(config):
        dn = add_account(conn, UID, messages=True)
        entry = wait_failed(conn, dn)
    assert entry["sstProvisioningReturnValue"] == "6"
    assert entry["provisiondMessage"].startswith("set quota: ")
    assert f"setquota -u {ids_for(UID)[0]} " in entry["provisiondMessage"]
    assert not site.config(UID).exists()
