"""The iSCSI kinds' `unique:` on a real slapd and a REAL tgtd: a LUN number, an IQN or a CHAP
user another entry of the one targets file has fails that entry alone (30, naming the other),
and the file keeps serving every other target and LUN. And bracketed IPv6 portals, which the
kinds document, are accepted (a hostile one is not)."""

from __future__ import annotations

from pathlib import Path

import ldap3
import pytest

from provisiond.config import ConfigError, load_config
from provisiond.testing.slapd import Slapd
from tests.kinds.iscsi import test_iscsi_kinds as kinds
from tests.kinds.iscsi.site import (
    Site,
    _add,
    add_disk,
    add_lun,
    add_target,
    target_dn,
)
from tests.kinds.iscsi.support import ALLOWED, IQN
from tests.kinds.iscsi.tgt import Tgtd
from tests.support import running

SECRET = "s3cret-Secret1"
site, conn = kinds.site, kinds.conn  # the fixtures
added, failed = kinds.added, kinds.failed


def add_target_as(conn: ldap3.Connection, name: str, iqn: str,
                  chap: tuple[str, str] | None = None) -> str:
    attributes = {"cn": name, "provisiondIqn": iqn, "provisiondInitiator": [ALLOWED]}
    if chap:
        attributes["provisiondChapUser"], attributes["provisiondChapSecret"] = chap
    return _add(conn, target_dn(name), ["provisiondIscsiTarget"], attributes)


@pytest.mark.slow
def test_a_duplicate_lun_number_fails_only_that_lun(
        slapd: Slapd, site: Site, conn: ldap3.Connection, tgtd: Tgtd, tmp_path: Path) -> None:
    with running(site.config(slapd, tmp_path / "cfg")):
        disks = [add_disk(conn, f"repo0{i}") for i in (1, 2, 3)]
        target = add_target(conn, "backup01", initiators=(ALLOWED,))
        first = add_lun(conn, "backup01", "lun1", 1, disks[0])
        for dn in (*disks, target, first):
            added(conn, dn)
        twice = add_lun(conn, "backup01", "lun1b", 1, disks[1])
        other = add_lun(conn, "backup01", "lun2", 2, disks[2])
        entry = failed(conn, twice)
        added(conn, other)
        assert entry["provisiondReturnValue"] == "30", entry
        assert (f'value "lun": 1 is already used by cn=lun1,{target_dn("backup01")} below the '
                "same parent, and it is provisioned with it") in entry["provisiondMessage"]
        text = site.config_file.read_text()
        assert text.count("lun 1 ") == 1 and "repo02" not in text and "lun 2 " in text
        shown = tgtd.show()  # the target and both its other LUNs are served
        assert f"{IQN}:backup01" in shown and "LUN: 1" in shown and "LUN: 2" in shown
        assert "repo02" not in shown and "repo03" in shown
        # the same number under another target is fine
        second = add_target(conn, "backup02", initiators=(ALLOWED,))
        elsewhere = add_lun(conn, "backup02", "lun1", 1, disks[1])
        added(conn, second)
        added(conn, elsewhere)


def test_two_new_luns_with_one_number_below_one_target_the_dn_sorting_first_keeps_it(
        slapd: Slapd, site: Site, conn: ldap3.Connection, tgtd: Tgtd, tmp_path: Path) -> None:
    """Written in one burst, before either is examined: the directory's requested entries
    below the same target are compared (a rule per parent searches below the parent only),
    and a LUN with that number below another target is not. With several workers the loser
    is claimed (to report its failure) while the winner may be examined: the claim marks it
    failed at once, so the winner does not take it for one being provisioned."""
    disks = [add_disk(conn, f"repo1{i}") for i in (1, 2, 3)]
    targets = [add_target(conn, name, initiators=(ALLOWED,)) for name in ("burst01", "burst02")]
    later = add_lun(conn, "burst01", "lun1b", 1, disks[1])
    first = add_lun(conn, "burst01", "lun1a", 1, disks[0])  # written after, sorts first
    elsewhere = add_lun(conn, "burst02", "lun1a", 1, disks[2])
    with running(site.config(slapd, tmp_path / "cfg")):
        for dn in (*disks, *targets, first, elsewhere):
            added(conn, dn)
        entry = failed(conn, later)
    assert entry["provisiondReturnValue"] == "30", entry
    assert f'value "lun": 1 is already used by {first} below the same parent' in \
        entry["provisiondMessage"], entry


