"""Helpers for the backup-account tests: a stoney-schema slapd, the site layout, accounts."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ldap3
import pytest

from provisiond.testing.slapd import PROJECT_SCHEMA_DIR, Slapd
from tests import support as shared
from tests.support import REPO, connect, read, running, wait_for, write_config

__all__ = ["connect", "read", "running"]  # shared helpers the backup tests import from here

SUFFIX = "dc=stoney-cloud,dc=org"
ROOT_DN = f"cn=admin,{SUFFIX}"
ACCOUNTS = f"ou=accounts,ou=backup,ou=services,{SUFFIX}"
COMPAT_SCHEMA = REPO / "tests" / "schema" / "stoney-compat.ldif"
SCHEMA_FILES = (COMPAT_SCHEMA, PROJECT_SCHEMA_DIR / "provisiond.ldif")
INDEXES = ("sstProvisioningMode eq", "sstProvisioningState eq")
OUS = "\n".join(
    f"dn: {dn}\nobjectClass: organizationalUnit\nou: {dn.split(',')[0].split('=')[1]}\n"
    for dn in (f"ou=services,{SUFFIX}", f"ou=backup,ou=services,{SUFFIX}", ACCOUNTS)
)
ACCOUNT_CLASSES = ["account", "posixAccount", "shadowAccount", "sstBackup", "sstProvisioning",
                   "sstRelationship"]
MODE, STATE, RETURN = "sstProvisioningMode", "sstProvisioningState", "sstProvisioningReturnValue"
# The message attribute from the project schema, put on stoney entries with provisiondStatus.
MESSAGE_ATTRIBUTES = {"mode": MODE, "state": STATE,
                      "execution_date": "sstProvisioningExecutionDate",
                      "return_value": RETURN, "message": "provisiondMessage"}


def is_root() -> bool:
    return os.geteuid() == 0


def ids_for(uid: str) -> tuple[int, int]:
    """uidNumber and gidNumber for an account: stoney's uid == uidNumber == gidNumber as root;
    our own ids otherwise (chown to a foreign uid needs root)."""
    if is_root():
        return int(uid), int(uid)
    if os.getuid() < 1000 or os.getgid() < 1000:
        pytest.skip("needs root, or a uid and gid >= 1000 (the kind refuses system ids)")
    return os.getuid(), os.getgid()


@dataclass
class Site:
    """A backup server's directories, all inside the test's temp dir."""

    base: Path

    @property
    def backup_root(self) -> Path:
        return self.base / "backup"

    @property
    def rsnapshot_dir(self) -> Path:
        return self.base / "rsnapshot"

    @property
    def cron_dir(self) -> Path:
        return self.base / "cron.d"

    @property
    def lock_dir(self) -> Path:
        return self.base / "run"

    @property
    def archive_dir(self) -> Path:
        return self.backup_root / "archive"

    @property
    def setquota_log(self) -> Path:
        return self.base / "setquota.log"

    @property
    def fake_setquota(self) -> Path:
        return self.base / "bin" / "setquota"

    @property
    def schedule(self) -> Path:
        return self.cron_dir / "provisiond-backup-account"

    def create(self) -> Site:
        for directory in (self.backup_root, self.rsnapshot_dir, self.cron_dir, self.lock_dir,
                          self.fake_setquota.parent):
            directory.mkdir(parents=True, exist_ok=True)
        self.fake_setquota.write_text(
            f'#!/bin/sh\necho "$*" >> {self.setquota_log}\n'
            '[ -e "${0%/*}/fail" ] && { echo "setquota: Mountpoint has no quota" >&2; exit 1; }\n'
            "exit 0\n")
        self.fake_setquota.chmod(0o755)
        return self

    def chroot(self, uid: str) -> Path:
        return self.backup_root / uid[-1] / uid[-3:] / uid[-6:-3] / uid

    def home(self, uid: str) -> Path:
        return self.chroot(uid) / "home"

    def config(self, uid: str) -> Path:
        return self.rsnapshot_dir / f"rsnapshot.conf.{uid}"

    def setquota_calls(self) -> list[str]:
        return self.setquota_log.read_text().splitlines() if self.setquota_log.exists() else []

    def vars(self, **overrides: Any) -> dict[str, Any]:
        return {
            "backup_root": str(self.backup_root),
            "rsnapshot_config_dir": str(self.rsnapshot_dir),
            "schedule_dir": str(self.cron_dir),
            "lock_dir": str(self.lock_dir),
            "quota_mount_point": "/",
            "setquota": str(self.fake_setquota),
            **overrides,
        }

    def written(self) -> list[Path]:
        """Everything below the site's directories except our own fake setquota."""
        return sorted(p for p in self.base.rglob("*")
                      if p.parent != self.fake_setquota.parent and p != self.fake_setquota.parent)


