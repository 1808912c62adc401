"""The iscsi kinds with `backend: scst` end to end: a real slapd, the engine in-process with the
shipped kinds, template and hooks (iscsi-scst-check as the render's validate, iscsi-scst-apply
as its on_change), and the fake scstadmin standing in for SCST (no kernel modules here).
What SCST serves is read from the fake's state, which only scstadmin's operations change."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import ldap3
import pytest

from provisiond.testing.slapd import Slapd
from tests.kinds.iscsi.scst import FakeScst, load_script
from tests.kinds.iscsi.site import DISKS, Site, add_disk, add_lun, add_target, directory
from tests.kinds.iscsi.support import ALLOWED, IQN, OTHER
from tests.kinds.iscsi.test_iscsi_kinds import added, deactivate_and_delete, failed
from tests.support import SyslogCapture, read, request, running, write_config

SECRET = "s3cret-Scst.01"
NEW_SECRET = "n3w.Scst-Secret"
TARGET = f"{IQN}:backup01"

check = load_script("iscsi-scst-check")


class Scene:
    """A site of the iscsi kinds on SCST: the fake scstadmin, the file, the captured syslog."""

    def __init__(self, root: Path, slapd: Slapd) -> None:
        # Site's tgt vars are not used with backend scst: no tgtd is started.
        self.site = Site(root, SimpleNamespace(socket=str(root / "no-tgtd")))  # type: ignore
        self.site.create()
        self.fake = FakeScst(root / "sbin")
        self.scst_dir = root / "scst"
        self.file = self.scst_dir / "scst.conf"
        self.config_dir = root / "cfg"
        self.config_dir.mkdir(parents=True)
        self.syslog = SyslogCapture(self.config_dir / "syslog.sock")
        self.slapd = slapd

    def config(self) -> Path:
        services = self.site.services(backend="scst", scstadmin=str(self.fake.program),
                                      scst_dir=str(self.scst_dir), scst_config=str(self.file))
        return write_config(self.config_dir, self.slapd, services, workers=4)

    def target(self) -> dict[str, Any]:
        return dict(self.fake.targets()[TARGET])

    def logged(self) -> str:
        return self.syslog.text()


@pytest.fixture
def scene(slapd: Slapd, tmp_path: Path) -> Iterator[Scene]:
    made = Scene(tmp_path / "site", slapd)
    yield made
    made.syslog.close()


@pytest.fixture
def conn(slapd: Slapd) -> Iterator[ldap3.Connection]:
    connection = directory(slapd)
    yield connection
    connection.unbind()


def no_secret_anywhere(scene: Scene, conn: ldap3.Connection, *dns: str) -> None:
    for dn in dns:
        entry = read(conn, dn)
        assert SECRET not in str(entry.get("provisiondMessage", ""))
        assert NEW_SECRET not in str(entry.get("provisiondMessage", ""))
    assert SECRET not in scene.logged() and NEW_SECRET not in scene.logged()
    assert all(SECRET not in " ".join(call) and NEW_SECRET not in " ".join(call)
               for call in scene.fake.calls())


@pytest.mark.slow
def test_targets_luns_and_their_changes_reach_scst(scene: Scene,
                                                   conn: ldap3.Connection) -> None:
    with running(scene.config()):
        target = add_target(conn, "backup01", initiators=(ALLOWED, OTHER),
                            portals=("127.0.0.1:3260",), chap=("bsd01", SECRET))
        lun = add_lun(conn, "backup01", "lun1", 1, f"cn=repo01,{DISKS}")
        disk = add_disk(conn, "repo01", "16M")
        for dn in (disk, target, lun):
            added(conn, dn)
        live = scene.target()
        assert live["enabled"] == 1
        assert live["groups"]["provisiond"] == {"luns": {"1": "repo01"},
                                                "initiators": sorted([ALLOWED, OTHER])}
        assert live["attributes"]["IncomingUser"] == [f"bsd01 {SECRET}"]
        assert live["attributes"]["allowed_portal"] == ["127.0.0.1"]
        assert scene.fake.state()["devices"]["repo01"]["filename"] == str(
            scene.site.disks / "repo01.img")
        assert stat.S_IMODE(scene.file.stat().st_mode) == 0o600
        check.check_text(scene.file.read_text())

        # An initiator removed and a new secret: both take effect (scstadmin alone would keep
        # the old ones: it only adds).
        request(conn, target, "modify", provisiondInitiator=ALLOWED,
                provisiondChapSecret=NEW_SECRET)
        added(conn, target, mode="modified")
        live = scene.target()
        assert live["groups"]["provisiond"]["initiators"] == [ALLOWED]
        assert live["attributes"]["IncomingUser"] == [f"bsd01 {NEW_SECRET}"]

        # The LUN deleted: gone from SCST, the target disabled (no LUN), the device closed.
        deactivate_and_delete(conn, lun)
        added(conn, lun, mode="deleted")
        live = scene.target()
        assert live["groups"]["provisiond"]["luns"] == {} and live["enabled"] == 0
        assert scene.fake.state()["devices"] == {}

        # The target deleted: scstadmin -config could not remove it (its group has an
        # initiator); iscsi-scst-apply removes it first.
        deactivate_and_delete(conn, target)
        added(conn, target, mode="deleted")
        assert scene.fake.targets() == {}
        no_secret_anywhere(scene, conn, target, lun, disk)


@pytest.mark.slow
def test_an_apply_that_scst_does_not_take_fails_the_entries(scene: Scene,
                                                             conn: ldap3.Connection) -> None:
    """vdisk_blockio not loaded: scstadmin only warns and exits 0; the live configuration read
    back lacks the LUN, so the entries of that render fail with 32 and the apply stays
    pending."""
    state = scene.fake.state()
    state["handlers"] = ["vdisk_fileio"]
    scene.fake.set_state(state)
    with running(scene.config()):
        disk = add_disk(conn, "repo01")
        added(conn, disk)
        target = add_target(conn, "backup01", initiators=(ALLOWED,), chap=("bsd01", SECRET))
        lun = add_lun(conn, "backup01", "lun1", 1, disk)
        entry = failed(conn, lun)
        assert entry["provisiondReturnValue"] == "32"
        assert "live configuration differs" in entry["provisiondMessage"]
        assert "LUN: missing" in entry["provisiondMessage"]
        no_secret_anywhere(scene, conn, target, lun)
