"""The reference graph (issue 11.2) on a real slapd, with small test kinds: disks (a hook that
reports the device it made), LUNs naming a disk, groups naming several disks, and operations
below a disk (a parent reference). A child waits for its parent instead of failing, fails
with the reference's code and a reason when the parent cannot come, a referenced disk is not
deleted under its LUNs, and files of all LUNs follow a modified disk."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ldap3
import pytest

from provisiond.config import load_config
from provisiond.core.engine import Engine
from provisiond.testing.slapd import Slapd
from tests.support import (
    SyslogCapture,
    connect,
    read,
    request,
    running,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.slow

DISKS = "ou=disks,dc=example,dc=org"
LUNS = "ou=luns,dc=example,dc=org"
GROUPS = "ou=groups,dc=example,dc=org"
NAMES = {"mode": "provisiondMode", "state": "provisiondState",
         "execution_date": "provisiondExecutionDate", "return_value": "provisiondReturnValue",
         "message": "provisiondMessage"}
OBJECT = ["provisiondDemoItem", "provisiondProvisioning"]
LUN_CODE, DEPENDENTS_CODE = 21, 31

# Each run appends "WHAT NAME ARG" to runs.log; a disk named slow* takes a while, bad* fails.
HOOK = """#!/bin/sh
case "$2" in slow*) sleep 1 ;; esac
echo "$1 $2 $4" >> "$3/runs.log"
case "$2" in bad*) echo "no space left" >&2; exit 5 ;; esac
[ "$1" = disks ] && echo "provisiond-set device=/dev/tank/$2"
exit 0
"""


def kinds(root: Path) -> dict[str, Any]:
    name = {"attribute": "cn", "type": "posix_name"}
    disk_ref = {"attribute": "provisiondReference", "type": "dn", "under": DISKS}
    hook = ["ref-hook", "{{ service }}", "{{ values.name }}", str(root)]
    all_luns = {"name": "targets", "code": 8, "render": {
        "template": "targets.j2", "path": f"{root}/targets.conf", "scope": "all"}}
    return {
        "disks": {
            # not the operations below a disk (a service's `scope` is not what keeps them
            # out: the change stream reads the whole subtree)
            "base": DISKS, "filter": "(&(objectClass=provisiondDemoItem)(!(description=op)))",
            "attributes": NAMES, "vars": {"pool": "tank"},
            "values": {"name": name, "size": {"attribute": "provisiondSize", "type": "bytes"},
                       "pool": {"attribute": "provisiondOwner", "type": "posix_name",
                                "required": False, "default": "tank"},
                       "active": {"attribute": "provisiondIsActive", "type": "boolean",
                                  "required": False, "default": True}},
            "outputs": {"device": {"attribute": "provisiondPath", "type": "path"}},
            "active": "(!(provisiondIsActive=FALSE))",
            "dependents": {"code": DEPENDENTS_CODE, "fixed": ["pool"]},
            "steps": {"add": [{"name": "make", "code": 5, "hook": hook}], "modify": "add",
                      "delete": [{"name": "unmake", "code": 5, "hook": hook}]},
        },
        "luns": {
            "base": LUNS, "filter": "(objectClass=provisiondDemoItem)", "attributes": NAMES,
            "values": {"name": name, "disk": disk_ref},
            "references": {"disk": {"service": "disks", "code": LUN_CODE}},
            "roots": [str(root)],
            "steps": {"add": [
                {"name": "file", "code": 7, "render": {
                    "template": "lun.j2", "path": f"{root}/luns/{{{{ values.name }}}}.conf"}},
                {"name": "export", "code": 5,
                 "hook": [*hook, "{{ refs.disk.outputs.device }}"]},
                all_luns], "delete": [all_luns]},
        },
        "groups": {
            "base": GROUPS, "filter": "(objectClass=provisiondDemoItem)", "attributes": NAMES,
            "values": {"name": name, "disks": {**disk_ref, "multi": True}},
            "references": {"disks": "disks"},
            "roots": [str(root)],
            "steps": {"add": [{"name": "file", "code": 7, "render": {
                "template": "group.j2", "path": f"{root}/groups/{{{{ values.name }}}}.conf"}}]},
        },
        "ops": {
            "base": "dc=example,dc=org",
            "filter": "(&(objectClass=provisiondDemoItem)(description=op))",
            "attributes": NAMES, "values": {"name": name},
            "references": {"disk": {"parent": "disks"}},
            "roots": [str(root)],
            "steps": {"add": [{"name": "file", "code": 7, "render": {
                "template": "op.j2", "path": f"{root}/ops/{{{{ values.name }}}}.conf"}}]},
        },
    }


def configure(tmp_path: Path, slapd: Slapd, **retry: float) -> tuple[Path, Path]:
    """(the configuration, the root the kinds write to); the OUs exist."""
    root = tmp_path / "root"
    root.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    hook = bin_dir / "ref-hook"
    hook.write_text(HOOK)
    hook.chmod(0o755)
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "lun.j2").write_text(
        "{{ values.name }} on {{ refs.disk.values.name }} device={{ refs.disk.outputs.device }}"
        " pool={{ refs.disk.vars.pool }} service={{ refs.disk.service }}"
        " dn={{ refs.disk.dn }}\n")
    (templates / "targets.j2").write_text(
        "{% for lun in entries %}{{ lun.values.name }} {{ lun.refs.disk.values.name }} "
        "{{ lun.refs.disk.values.size }} {{ lun.refs.disk.outputs.device }}\n{% endfor %}")
    (templates / "group.j2").write_text(
        "{% for disk in refs.disks %}{{ disk.values.name }}={{ disk.outputs.device }} "
        "{% endfor %}\n")
    (templates / "op.j2").write_text(
        "{{ values.name }} on {{ refs.disk.values.name }} at {{ refs.disk.outputs.device }}\n")
    conn = connect(slapd)
    for ou in (DISKS, LUNS, GROUPS):
        assert conn.add(ou, ["organizationalUnit"], {"ou": ou.split(",")[0][3:]}), conn.result
    config = write_config(tmp_path / "cfg", slapd, kinds(root), templates=[str(templates)],
                          hooks={"path": [str(bin_dir)]},
                          retry={"limit": 3, "initial": 0.2, "maximum": 1, **retry})
    return config, root


def add(conn: ldap3.Connection, dn: str, **attributes: Any) -> str:
    assert conn.add(dn, OBJECT, {"provisiondMode": "add", "provisiondState": "0",
                                 "provisiondExecutionDate": "0", **attributes}), conn.result
    return dn


def disk(conn: ldap3.Connection, name: str, **attributes: Any) -> str:
    return add(conn, f"cn={name},{DISKS}", provisiondSize="10M", **attributes)


def lun(conn: ldap3.Connection, name: str, disk_dn: str) -> str:
    return add(conn, f"cn={name},{LUNS}", provisiondReference=disk_dn)


def reaches(conn: ldap3.Connection, dn: str, holds: Callable[[dict[str, str]], bool],
            what: str) -> dict[str, str]:
    """The entry once `holds` holds for it."""
    return wait_for(lambda: (lambda e: e if holds(e) else None)(read(conn, dn)), what=what)


def outcome(conn: ldap3.Connection, dn: str) -> dict[str, str]:
    """The entry once it has an outcome (a ReturnValue)."""
    return reaches(conn, dn, lambda e: bool(e.get("provisiondReturnValue")),
                   f"an outcome of {dn}")


def provisioned(conn: ldap3.Connection, dn: str) -> str:
    assert outcome(conn, dn)["provisiondReturnValue"] == "0", read(conn, dn)
    return dn


def runs(root: Path) -> list[str]:
    log = root / "runs.log"
    return log.read_text().splitlines() if log.exists() else []


@contextmanager
def logged(config: Path) -> Iterator[tuple[Engine, SyslogCapture]]:
    syslog = SyslogCapture(config.parent / "syslog.sock")
    try:
        with running(config) as engine:
            yield engine, syslog
    finally:
        syslog.close()


def test_a_child_added_with_its_parent_waits_and_completes_after_it(
        slapd: Slapd, tmp_path: Path) -> None:
    # A backoff this long would outlast the wait below: the child must be woken by its
    # parent's success, not found again by a re-check.
    config, root = configure(tmp_path, slapd, initial=30, maximum=60)
    conn = connect(slapd)
    with logged(config) as (engine, syslog):
        parent = disk(conn, "slow1")
        child = lun(conn, "l1", parent)  # the same burst: the disk is not made yet
        assert outcome(conn, child)["provisiondReturnValue"] == "0", read(conn, child)
        assert read(conn, parent)["provisiondMode"] == "added"
        assert engine.counters.failed == 0
        log = syslog.text()
    uuid = read(conn, child)["entryUUID"]
    waiting = [line for line in log.splitlines()
               if "event=waiting" in line and f"uuid={uuid}" in line]
    assert waiting, log
    assert "reference=disk" in waiting[0] and "slow1" in waiting[0], waiting[0]
    assert runs(root) == ["disks slow1 ", "luns l1 /dev/tank/slow1"]  # after its parent


def test_templates_and_hooks_see_the_referenced_entry(slapd: Slapd, tmp_path: Path) -> None:
    config, root = configure(tmp_path, slapd)
    conn = connect(slapd)
    with running(config):
        d1 = provisioned(conn, disk(conn, "d1"))
        provisioned(conn, lun(conn, "l1", d1))
    assert (root / "luns" / "l1.conf").read_text() == (
        f"l1 on d1 device=/dev/tank/d1 pool=tank service=disks dn={d1}\n")
    assert (root / "targets.conf").read_text() == "l1 d1 10485760 /dev/tank/d1\n"
    assert "luns l1 /dev/tank/d1" in runs(root)  # hook argv: refs.disk.outputs.device


def test_a_reference_to_a_missing_entry_fails_saying_it_does_not_exist(
        slapd: Slapd, tmp_path: Path) -> None:
    config, root = configure(tmp_path, slapd)
    conn = connect(slapd)
    with running(config):
        idle = provisioned(conn, disk(conn, "idle", provisiondIsActive="FALSE"))
        missing = lun(conn, "l1", f"cn=nothere,{DISKS}")
        inactive = lun(conn, "l2", idle)
        for dn, reason in ((missing, "does not exist"), (inactive, "is inactive")):
            found = outcome(conn, dn)
            assert found["provisiondReturnValue"] == str(LUN_CODE), found
            assert reason in found["provisiondMessage"], found
    assert not (root / "luns").exists()


def test_a_reference_to_a_failed_entry_fails_saying_it_failed(
        slapd: Slapd, tmp_path: Path) -> None:
    config, _ = configure(tmp_path, slapd)
    conn = connect(slapd)
    with running(config):
        broken = disk(conn, "bad1")
        child = lun(conn, "l1", broken)  # waits while the disk is being made, then fails
        found = outcome(conn, child)
        assert read(conn, broken)["provisiondReturnValue"] == "5"
    assert found["provisiondReturnValue"] == str(LUN_CODE), found
    assert "failed" in found["provisiondMessage"] and "bad1" in found["provisiondMessage"]


def test_a_referenced_entry_is_not_deleted_under_its_dependents(
        slapd: Slapd, tmp_path: Path) -> None:
    config, root = configure(tmp_path, slapd)
    conn = connect(slapd)
    with running(config):
        d1 = provisioned(conn, disk(conn, "d1"))
        l1, l2 = lun(conn, "l1", d1), lun(conn, "l2", d1)
        for dn in (l1, l2):
            provisioned(conn, dn)
        request(conn, d1, "delete")
        refused = reaches(conn, d1, lambda e: e.get("provisiondReturnValue", "0") != "0",
                          "the delete refused")
        assert refused["provisiondReturnValue"] == str(DEPENDENTS_CODE), refused
        assert refused["provisiondMode"] == "deleting"
        assert l1 in refused["provisiondMessage"] and l2 in refused["provisiondMessage"]
        assert "luns" in refused["provisiondMessage"]
        assert "disks d1 " in runs(root)  # the delete hook never ran
        assert runs(root).count("disks d1 ") == 1

        request(conn, d1, "modify", provisiondOwner="other")  # a fixed value
        refused = reaches(conn, d1, lambda e: e.get("provisiondMode") == "modifying"
                          and bool(e.get("provisiondReturnValue")), "the modify refused")
        assert refused["provisiondReturnValue"] == str(DEPENDENTS_CODE), refused
        assert "pool" in refused["provisiondMessage"] and l1 in refused["provisiondMessage"]

        for dn in (l1, l2):
            request(conn, dn, "delete")
            wait_for(lambda dn=dn: read(conn, dn).get("provisiondMode") == "deleted")
        request(conn, d1, "delete", provisiondOwner="tank")
        wait_for(lambda: read(conn, d1).get("provisiondMode") == "deleted",
                 what="the delete done once nothing references the disk")
    assert read(conn, d1)["provisiondReturnValue"] == "0"


def test_a_modified_referenced_entry_renders_its_dependents_files_again(
        slapd: Slapd, tmp_path: Path) -> None:
    config, root = configure(tmp_path, slapd)
    conn = connect(slapd)
    with running(config):
        d1 = provisioned(conn, disk(conn, "d1"))
        provisioned(conn, lun(conn, "l1", d1))
        assert (root / "targets.conf").read_text() == "l1 d1 10485760 /dev/tank/d1\n"
        request(conn, d1, "modify", provisiondSize="20M")
        wait_for(lambda: read(conn, d1).get("provisiondMode") == "modified")
        # well before the periodic refresh (a minute): the disk's success renders it
        wait_for(lambda: (root / "targets.conf").read_text()
                 == "l1 d1 20971520 /dev/tank/d1\n", timeout=10, what="targets.conf again")


def test_a_multi_valued_reference_gives_a_list(slapd: Slapd, tmp_path: Path) -> None:
    config, root = configure(tmp_path, slapd)
    conn = connect(slapd)
    with running(config):
        d1, d2 = disk(conn, "d1"), disk(conn, "slow2")
        provisioned(conn, add(conn, f"cn=g1,{GROUPS}", provisiondReference=[d1, d2]))
    text = (root / "groups" / "g1.conf").read_text()
    assert sorted(text.split()) == ["d1=/dev/tank/d1", "slow2=/dev/tank/slow2"]


def test_a_parent_reference_names_the_entry_above(slapd: Slapd, tmp_path: Path) -> None:
    config, root = configure(tmp_path, slapd)
    conn = connect(slapd)
    with running(config):
        d1 = disk(conn, "slow1")
        provisioned(conn, add(conn, f"cn=o1,{d1}", description="op"))
        orphan = add(conn, "cn=o2,ou=demo,dc=example,dc=org", description="op")  # not below a disk
        found = outcome(conn, orphan)
    assert (root / "ops" / "o1.conf").read_text() == "o1 on slow1 at /dev/tank/slow1\n"
    assert found["provisiondReturnValue"] == "1", found  # the service's invalid_code
    assert "is not an entry of service disks" in found["provisiondMessage"], found


def test_once_provisions_a_child_after_its_parent_in_one_pass(
        slapd: Slapd, tmp_path: Path) -> None:
    config, root = configure(tmp_path, slapd, initial=30, maximum=60)
    conn = connect(slapd)
    parent = disk(conn, "slow1")
    children = [lun(conn, f"l{number}", parent) for number in range(3)]
    assert Engine(load_config(config)).once() == 0
    for child in children:
        assert read(conn, child)["provisiondReturnValue"] == "0", read(conn, child)
    assert runs(root)[0] == "disks slow1 "