def service(site: Site, *, messages: bool = False, **vars_: Any) -> dict[str, Any]:
    definition: dict[str, Any] = {"kind": "backup-account", "vars": site.vars(**vars_)}
    if messages:
        definition["attributes"] = MESSAGE_ATTRIBUTES
    return {"backup": definition}


def config_for(directory: Path, slapd: Slapd, site: Site, **kwargs: Any) -> Path:
    return write_config(directory, slapd, service(site, **kwargs))


def account_dn(uid: str) -> str:
    return f"uid={uid},{ACCOUNTS}"


def add_account(conn: ldap3.Connection, uid: str, *, dn: str | None = None,
                messages: bool = False, mode: str = "add", quota: str = "1073741824",
                hourly: str = "0", daily: str = "7", weekly: str = "4", monthly: str = "6",
                yearly: str = "0", active: str = "TRUE", uid_number: str | None = None,
                gid_number: str | None = None) -> str:
    """A backup account as stoney cloud's portal writes it (plus provisiondStatus when the
    test wants the message attribute)."""
    default_uid, default_gid = ids_for(uid) if uid.isdigit() else (1234567, 1234567)
    dn = dn or account_dn(uid)
    cn = dn.split(",")[0].split("=", 1)[1] if dn.startswith("cn=") else f"Backup {uid}"
    attributes = {
        "uid": uid, "cn": cn,
        "uidNumber": uid_number or str(default_uid), "gidNumber": gid_number or str(default_gid),
        "homeDirectory": f"/var/backup/{uid}", "loginShell": "/bin/false",
        "sstBackupIntervalHourly": hourly, "sstBackupIntervalDaily": daily,
        "sstBackupIntervalWeekly": weekly, "sstBackupIntervalMonthly": monthly,
        "sstBackupIntervalYearly": yearly, "sstBackupWarningDays": "3",
        "sstBackupWarningNumbers": "3", "sstBackupWarningOn": "TRUE",
        "sstNotificationWarningLevel": "85", "sstNotificationWarningMedium": "mail",
        "sstUseSelfcare": "TRUE", "sstUseSSH": "TRUE", "sstIsActive": active,
        "sstQuota": quota, "sstBelongsToResellerUID": "4000000",
        "sstBelongsToCustomerUID": "4000001", "sstBelongsToPersonUID": "4000002",
        MODE: mode, STATE: "0", "sstProvisioningExecutionDate": "0",
    }
    classes = ACCOUNT_CLASSES + (["provisiondStatus"] if messages else [])
    assert conn.add(dn, classes, attributes), conn.result
    return dn


def request(conn: ldap3.Connection, dn: str, mode: str, **changes: str) -> None:
    """What the portal does: ask for `mode` (state 0), optionally changing attributes."""
    shared.request(conn, dn, mode, names=(MODE, STATE), **changes)


def mode_of(conn: ldap3.Connection, dn: str) -> str | None:
    return shared.mode_of(conn, dn, MODE)


def wait_mode(conn: ldap3.Connection, dn: str, mode: str, timeout: float = 30) -> dict[str, str]:
    wait_for(lambda: mode_of(conn, dn) == mode, timeout=timeout, what=f"{dn} {mode}")
    return read(conn, dn)


def wait_failed(conn: ldap3.Connection, dn: str, timeout: float = 30) -> dict[str, str]:
    wait_for(lambda: read(conn, dn).get(RETURN) not in (None, "0"), timeout=timeout,
             what=f"{dn} failed")
    return read(conn, dn)


def mode_bits(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)
