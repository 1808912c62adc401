"""The backup-account-native kind: backup accounts on a slapd with only the project's schema
(etc/schema/provisiond.ldif on top of core, cosine, nis and inetorgperson; no stoney schema)."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ldap3
import pytest

from provisiond.config import load_config
from provisiond.model.settings import StateAttributes
from provisiond.testing.slapd import PROJECT_SCHEMA_DIR, Slapd, destroy, start_private_slapd
from tests.conftest import require_slapd
from tests.kinds.backup.support import Site, connect, ids_for, mode_bits, read, running
from tests.kinds.backup.test_backup_account import (
    RSNAPSHOT,
    UID,
    require_rsnapshot,
    retains,
    schedule_lines,
)
from tests.support import mode_of, request, wait_for, write_config

KIND = "backup-account-native"
SUFFIX = "dc=example,dc=org"  # the kind's default suffix and the private slapd's
ACCOUNTS = f"ou=accounts,ou=backup,ou=services,{SUFFIX}"
OUS = "\n".join(
    f"dn: {dn}\nobjectClass: organizationalUnit\nou: {dn.split(',')[0].split('=')[1]}\n"
    for dn in (f"ou=services,{SUFFIX}", f"ou=backup,ou=services,{SUFFIX}", ACCOUNTS)
)
CLASSES = ["account", "posixAccount", "provisiondBackupAccount", "provisiondProvisioning"]
LEVELS = ("Hourly", "Daily", "Weekly", "Monthly", "Yearly")
RETURN, MESSAGE = "provisiondReturnValue", "provisiondMessage"


@pytest.fixture
def native() -> Iterator[Slapd]:
    """A running slapd with the default schema files: the project's schema only."""
    require_slapd()
    directory = Path(tempfile.mkdtemp(prefix="pvd-", dir="/tmp"))  # short: ldapi path limit
    server = start_private_slapd(directory, extra_ldif=OUS)
    yield server
    destroy(server)


def config_for(directory: Path, slapd: Slapd, site: Site, **vars_: Any) -> Path:
    return write_config(directory, slapd, {"backup": {"kind": KIND, "vars": site.vars(**vars_)}})


def add_account(conn: ldap3.Connection, uid: str, *, quota: str = "1073741824",
                hourly: str = "0", daily: str = "7", weekly: str = "4", monthly: str = "6",
                yearly: str = "0", active: str = "TRUE") -> str:
    """A backup account as a new site's portal writes it, with the native classes."""
    uid_number, gid_number = ids_for(uid)
    dn = f"uid={uid},{ACCOUNTS}"
    counts = dict(zip(LEVELS, (hourly, daily, weekly, monthly, yearly), strict=True))
    attributes = {
        "uid": uid, "cn": f"Backup {uid}", "uidNumber": str(uid_number),
        "gidNumber": str(gid_number), "homeDirectory": f"/var/backup/{uid}",
        "provisiondQuota": quota, "provisiondIsActive": active,
        **{f"provisiondRetain{level}": count for level, count in counts.items()},
        "provisiondMode": "add", "provisiondState": "0", "provisiondExecutionDate": "0",
    }
    assert conn.add(dn, CLASSES, attributes), conn.result
    return dn


def wait_mode(conn: ldap3.Connection, dn: str, mode: str) -> dict[str, str]:
    wait_for(lambda: mode_of(conn, dn) == mode, timeout=30, what=f"{dn} {mode}")
    return read(conn, dn)


def test_the_server_has_only_the_project_schema(native: Slapd) -> None:
    conn = connect(native)
    conn.search("cn=Subschema", "(objectClass=*)", search_scope=ldap3.BASE,
                attributes=["objectClasses"])
    classes = " ".join(str(c) for c in conn.response[0]["raw_attributes"]["objectClasses"])
    assert "'provisiondBackupAccount'" in classes
    assert "'sstBackup'" not in classes and "'sstProvisioning'" not in classes


