"""A test site for the iscsi kinds: a real slapd with the storage subtrees, the two shipped
kinds, and a small `disk-repository` stand-in service (a hook making a sparse file and
reporting it as the disk's `device`), so these tests do not depend on the LVM kind."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ldap3

from provisiond.testing.slapd import Slapd
from tests.kinds.iscsi.support import IQN
from tests.kinds.iscsi.tgt import TGTADM, Tgtd
from tests.support import connect, write_config

STORAGE = "ou=storage,dc=example,dc=org"
DISKS = f"ou=disks,{STORAGE}"
TARGETS = f"ou=targets,ou=iscsi,{STORAGE}"
NAMES = {"mode": "provisiondMode", "state": "provisiondState",
         "execution_date": "provisiondExecutionDate", "return_value": "provisiondReturnValue",
         "message": "provisiondMessage"}
FAKE_DISK = """#!/bin/sh
# A disk repository stand-in: a sparse file is the "block device" (tgt serves files too).
set -e
case "$1" in
  create) sleep "$5"; truncate -s "$4" "$2/$3.img"; echo "provisiond-set device=$2/$3.img" ;;
  delete) rm -f "$2/$3.img" ;;
esac
"""
# Counts what the apply hook asks tgtd (mode and op only: never an account's password).
COUNTING_TGTADM = """#!/bin/sh
echo "$4 $6" >> "${0%/*}/tgtadm.log"
exec %s "$@"
"""


@dataclass
class Site:
    root: Path
    tgtd: Tgtd

    @property
    def disks(self) -> Path:
        return self.root / "disks"

    @property
    def tgt_dir(self) -> Path:
        return self.root / "tgt"

    @property
    def config_file(self) -> Path:
        return self.tgt_dir / "targets.conf"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def create(self) -> Site:
        for directory in (self.disks, self.tgt_dir, self.bin):
            directory.mkdir(parents=True, exist_ok=True)
        (self.bin / "fake-disk").write_text(FAKE_DISK)
        (self.bin / "tgtadm").write_text(COUNTING_TGTADM.replace("%s", TGTADM))
        for program in ("fake-disk", "tgtadm"):
            (self.bin / program).chmod(0o755)
        return self

    def applies(self) -> int:
        """Apply runs so far: each reads the targets twice (before and to verify)."""
        log = self.bin / "tgtadm.log"
        lines = log.read_text().splitlines() if log.exists() else []
        return lines.count("target show") // 2

    def vars(self, **overrides: Any) -> dict[str, Any]:
        return {"base": TARGETS, "allowed_portals": ["127.0.0.1"],
                "state_dir": str(self.root / "state-iscsi"), "tgt_dir": str(self.tgt_dir),
                "tgtadm": str(self.bin / "tgtadm"), "tgt_socket": self.tgtd.socket,
                "scst_dir": str(self.root / "scst"),
                "scst_config": str(self.root / "scst" / "scst.conf"), **overrides}

    def services(self, disk_delay: float = 0.0, **overrides: Any) -> dict[str, Any]:
        vars_ = self.vars(**overrides)
        disk = [str(self.bin / "fake-disk"), "create", str(self.disks), "{{ values.name }}",
                "{{ values.size }}", str(disk_delay)]
        return {
            "iscsi-target": {"kind": "iscsi-target", "vars": vars_},
            "iscsi-lun": {"kind": "iscsi-lun", "vars": vars_},
            "disk-repository": {
                "base": DISKS, "filter": "(objectClass=provisiondDiskRepository)",
                "attributes": NAMES,
                "values": {"name": {"attribute": "cn", "type": "posix_name"},
                           "size": {"attribute": "provisiondSize", "type": "bytes"},
                           "active": {"attribute": "provisiondIsActive", "type": "boolean"}},
                "outputs": {"device": {"attribute": "provisiondDevicePath", "type": "path"}},
                "active": "(provisiondIsActive=TRUE)",
                "preconditions": {"delete": {"active": False}},
                "dependents": {"code": 24},
                "roots": [str(self.disks)],
                "steps": {"add": [{"name": "create", "code": 21, "hook": disk}],
                          "modify": "add",
                          "delete": [{"name": "delete", "code": 25, "hook": [
                              str(self.bin / "fake-disk"), "delete", str(self.disks),
                              "{{ values.name }}"]}]},
            },
        }

    def config(self, slapd: Slapd, directory: Path, **kwargs: Any) -> Path:
        return write_config(directory, slapd, self.services(**kwargs), workers=4)


def directory(slapd: Slapd) -> ldap3.Connection:
    conn = connect(slapd)
    for dn in (STORAGE, DISKS, f"ou=iscsi,{STORAGE}", TARGETS):
        assert conn.add(dn, ["organizationalUnit"], {"ou": dn.split(",")[0][3:]}), conn.result
    return conn


def _add(conn: ldap3.Connection, dn: str, classes: list[str], attributes: dict[str, Any]) -> str:
    assert conn.add(dn, [*classes, "provisiondProvisioning", "provisiondStatus"], {
        "provisiondMode": "add", "provisiondState": "0", "provisiondExecutionDate": "0",
        "provisiondIsActive": "TRUE", **attributes}), conn.result
    return dn


def add_disk(conn: ldap3.Connection, name: str, size: str = "8M") -> str:
    return _add(conn, f"cn={name},{DISKS}", ["provisiondDiskRepository"], {
        "cn": name, "provisiondBackend": "lvm", "provisiondPool": "vg0",
        "provisiondVolumeType": "block", "provisiondSize": size})


def target_dn(name: str) -> str:
    return f"cn={name},{TARGETS}"


def add_target(conn: ldap3.Connection, name: str, *, initiators: tuple[str, ...] = (),
               portals: tuple[str, ...] = (), chap: tuple[str, str] | None = None) -> str:
    attributes: dict[str, Any] = {"cn": name, "provisiondIqn": f"{IQN}:{name}"}
    if initiators:
        attributes["provisiondInitiator"] = list(initiators)
    if portals:
        attributes["provisiondPortal"] = list(portals)
    if chap:
        attributes["provisiondChapUser"], attributes["provisiondChapSecret"] = chap
    return _add(conn, target_dn(name), ["provisiondIscsiTarget"], attributes)


def add_lun(conn: ldap3.Connection, target: str, name: str, number: int, disk: str) -> str:
    return _add(conn, f"cn={name},{target_dn(target)}", ["provisiondIscsiLun"], {
        "cn": name, "provisiondLunNumber": str(number), "provisiondDisk": disk})
