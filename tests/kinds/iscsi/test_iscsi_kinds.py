"""The iscsi-target and iscsi-lun kinds end to end: a real slapd, the engine in-process with
the shipped kinds, templates and hook, a REAL private tgtd, and the REAL libiscsi initiator."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import ldap3
import pytest

from provisiond.testing.slapd import Slapd
from tests.kinds.iscsi.site import (
    DISKS,
    Site,
    add_disk,
    add_lun,
    add_target,
    directory,
)
from tests.kinds.iscsi.support import ALLOWED, IQN, OTHER
from tests.kinds.iscsi.tgt import Tgtd
from tests.support import read, request, run_cli, running, wait_for

SECRET = "s3cret-Secret1"
NEW_SECRET = "n3w.Secret-777"


@pytest.fixture
def site(tgtd: Tgtd, tmp_path: Path) -> Site:
    return Site(tmp_path / "site", tgtd).create()


@pytest.fixture
def conn(slapd: Slapd) -> Iterator[ldap3.Connection]:
    connection = directory(slapd)
    yield connection
    connection.unbind()


def wait_state(conn: ldap3.Connection, dn: str, mode: str, timeout: float = 60) -> dict[str, str]:
    """The entry once it reached `mode`, or once it failed (a ReturnValue other than 0)."""
    def settled() -> dict[str, str] | None:
        entry = read(conn, dn)
        failed = entry.get("provisiondReturnValue", "0") != "0"
        return entry if entry.get("provisiondMode") == mode or failed else None
    return wait_for(settled, timeout, f"{dn} {mode}")


def added(conn: ldap3.Connection, dn: str, timeout: float = 60,
          mode: str = "added") -> dict[str, str]:
    entry = wait_state(conn, dn, mode, timeout)
    assert entry.get("provisiondMode") == mode, entry
    return entry


def failed(conn: ldap3.Connection, dn: str, timeout: float = 60) -> dict[str, str]:
    entry = wait_state(conn, dn, "-", timeout)
    assert entry.get("provisiondReturnValue", "0") != "0", entry
    return entry


def deactivate_and_delete(conn: ldap3.Connection, dn: str) -> None:
    request(conn, dn, "delete", provisiondIsActive="FALSE")


def backup01(conn: ldap3.Connection, chap: tuple[str, str] | None = None
             ) -> tuple[str, str, str]:
    """Disk repo01, target backup01 admitting ALLOWED (with `chap`), its LUN 1 on repo01:
    their DNs once all three are added."""
    disk = add_disk(conn, "repo01")
    target = add_target(conn, "backup01", initiators=(ALLOWED,), chap=chap)
    lun = add_lun(conn, "backup01", "lun1", 1, disk)
    for dn in (disk, target, lun):
        added(conn, dn)
    return disk, target, lun


def test_a_lun_in_the_same_burst_as_its_disk_waits_then_an_initiator_reads_it(
    slapd: Slapd, site: Site, conn: ldap3.Connection, tgtd: Tgtd, tmp_path: Path
) -> None:
    with running(site.config(slapd, tmp_path / "cfg", disk_delay=0.5)):
        # The target, its LUN, then the LUN's disk (slow to make): the LUN waits for it.
        target = add_target(conn, "backup01", initiators=(ALLOWED,), portals=("127.0.0.1",))
        lun = add_lun(conn, "backup01", "lun1", 1, f"cn=repo01,{DISKS}")
        disk = add_disk(conn, "repo01", "24M")
        for dn in (disk, target, lun):
            added(conn, dn)
        iqn = f"{IQN}:backup01"
        assert f"Target:{iqn}" in tgtd.discover(ALLOWED)
        assert tgtd.size(ALLOWED, iqn, 1) == 24 << 20
        assert tgtd.login(OTHER, iqn, 1).returncode == 10
        assert site.config_file.stat().st_mode & 0o777 == 0o600
        assert site.applies() <= 3

        # The LUN deleted: gone from tgtd; then the target.
        deactivate_and_delete(conn, lun)
        wait_for(lambda: read(conn, lun).get("provisiondMode") == "deleted", 30, "lun deleted")
        assert "Lun:1" not in tgtd.discover(ALLOWED)
        assert tgtd.size(ALLOWED, iqn, 1) is None
        deactivate_and_delete(conn, target)
        wait_for(lambda: read(conn, target).get("provisiondMode") == "deleted", 30)
        assert iqn not in tgtd.show()


def test_chap_secret_modified_the_old_one_is_refused(
    slapd: Slapd, site: Site, conn: ldap3.Connection, tgtd: Tgtd, tmp_path: Path
) -> None:
    with running(site.config(slapd, tmp_path / "cfg")):
        disk, target, lun = backup01(conn, chap=("bsd01", SECRET))
        iqn = f"{IQN}:backup01"
        assert tgtd.login(ALLOWED, iqn, 1, chap=("bsd01", "wrong-secret-1")).returncode == 10
        assert tgtd.login(ALLOWED, iqn, 1, chap=("bsd01", SECRET)).returncode == 0

        request(conn, target, "modify", provisiondChapSecret=NEW_SECRET)
        added(conn, target, mode="modified")
        assert tgtd.login(ALLOWED, iqn, 1, chap=("bsd01", SECRET)).returncode == 10
        assert tgtd.login(ALLOWED, iqn, 1, chap=("bsd01", NEW_SECRET)).returncode == 0
        # Only a listed initiator, even with the right secret.
        assert tgtd.login(OTHER, iqn, 1, chap=("bsd01", NEW_SECRET)).returncode == 10


def test_a_target_with_luns_cannot_be_deleted_until_they_are(
    slapd: Slapd, site: Site, conn: ldap3.Connection, tgtd: Tgtd, tmp_path: Path
) -> None:
    with running(site.config(slapd, tmp_path / "cfg")):
        disk, target, lun = backup01(conn)
        deactivate_and_delete(conn, target)
        refused = failed(conn, target)
        assert refused["provisiondReturnValue"] == "34"
        assert "dependents" in refused["provisiondMessage"]
        # The disk is refused too while the LUN names it (the disk kind's dependents).
        deactivate_and_delete(conn, disk)
        assert failed(conn, disk)["provisiondReturnValue"] == "24"
        assert tgtd.size(ALLOWED, f"{IQN}:backup01", 1) == 8 << 20

        deactivate_and_delete(conn, lun)
        wait_for(lambda: read(conn, lun).get("provisiondMode") == "deleted", 30)
        request(conn, target, "delete")
        wait_for(lambda: read(conn, target).get("provisiondMode") == "deleted", 30)
        assert f"{IQN}:backup01" not in tgtd.show()


def test_a_portal_outside_allowed_portals_fails_the_target(
    slapd: Slapd, site: Site, conn: ldap3.Connection, tgtd: Tgtd, tmp_path: Path
) -> None:
    with running(site.config(slapd, tmp_path / "cfg")):
        bad = add_target(conn, "backup01", initiators=(ALLOWED,), portals=("192.0.2.10:3260",))
        entry = failed(conn, bad)
        assert entry["provisiondReturnValue"] == "31"
        assert "192.0.2.10:3260 is not one of this host's" in entry["provisiondMessage"]
        good = add_target(conn, "backup02", initiators=(ALLOWED,),
                          portals=(f"127.0.0.1:{tgtd.port}",))
        added(conn, good)
        assert f"portal 127.0.0.1:{tgtd.port}" in site.config_file.read_text()
        assert "192.0.2.10" not in site.config_file.read_text()


def test_a_lun_whose_disk_device_is_missing_fails_with_33_and_stays_out_of_the_file(
    slapd: Slapd, site: Site, conn: ldap3.Connection, tgtd: Tgtd, tmp_path: Path
) -> None:
    with running(site.config(slapd, tmp_path / "cfg")):
        disk = add_disk(conn, "repo01")
        target = add_target(conn, "backup01", initiators=(ALLOWED,))
        for dn in (disk, target):
            added(conn, dn)
        (site.disks / "repo01.img").unlink()  # the device went away
        lun = add_lun(conn, "backup01", "lun1", 1, disk)
        entry = failed(conn, lun)
        assert entry["provisiondReturnValue"] == "33"
        assert "repo01.img does not exist" in entry["provisiondMessage"]
        assert "lun 1" not in site.config_file.read_text()
        assert "Lun:1" not in tgtd.discover(ALLOWED)


def test_chap_needs_both_user_and_secret(
    slapd: Slapd, site: Site, conn: ldap3.Connection, tmp_path: Path
) -> None:
    with running(site.config(slapd, tmp_path / "cfg")):
        half = add_target(conn, "backup01", initiators=(ALLOWED,))
        added(conn, half)
        assert conn.modify(half, {"provisiondChapSecret": [(ldap3.MODIFY_REPLACE, [SECRET])]})
        request(conn, half, "modify")
        entry = failed(conn, half)
        assert entry["provisiondReturnValue"] == "31"
        assert "CHAP needs both" in entry["provisiondMessage"]
        assert SECRET not in entry["provisiondMessage"]


def test_an_invalid_value_fails_with_30_and_reaches_no_file(
    slapd: Slapd, site: Site, conn: ldap3.Connection, tmp_path: Path
) -> None:
    with running(site.config(slapd, tmp_path / "cfg")):
        good = add_target(conn, "backup02", initiators=(ALLOWED,))
        added(conn, good)
        bad = add_target(conn, "backup01", initiators=("iqn.2026-12.org.example:x ALL",))
        entry = failed(conn, bad)
        assert entry["provisiondReturnValue"] == "30"
        assert "x ALL" not in site.config_file.read_text()


@pytest.mark.slow
def test_a_hundred_targets_with_two_luns_each_at_once(
    slapd: Slapd, site: Site, conn: ldap3.Connection, tgtd: Tgtd, tmp_path: Path
) -> None:
    with running(site.config(slapd, tmp_path / "cfg")):
        started = time.monotonic()
        dns = []
        for i in range(100):
            name = f"t{i:03d}"
            dns.append(add_target(conn, name, initiators=(ALLOWED,)))
            for lun in (1, 2):
                disk = add_disk(conn, f"d{i:03d}l{lun}", "1M")
                dns += [disk, add_lun(conn, name, f"lun{lun}", lun, disk)]
        for dn in dns:
            added(conn, dn, timeout=300)
        elapsed = time.monotonic() - started
        shown = tgtd.show()
        assert shown.count("Target ") == 100
        assert shown.count("Backing store path: /") == 200
        applies = site.applies()
        print(f"500 entries (100 targets, 200 LUNs, 200 disks) in {elapsed:.1f}s, "
              f"{applies} applies")
        # A handful of applies, not 300: the engine renders once for every job parked at
        # the file (at most 2 s after the first); 12 on a quiet machine, about 20 at load 9.
        assert applies <= 30, applies
        assert tgtd.size(ALLOWED, f"{IQN}:t099", 2) == 1 << 20


def test_status_shows_each_targets_sessions_and_never_the_secret(
    slapd: Slapd, site: Site, conn: ldap3.Connection, tgtd: Tgtd, tmp_path: Path
) -> None:
    config = site.config(slapd, tmp_path / "cfg")
    with running(config):
        disk, target, lun = backup01(conn, chap=("bsd01", SECRET))
    iqn = f"{IQN}:backup01"
    perf = tgtd.open_session(ALLOWED, iqn, chap=("bsd01", SECRET))
    try:
        result = run_cli("--config", str(config), "status")
    finally:
        perf.kill()
        perf.wait()
    text = result.stdout
    section = text.split("service iscsi-target")[1].split("\nservice ")[0]
    assert f"  live       {iqn}: session from {ALLOWED} at 127.0.0.1" in section, text
    assert SECRET not in text + result.stderr


def test_an_invalid_chap_secret_is_refused_without_showing_it(
    slapd: Slapd, site: Site, conn: ldap3.Connection, tmp_path: Path
) -> None:
    bad = "short-secret"[:11]  # 11 characters: one too few
    config = site.config(slapd, tmp_path / "cfg")
    with running(config):
        target = add_target(conn, "backup01", initiators=(ALLOWED,), chap=("bsd01", bad))
        entry = failed(conn, target)
        assert entry["provisiondReturnValue"] == "30"
        assert "provisiondChapSecret" in entry["provisiondMessage"]
        assert bad not in entry["provisiondMessage"]


def test_render_previews_a_target_without_its_secret(
    slapd: Slapd, site: Site, conn: ldap3.Connection, tmp_path: Path
) -> None:
    config = site.config(slapd, tmp_path / "cfg")
    with running(config):
        disk, target, lun = backup01(conn, chap=("bsd01", SECRET))
    request(conn, target, "modify", provisiondChapSecret=NEW_SECRET)
    result = run_cli("--config", str(config), "render", target)
    assert "targets.conf" in result.stdout, result.stdout + result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert NEW_SECRET not in result.stdout + result.stderr