def test_add_creates_the_account(native: Slapd, site: Site, tmp_path: Path) -> None:
    require_rsnapshot()
    conn = connect(native)
    with running(config_for(tmp_path / "cfg", native, site)):
        dn = add_account(conn, UID, quota="1073741824", daily="7", weekly="4", monthly="6")
        entry = wait_mode(conn, dn, "added")
    assert entry[RETURN] == "0" and re.fullmatch(r"\d{8}T\d{6}Z", entry["provisiondState"])
    uid_number, gid_number = ids_for(UID)
    home = site.home(UID)
    assert (home.stat().st_uid, home.stat().st_gid) == (uid_number, gid_number)
    assert mode_bits(home) == 0o700

    config = site.config(UID)
    assert retains(config) == [("daily", "7"), ("weekly", "4"), ("monthly", "6")]
    check = subprocess.run([RSNAPSHOT, "-c", str(config), "configtest"],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0 and "Syntax OK" in check.stdout, check.stderr
    assert [line.split()[-1] for line in schedule_lines(site, UID)] == [
        "monthly", "weekly", "daily"]
    blocks = 1073741824 // 1024
    assert site.setquota_calls() == [f"-u {uid_number} {blocks} {blocks} 0 0 /"]


def test_modify_changes_retention_and_quota(native: Slapd, site: Site, tmp_path: Path) -> None:
    require_rsnapshot()
    conn = connect(native)
    with running(config_for(tmp_path / "cfg", native, site)):
        dn = add_account(conn, UID, hourly="0", daily="7", weekly="4", monthly="0", yearly="0")
        wait_mode(conn, dn, "added")
        request(conn, dn, "modify", provisiondQuota="2147483648", provisiondRetainHourly="24",
                provisiondRetainDaily="14", provisiondRetainWeekly="0",
                provisiondRetainYearly="3")
        assert wait_mode(conn, dn, "modified")[RETURN] == "0"
    assert retains(site.config(UID)) == [("hourly", "24"), ("daily", "14"), ("yearly", "3")]
    assert [line.split()[-1] for line in schedule_lines(site, UID)] == [
        "yearly", "daily", "hourly"]
    uid_number, _ = ids_for(UID)
    assert site.setquota_calls()[-1] == f"-u {uid_number} 2097152 2097152 0 0 /"


def test_delete_waits_for_inactive_then_archives(
    native: Slapd, site: Site, tmp_path: Path
) -> None:
    require_rsnapshot()
    conn = connect(native)
    with running(config_for(tmp_path / "cfg", native, site)) as engine:
        dn = add_account(conn, UID)
        wait_mode(conn, dn, "added")
        (site.home(UID) / "precious.txt").write_text("keep me")

        request(conn, dn, "delete")  # provisiondIsActive still TRUE: must wait, untouched
        wait_for(engine.idle, what="engine idle")
        assert mode_of(conn, dn) == "delete" and site.config(UID).exists()

        request(conn, dn, "delete", provisiondIsActive="FALSE")
        assert wait_mode(conn, dn, "deleted")[RETURN] == "0"
    assert not site.config(UID).exists() and not schedule_lines(site, UID)
    assert not site.chroot(UID).exists()
    archived = list(site.archive_dir.glob(f"{UID}-*"))
    assert len(archived) == 1
    assert (archived[0] / "home" / "precious.txt").read_text() == "keep me"
    uid_number, _ = ids_for(UID)
    assert site.setquota_calls()[-1] == f"-u {uid_number} 0 0 0 0 /"


def test_a_failure_is_reported_in_provisiond_message(
    native: Slapd, site: Site, tmp_path: Path
) -> None:
    conn = connect(native)
    with running(config_for(tmp_path / "cfg", native, site)):
        dn = add_account(conn, UID, hourly="0", daily="0", weekly="0", monthly="0", yearly="0")
        wait_for(lambda: read(conn, dn).get(RETURN) not in (None, "0"), timeout=30,
                 what=f"{dn} failed")
        entry = read(conn, dn)
    assert entry[RETURN] == "7" and entry["provisiondMode"] == "adding"
    assert entry[MESSAGE].startswith("check snapshot levels: ")
    assert not site.config(UID).exists()


def test_the_native_kind_is_backup_account_with_the_project_names(tmp_path: Path) -> None:
    server = Slapd(directory=tmp_path / "unused")  # only for the config's URI and secret
    native = load_config(write_config(tmp_path / "native", server, {"backup": {"kind": KIND}}))
    stoney = load_config(write_config(tmp_path / "stoney", server, {
        "backup": {"kind": "backup-account"}}))
    spec, base = native.services[0], stoney.services[0]

    assert spec.base == ACCOUNTS
    assert spec.attributes == StateAttributes(
        mode="provisiondMode", state="provisiondState",
        execution_date="provisiondExecutionDate", return_value=RETURN, message=MESSAGE)
    assert spec.sync_filter == (
        "(&(&(objectClass=provisiondBackupAccount)(objectClass=posixAccount)"
        "(objectClass=provisiondProvisioning))"
        "(|(provisiondMode=add)(provisiondMode=modify)(provisiondMode=delete))"
        "(provisiondState=0))")
    assert spec.aggregate_filter.endswith("(provisiondIsActive=TRUE))")

    # Only the names differ: steps, value types, preconditions and vars are the base kind's.
    assert spec.steps == base.steps and spec.roots == base.roots
    assert spec.preconditions == base.preconditions
    assert {k: v for k, v in spec.vars.items() if k != "suffix"} == {
        k: v for k, v in base.vars.items() if k != "suffix"}
    by_name = {value.name: value for value in base.values}
    assert [v.name for v in spec.values] == [v.name for v in base.values]
    for value in spec.values:
        assert dataclasses.replace(value, attribute=by_name[value.name].attribute) == (
            by_name[value.name])

    # Every attribute it reads or writes is in the project schema or in nis/cosine.
    schema = (PROJECT_SCHEMA_DIR / "provisiond.schema").read_text()
    for attribute in spec.ldap_attributes():
        assert attribute in ("uid", "uidNumber", "gidNumber") or (
            f"NAME '{attribute}'" in schema), attribute
