"""The backup-account kind end to end: a real slapd with the stoney compatibility schema, the
engine in-process, the shipped hooks and templates, and real rsnapshot runs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from provisiond.testing.slapd import Slapd
from tests.kinds.backup.support import (
    ACCOUNTS,
    MODE,
    RETURN,
    Site,
    add_account,
    config_for,
    connect,
    ids_for,
    mode_bits,
    mode_of,
    request,
    running,
    wait_failed,
    wait_mode,
)
from tests.support import wait_for, write_config

UID = "1234567"
RSNAPSHOT = "/usr/bin/rsnapshot"


def require_rsnapshot() -> None:
    if not os.access(RSNAPSHOT, os.X_OK):
        pytest.skip("Debian's rsnapshot is not installed (the README's test command installs it)")


def retains(config: Path) -> list[tuple[str, ...]]:
    return [tuple(line.split("\t")[1:]) for line in config.read_text().splitlines()
            if line.startswith("retain\t")]


def schedule_lines(site: Site, uid: str) -> list[str]:
    if not site.schedule.exists():
        return []
    return [line for line in site.schedule.read_text().splitlines()
            if f"rsnapshot.conf.{uid} " in line]


def test_add_creates_everything_and_rsnapshot_backs_up(
    stoney: Slapd, site: Site, tmp_path: Path
) -> None:
    require_rsnapshot()
    conn = connect(stoney)
    with running(config_for(tmp_path / "cfg", stoney, site)):
        dn = add_account(conn, UID, quota="1073741824", daily="7", weekly="4", monthly="6")
        entry = wait_mode(conn, dn, "added")
    assert entry[RETURN] == "0"
    uid_number, gid_number = ids_for(UID)

    chroot, home = site.chroot(UID), site.home(UID)
    assert chroot == site.backup_root / "7" / "567" / "234" / UID
    assert (home.stat().st_uid, home.stat().st_gid) == (uid_number, gid_number)
    assert mode_bits(home) == 0o700
    assert mode_bits(chroot) == 0o755 and chroot.stat().st_uid == os.geteuid()
    assert mode_bits(chroot / "snapshots") == 0o755

    config = site.config(UID)
    text = config.read_text()
    assert retains(config) == [("daily", "7"), ("weekly", "4"), ("monthly", "6")]
    assert f"snapshot_root\t{chroot}/snapshots/\n" in text
    assert f"backup\t{home}/\thome/\n" in text
    assert f"lockfile\t{site.lock_dir}/rsnapshot.{UID}.pid\n" in text
    assert all(" " not in line.split("\t")[0] for line in text.splitlines()
               if line and not line.startswith("#"))
    check = subprocess.run([RSNAPSHOT, "-c", str(config), "configtest"],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0 and "Syntax OK" in check.stdout, check.stderr

    # A real backup of the account's lowest level.
    (home / "documents").mkdir()
    (home / "documents" / "letter.txt").write_text("Dear backup,\n")
    run = subprocess.run([RSNAPSHOT, "-c", str(config), "daily"], capture_output=True,
                         text=True, check=False)
    assert run.returncode == 0, run.stderr
    copy = chroot / "snapshots" / "daily.0" / "home" / "documents" / "letter.txt"
    assert copy.read_text() == "Dear backup,\n"

    # The schedule: the lowest level last, higher levels earlier, one lockfile per account.
    lines = schedule_lines(site, UID)
    assert [line.split()[-1] for line in lines] == ["monthly", "weekly", "daily"]
    for line in lines:
        minute, hour = (int(f) for f in line.split()[:2])
        assert 0 <= minute < 60 and 0 <= hour < 24
        assert line.split("\t")[1] == "root"
        assert f"{RSNAPSHOT} -c {config} " in line

    blocks = 1073741824 // 1024
    assert site.setquota_calls() == [f"-u {uid_number} {blocks} {blocks} 0 0 /"]


def test_modify_changes_retention_and_quota(stoney: Slapd, site: Site, tmp_path: Path) -> None:
    require_rsnapshot()
    conn = connect(stoney)
    with running(config_for(tmp_path / "cfg", stoney, site, quota_soft_percent=90)):
        dn = add_account(conn, UID, quota="1073741824", hourly="0", daily="7", weekly="4",
                         monthly="0", yearly="0")
        wait_mode(conn, dn, "added")
        first = site.config(UID).read_text()
        request(conn, dn, "modify", sstQuota="2147483648", sstBackupIntervalHourly="24",
                sstBackupIntervalDaily="14", sstBackupIntervalWeekly="0",
                sstBackupIntervalYearly="3")
        wait_mode(conn, dn, "modified")
        assert retains(site.config(UID)) == [("hourly", "24"), ("daily", "14"),
                                              ("yearly", "3")]
        assert [line.split()[-1] for line in schedule_lines(site, UID)] == [
            "yearly", "daily", "hourly"]
        # Modifying again with the same values changes no file (idempotent).
        mtime = site.config(UID).stat().st_mtime_ns
        request(conn, dn, "modify")
        wait_mode(conn, dn, "modified")
        assert site.config(UID).stat().st_mtime_ns == mtime
    assert first != site.config(UID).read_text()
    uid_number, _ = ids_for(UID)
    assert site.setquota_calls() == [
        f"-u {uid_number} 943718 1048576 0 0 /",  # soft limit 90 % of the hard limit
        f"-u {uid_number} 1887436 2097152 0 0 /",
        f"-u {uid_number} 1887436 2097152 0 0 /",
    ]


def test_delete_waits_for_inactive_then_archives(
    stoney: Slapd, site: Site, tmp_path: Path
) -> None:
    conn = connect(stoney)
    with running(config_for(tmp_path / "cfg", stoney, site)) as engine:
        # One after the other: see the note in test_inactive_account_leaves_the_schedule.
        dn = add_account(conn, UID)
        wait_mode(conn, dn, "added")
        other = add_account(conn, "7654321")
        wait_mode(conn, other, "added")
        (site.home(UID) / "precious.txt").write_text("keep me")
        assert schedule_lines(site, UID) and schedule_lines(site, "7654321")

        request(conn, dn, "delete")  # still active: must wait, untouched
        wait_for(engine.idle, what="engine idle")
        assert mode_of(conn, dn) == "delete" and site.config(UID).exists()

        request(conn, dn, "delete", sstIsActive="FALSE")
        entry = wait_mode(conn, dn, "deleted")
    assert entry[RETURN] == "0"
    assert not site.config(UID).exists()
    assert not schedule_lines(site, UID) and schedule_lines(site, "7654321")
    assert not site.chroot(UID).exists()
    assert not (site.backup_root / "7" / "567").exists()  # empty shard directories pruned
    archived = list(site.archive_dir.glob(f"{UID}-*"))
    assert len(archived) == 1
    assert (archived[0] / "home" / "precious.txt").read_text() == "keep me"
    uid_number, _ = ids_for(UID)
    assert site.setquota_calls()[-1] == f"-u {uid_number} 0 0 0 0 /"
    assert site.config("7654321").exists() and site.home("7654321").is_dir()


def test_delete_can_remove_the_data(stoney: Slapd, site: Site, tmp_path: Path) -> None:
    conn = connect(stoney)
    with running(config_for(tmp_path / "cfg", stoney, site, on_delete="remove")):
        dn = add_account(conn, UID)
        wait_mode(conn, dn, "added")
        (site.home(UID) / "file").write_text("x")
        request(conn, dn, "delete", sstIsActive="FALSE")
        wait_mode(conn, dn, "deleted")
    assert not site.chroot(UID).exists() and not site.archive_dir.exists()


def test_delete_with_missing_pieces_is_not_an_error(
    stoney: Slapd, site: Site, tmp_path: Path
) -> None:
    conn = connect(stoney)
    with running(config_for(tmp_path / "cfg", stoney, site)):
        dn = add_account(conn, UID)
        wait_mode(conn, dn, "added")
        site.config(UID).unlink()
        shutil.rmtree(site.chroot(UID))
        site.schedule.unlink()
        request(conn, dn, "delete", sstIsActive="FALSE")
        assert wait_mode(conn, dn, "deleted")[RETURN] == "0"
    assert not site.archive_dir.exists() or not any(site.archive_dir.iterdir())


def test_delete_waits_while_rsnapshot_holds_the_lock(
    stoney: Slapd, site: Site, tmp_path: Path
) -> None:
    conn = connect(stoney)
    with running(config_for(tmp_path / "cfg", stoney, site)) as engine:
        dn = add_account(conn, UID)
        wait_mode(conn, dn, "added")
        lock = site.lock_dir / f"rsnapshot.{UID}.pid"
        lock.write_text(f"{os.getpid()}\n")  # a live process "runs rsnapshot"
        request(conn, dn, "delete", sstIsActive="FALSE")
        wait_for(lambda: engine.counters.retried >= 1, what="a retry")
        assert site.chroot(UID).is_dir() and mode_of(conn, dn) == "deleting"
        lock.unlink()
        wait_mode(conn, dn, "deleted")
    assert list(site.archive_dir.glob(f"{UID}-*"))


def test_inactive_account_leaves_the_schedule(stoney: Slapd, site: Site, tmp_path: Path) -> None:
    conn = connect(stoney)
    with running(config_for(tmp_path / "cfg", stoney, site)):
        # Added one after the other. Added together, an account can be missing from the
        # schedule until the next render: the engine drops a job's overlay before it reports
        # `added`, and a render in between sees the entry as neither in flight nor added.
        dns = []
        for uid in ("1234567", "2345678", "3456789"):
            dns.append(add_account(conn, uid))
            wait_mode(conn, dns[-1], "added")
        times = {tuple(line.split()[:2]) for uid in ("1234567", "2345678", "3456789")
                 for line in schedule_lines(site, uid) if line.split()[-1] == "daily"}
        assert len(times) == 3  # staggered: no two accounts start together
        request(conn, dns[1], "modify", sstIsActive="FALSE")
        wait_mode(conn, dns[1], "modified")
    assert not schedule_lines(site, "2345678")
    assert schedule_lines(site, "1234567") and schedule_lines(site, "3456789")
    assert site.config("2345678").exists()  # suspended, not deleted


HOSTILE = [
    ("uid", {"uid": "../../etc"}),
    ("uid", {"uid": "12345"}),
    ("uid", {"uid": "1234567 x"}),
    ("uid", {"uid": "1234567\nbackup\t/etc/\tstolen/"}),
    ("uid", {"uid": "0123456"}),
    ("uidNumber", {"uid_number": "0"}),
    ("gidNumber", {"gid_number": "-5"}),
    ("sstQuota", {"quota": "-1"}),
    ("sstQuota", {"quota": "0"}),
    ("sstQuota", {"quota": "99999999999999999999999"}),
    ("sstBackupIntervalDaily", {"daily": "100"}),
    ("sstBackupIntervalHourly", {"hourly": "-1"}),
    ("sstBackupIntervalYearly", {"yearly": "1000"}),
]


@pytest.mark.parametrize(("attribute", "values"), HOSTILE,
                         ids=[f"{a}-{i}" for i, (a, _) in enumerate(HOSTILE)])
def test_hostile_values_are_rejected_and_nothing_is_written(
    stoney: Slapd, site: Site, tmp_path: Path, attribute: str, values: dict[str, str]
) -> None:
    conn = connect(stoney)
    before = site.written()
    with running(config_for(tmp_path / "cfg", stoney, site, messages=True)):
        fields = dict(values)
        uid = fields.pop("uid", UID)
        dn = add_account(conn, uid, dn=f"cn=hostile,{ACCOUNTS}", messages=True, **fields)
        entry = wait_failed(conn, dn)
    assert entry[MODE] == "adding" and entry["sstProvisioningState"] == "0"
    # the code of the step the value feeds (stoney's table): home dir, quota, rsnapshot config
    expected = {"uid": "5", "uidNumber": "5", "gidNumber": "5", "sstQuota": "6"}
    assert entry[RETURN] == expected.get(attribute, "7")
    message = entry["provisiondMessage"]
    assert message.startswith("validate: ") and f"(attribute {attribute})" in message
    assert "\n" not in message and "\t" not in message
    assert site.written() == before
    assert site.setquota_calls() == []


def test_all_levels_zero_is_refused_with_code_7(stoney: Slapd, site: Site,
                                                 tmp_path: Path) -> None:
    conn = connect(stoney)
    before = site.written()
    with running(config_for(tmp_path / "cfg", stoney, site, messages=True)):
        dn = add_account(conn, UID, messages=True, hourly="0", daily="0", weekly="0",
                         monthly="0", yearly="0")
        entry = wait_failed(conn, dn)
    assert entry[RETURN] == "7" and entry[MODE] == "adding"
    assert entry["provisiondMessage"].startswith("check snapshot levels: ")
    assert "are all 0" in entry["provisiondMessage"]
    assert site.written() == before


def test_lowest_level_of_one_is_kept_as_two(stoney: Slapd, site: Site, tmp_path: Path) -> None:
    require_rsnapshot()
    conn = connect(stoney)
    with running(config_for(tmp_path / "cfg", stoney, site)):
        dn = add_account(conn, UID, hourly="1", daily="1", weekly="0", monthly="1", yearly="0")
        wait_mode(conn, dn, "added")
    assert retains(site.config(UID)) == [("hourly", "2"), ("daily", "1"), ("monthly", "1")]


def test_failing_chroot_hook_then_modify_completes(
    stoney: Slapd, site: Site, tmp_path: Path
) -> None:
    conn = connect(stoney)
    blocker = site.backup_root / UID[-1]
    blocker.write_text("not a directory")  # the shard directory cannot be created
    with running(config_for(tmp_path / "cfg", stoney, site, messages=True)):
        dn = add_account(conn, UID, messages=True)
        entry = wait_failed(conn, dn)
        assert entry[RETURN] == "5" and entry[MODE] == "adding"
        assert entry["sstProvisioningState"] == "0"
        assert entry["provisiondMessage"].startswith("create home in chroot: ")
        assert "not a directory" in entry["provisiondMessage"]
        assert not site.config(UID).exists() and site.setquota_calls() == []

        blocker.unlink()
        request(conn, dn, "modify")  # what the portal (or an operator) does next
        entry = wait_mode(conn, dn, "modified")
    assert entry[RETURN] == "0"
    assert site.home(UID).is_dir() and site.config(UID).exists()
    assert schedule_lines(site, UID)


def test_the_shipped_defaults_load(stoney: Slapd, tmp_path: Path) -> None:
    """`kind: backup-account` with no vars: stoney names, base and paths."""
    from provisiond.config import load_config

    config = load_config(write_config(tmp_path / "cfg", stoney, {
        "backup": {"kind": "backup-account"}}))
    spec = config.services[0]
    assert spec.base == "ou=accounts,ou=backup,ou=services,dc=stoney-cloud,dc=org"
    assert spec.attributes.mode == "sstProvisioningMode" and spec.attributes.message is None
    assert spec.preconditions == {"delete": {"active": False}}
    assert [str(root) for root in spec.roots] == ["/var/backup", "/etc/rsnapshot",
                                                  "/etc/cron.d"]
    suffix = load_config(write_config(tmp_path / "cfg2", stoney, {
        "backup": {"kind": "backup-account", "vars": {"suffix": "dc=example,dc=org"}}}))
    assert suffix.services[0].base == "ou=accounts,ou=backup,ou=services,dc=example,dc=org"