@pytest.mark.slow
def test_a_duplicate_iqn_or_chap_user_fails_only_that_target(
        slapd: Slapd, site: Site, conn: ldap3.Connection, tgtd: Tgtd, tmp_path: Path) -> None:
    with running(site.config(slapd, tmp_path / "cfg")):
        first = add_target_as(conn, "backup01", f"{IQN}:backup01", chap=("user1", SECRET))
        added(conn, first)
        same_iqn = add_target_as(conn, "backup00", f"{IQN}:backup01")
        same_user = add_target_as(conn, "backup02", f"{IQN}:backup02",
                                  chap=("user1", "0ther-Secret2"))
        fine = add_target_as(conn, "backup03", f"{IQN}:backup03", chap=("user3", SECRET))
        entry = failed(conn, same_iqn)
        assert entry["provisiondReturnValue"] == "30", entry
        assert (f'value "iqn": {IQN}:backup01 is already used by {first}, and it is '
                "provisioned with it") in entry["provisiondMessage"]
        entry = failed(conn, same_user)
        assert entry["provisiondReturnValue"] == "30", entry
        assert f'value "chap_user": user1 is already used by {first}' in entry[
            "provisiondMessage"]
        assert "0ther-Secret2" not in entry["provisiondMessage"]
        added(conn, fine)
        shown = tgtd.show()
        assert f"{IQN}:backup01" in shown and f"{IQN}:backup03" in shown
        assert f"{IQN}:backup02" not in shown
        assert site.config_file.read_text().count(f"target {IQN}:backup01\n") == 1


@pytest.mark.slow
def test_an_ipv6_portal_is_served_and_a_hostile_one_refused(
        slapd: Slapd, site: Site, conn: ldap3.Connection, tgtd: Tgtd, tmp_path: Path) -> None:
    config = site.config(slapd, tmp_path / "cfg", allowed_portals=["127.0.0.1", "[::1]"])
    with running(config):
        good = add_target(conn, "backup01", initiators=(ALLOWED,),
                          portals=(f"[::1]:{tgtd.port}",))
        added(conn, good)
        assert f"portal [::1]:{tgtd.port}\n" in site.config_file.read_text()
        assert f"{IQN}:backup01" in tgtd.show()
        hostile = ("[::1];reboot", "[::1]\tx", "[::1] :3260", "[::1]:3260]", "[::g]")
        for number, portal in enumerate(hostile):
            bad = add_target(conn, f"bad{number}", portals=(portal,))
            entry = failed(conn, bad)
            assert entry["provisiondReturnValue"] == "30", (portal, entry)
            assert entry["provisiondMessage"].startswith("validate: value \"portals\""), entry
        assert ";" not in site.config_file.read_text()


@pytest.mark.parametrize("portal", ["[::1]", "[2001:db8::10]:3260"])
def test_an_ipv6_allowed_portal_loads(slapd: Slapd, site: Site, tmp_path: Path,
                                      portal: str) -> None:
    config = load_config(site.config(slapd, tmp_path / "cfg", allowed_portals=[portal]))
    assert {spec.name: spec.vars["allowed_portals"] for spec in config.services
            if spec.name.startswith("iscsi")} == {"iscsi-target": [portal], "iscsi-lun": [portal]}


def test_a_hostile_allowed_portal_stops_the_load(slapd: Slapd, site: Site,
                                                 tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(site.config(slapd, tmp_path / "cfg", allowed_portals=["[::1] x"]))
    assert caught.value.key.endswith(".vars.allowed_portals[0]")
    assert caught.value.reason.startswith("does not match"), caught.value.reason

