"""Operations (issue 11.6): a service with `lifecycle: operation` takes one-shot requests (a
tape load): `add -> adding -> added` with the UTC stamp, or the failing step's code; a
`delete` is acknowledged as `deleted` without running anything; outputs declared
`report_to: parent` are written to the entry's parent (the library), not to the entry. On a
real slapd, with a small hook written by the test."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path
from typing import Any

import ldap3
import pytest

from provisiond.config import ConfigError, load_config
from provisiond.core import parents
from provisiond.core.engine import Engine
from provisiond.directory.access import WriteResult
from provisiond.directory.connection import DirectoryUnavailable
from provisiond.operate import preview, retry, status
from provisiond.operate.common import OperateError
from provisiond.testing.slapd import Slapd
from tests.core.test_engine_faults import collect_log
from tests.support import (
    DEMO_BASE,
    connect,
    mode_of,
    read,
    request,
    run_cli,
    running,
    wait_for,
    write_config,
)

LIBRARY = f"cn=lib1,{DEMO_BASE}"
STAMP = re.compile(r"^\d{8}T\d{6}Z$")
HOOK = """#!{python}
import pathlib, sys
root, name = pathlib.Path(sys.argv[1]), sys.argv[2]
with open(root / "runs.log", "a") as log:
    log.write(name + "\\n")
print("provisiond-set inventory=slot1:A00001")
print("provisiond-set inventory=slot2:B00002")
if (root / "fail").exists():
    print("the changer says no", file=sys.stderr)
    sys.exit(3)
print("provisiond-set loaded=/dev/nst0")
print("provisiond-set drive=drive0")
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    hook = path / "load-hook"
    hook.write_text(HOOK.format(python=sys.executable))
    hook.chmod(0o755)
    return path


def loads(root: Path, **overrides: Any) -> dict[str, Any]:
    """A tape-load operation service: entries under a library entry, one hook step; the
    loaded device goes to the library (the parent), the drive to the operation entry."""
    return {"loads": {
        "lifecycle": "operation",
        "base": DEMO_BASE,
        "filter": "(&(objectClass=provisiondDemoItem)(objectClass=provisiondProvisioning))",
        "attributes": {"mode": "provisiondMode", "state": "provisiondState",
                       "execution_date": "provisiondExecutionDate",
                       "return_value": "provisiondReturnValue", "message": "provisiondMessage"},
        "values": {"name": {"attribute": "cn", "type": "posix_name"}},
        "outputs": {
            "loaded": {"attribute": "provisiondPath", "type": "path", "report_to": "parent"},
            "drive": {"attribute": "provisiondOwner", "type": "posix_name"},
            "inventory": {"attribute": "description", "type": "string", "multi": True,
                          "on_failure": True, "report_to": "parent"},
        },
        "steps": {"add": [{"name": "load tape", "code": 41,
                           "hook": [str(root / "load-hook"), str(root), "{{ values.name }}"]}]},
        **overrides}}


def add_library(conn: ldap3.Connection) -> str:
    assert conn.add(LIBRARY, ["provisiondDemoItem"], {"cn": "lib1"}), conn.result
    return LIBRARY


def add_operation(conn: ldap3.Connection, name: str, parent: str = LIBRARY) -> str:
    dn = f"cn={name},{parent}"
    assert conn.add(dn, ["provisiondDemoItem", "provisiondProvisioning"], {
        "cn": name, "provisiondMode": "add", "provisiondState": "0",
        "provisiondExecutionDate": "0"}), conn.result
    return dn


def values_of(conn: ldap3.Connection, dn: str, attribute: str) -> list[str]:
    conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=[attribute])
    return [value.decode() for value in conn.response[0]["raw_attributes"].get(attribute, [])]


def runs(root: Path) -> list[str]:
    log = root / "runs.log"
    return log.read_text().splitlines() if log.exists() else []


# -- a one-shot request --------------------------------------------------------------------------


def test_an_operation_is_added_once_reports_to_its_parent_and_a_delete_runs_nothing(
        slapd: Slapd, tmp_path: Path, root: Path) -> None:
    conn = connect(slapd)
    add_library(conn)
    with running(write_config(tmp_path / "cfg", slapd, loads(root))):
        dn = add_operation(conn, "load1")
        wait_for(lambda: mode_of(conn, dn) == "added", what="the operation added")
        entry, library = read(conn, dn), read(conn, LIBRARY)

        request(conn, dn, "delete")  # acknowledged, nothing runs
        wait_for(lambda: mode_of(conn, dn) == "deleted", what="the delete acknowledged")
        deleted = read(conn, dn)
        assert conn.delete(dn), conn.result  # removing the LDAP entry itself needs nothing
        again = add_operation(conn, "load2")
        wait_for(lambda: mode_of(conn, again) == "added", what="the next operation added")
    assert runs(root) == ["load1", "load2"]
    assert deleted["provisiondReturnValue"] == "0", deleted
    assert STAMP.fullmatch(deleted["provisiondState"]), deleted
    assert STAMP.fullmatch(entry["provisiondState"]), entry
    assert entry["provisiondReturnValue"] == "0"
    assert library["provisiondPath"] == "/dev/nst0"  # report_to: parent lands on the library
    assert values_of(conn, LIBRARY, "description") == ["slot1:A00001", "slot2:B00002"]  # multi
    assert "provisiondPath" not in entry and "description" not in entry  # not on the operation
    assert entry["provisiondOwner"] == "drive0"  # an ordinary output stays on the entry
    assert "provisiondOwner" not in library


def test_a_failing_operation_reports_its_code_and_a_delete_acknowledges_it(
        slapd: Slapd, tmp_path: Path, root: Path) -> None:
    conn = connect(slapd)
    add_library(conn)
    (root / "fail").write_text("")
    config = write_config(tmp_path / "cfg", slapd, loads(root))
    dn = add_operation(conn, "load1")
    assert Engine(load_config(config)).once() == 1
    entry = read(conn, dn)
    assert (entry["provisiondMode"], entry["provisiondState"]) == ("adding", "0")
    assert entry["provisiondReturnValue"] == "41"
    assert "load tape" in entry["provisiondMessage"]
    assert "provisiondPath" not in read(conn, LIBRARY)  # written on success only
    # the inventory is declared on_failure: it goes to the library with the failure too
    assert values_of(conn, LIBRARY, "description") == ["slot1:A00001", "slot2:B00002"]
    assert "description" not in entry

    # The portal gives up on it: `delete` is acknowledged, nothing runs on the host.
    request(conn, dn, "delete")
    assert Engine(load_config(config)).once() == 0
    entry = read(conn, dn)
    assert entry["provisiondMode"] == "deleted" and entry["provisiondReturnValue"] == "0"
    assert STAMP.fullmatch(entry["provisiondState"]), entry
    assert runs(root) == ["load1"]  # the failed load only
    assert conn.delete(dn), conn.result  # removing the LDAP entry itself needs nothing


# -- the write to the parent ---------------------------------------------------------------------


def test_a_refused_parent_write_fails_the_operation(
        slapd: Slapd, tmp_path: Path, root: Path) -> None:
    """The parent (the organizational unit itself) may not hold the output's attribute."""
    conn = connect(slapd)
    dn = add_operation(conn, "orphan", parent=DEMO_BASE)
    assert Engine(load_config(write_config(tmp_path / "cfg", slapd, loads(root)))).once() == 1
    entry = read(conn, dn)
    assert entry["provisiondMode"] == "adding" and entry["provisiondReturnValue"] == "1"
    message = entry["provisiondMessage"]
    assert f"parent {DEMO_BASE}" in message and "refused" in message, message
    assert "objectClassViolation" in message, message
    assert "provisiondPath" not in entry

    # A failing one keeps its step's code; its inventory (on_failure), refused by the parent
    # (a stand-in for the server's refusal: the unit takes a description), is in its message.
    (root / "fail").write_text("")
    failing = add_operation(conn, "orphan2", parent=DEMO_BASE)
    engine = Engine(load_config(tmp_path / "cfg" / "provisiond.yaml"))
    real_modify = engine.directory.modify

    def refusing(target: str, *args: Any, **kwargs: Any) -> WriteResult:
        if target == DEMO_BASE:
            return WriteResult(ok=False, code=50, description="insufficientAccessRights")
        return real_modify(target, *args, **kwargs)

    engine.directory.modify = refusing  # type: ignore[method-assign]
    assert engine.once() == 1
    entry = read(conn, failing)
    assert entry["provisiondReturnValue"] == "41"
    assert "exited 3" in entry["provisiondMessage"]
    assert f"report to parent {DEMO_BASE}: the directory refused description" \
        in entry["provisiondMessage"], entry["provisiondMessage"]


@pytest.mark.parametrize(("dn", "parent"), [
    ("cn=load1,cn=lib1,ou=demo,dc=example,dc=org", "cn=lib1,ou=demo,dc=example,dc=org"),
    ("cn=a\\,b+uid=x,cn=lib\\2C1,ou=demo", "cn=lib\\2C1,ou=demo"),  # escapes kept as sent
    ("cn=\\ED\\A0,ou=demo", "ou=demo"),
    ("dc=org", None),
    ("not a dn", None),
])
def test_the_parent_dn(dn: str, parent: str | None) -> None:
    assert parents.parent_dn(dn) == parent


def test_a_parent_write_waits_out_an_outage(
        slapd: Slapd, tmp_path: Path, root: Path) -> None:
    conn = connect(slapd)
    add_library(conn)
    dn = add_operation(conn, "load1")
    engine = Engine(load_config(write_config(tmp_path / "cfg", slapd, loads(root))))
    real_modify = engine.directory.modify
    refused: list[str] = []

    def flaky(target: str, *args: Any, **kwargs: Any) -> Any:
        if target == LIBRARY and not refused:
            refused.append(target)
            raise DirectoryUnavailable("injected outage")
        return real_modify(target, *args, **kwargs)

    engine.directory.modify = flaky  # type: ignore[method-assign]
    lines = collect_log()
    assert engine.once() == 0
    assert refused == [LIBRARY]
    assert any("event=report-retry" in line and LIBRARY in line for line in lines), lines
    assert read(conn, LIBRARY)["provisiondPath"] == "/dev/nst0"
    assert mode_of(conn, dn) == "added"


# -- configuration -------------------------------------------------------------------------------


def refused(slapd: Slapd, tmp_path: Path, root: Path, **overrides: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path / "cfg", slapd, loads(root, **overrides)))
    return str(caught.value)


def test_steps_for_a_mode_the_lifecycle_lacks_are_refused_at_load(
        slapd: Slapd, tmp_path: Path, root: Path) -> None:
    step = {"name": "x", "code": 3, "hook": ["/bin/true"]}
    text = refused(slapd, tmp_path, root, steps={"add": [step], "modify": [step]})
    assert "services.loads.steps.modify: " in text and "operation" in text, text
    text = refused(slapd, tmp_path, root, steps={"add": [step], "modify": "add"})
    assert "services.loads.steps.modify: " in text, text
    # the delete of an operation runs nothing: steps given for it are a mistake
    text = refused(slapd, tmp_path, root, steps={"add": [step], "delete": [step]})
    assert "services.loads.steps.delete: " in text and "no steps" in text, text
    text = refused(slapd, tmp_path, root, preconditions={"modify": {"name": "x"}})
    assert "services.loads.preconditions.modify: " in text, text
    text = refused(slapd, tmp_path, root, lifecycle="batch")
    assert "services.loads.lifecycle: " in text and "operation" in text, text
    # an empty step list for delete says the same as none
    load_config(write_config(tmp_path / "cfg", slapd, loads(root, steps={
        "add": [step], "delete": []})))
    result = run_cli("check", "--config", str(write_config(
        tmp_path / "cfg", slapd, loads(root, steps={"add": [step], "modify": [step]}))))
    assert result.returncode == 78, result.stdout + result.stderr
    assert "services.loads.steps.modify: " in result.stderr


def test_report_to_is_an_output_key(slapd: Slapd, tmp_path: Path, root: Path) -> None:
    text = refused(slapd, tmp_path, root, values={"name": {
        "attribute": "cn", "type": "posix_name", "report_to": "parent"}})
    assert "services.loads.values.name.report_to: " in text, text
    text = refused(slapd, tmp_path, root, outputs={"loaded": {
        "attribute": "provisiondPath", "type": "path", "report_to": "library"}})
    assert "services.loads.outputs.loaded.report_to: " in text and "parent" in text, text


def test_admin_hook_folders_follow_the_lifecycle(
        slapd: Slapd, tmp_path: Path, root: Path) -> None:
    hooks_d = tmp_path / "hooks.d"
    (hooks_d / "loads" / "add.pre.d").mkdir(parents=True)
    config = write_config(tmp_path / "cfg", slapd, loads(root), admin_hooks={"dir": str(hooks_d)})
    load_config(config)
    for folder in ("modify.pre.d", "delete.post.d"):
        (hooks_d / "loads" / folder).mkdir()
        with pytest.raises(ConfigError) as caught:
            load_config(config)
        assert f"loads/{folder}: unknown entry" in str(caught.value), caught.value
        assert "add.pre.d, add.post.d)" in str(caught.value), caught.value
        (hooks_d / "loads" / folder).rmdir()


# -- the operator's commands ---------------------------------------------------------------------


def test_status_retry_and_render_understand_operations(
        slapd: Slapd, tmp_path: Path, root: Path) -> None:
    conn = connect(slapd)
    add_library(conn)
    config = load_config(write_config(tmp_path / "cfg", slapd, loads(root)))
    done = add_operation(conn, "load0")
    assert Engine(config).once() == 0
    request(conn, done, "delete")
    (root / "fail").write_text("")
    dn = add_operation(conn, "load1")
    assert Engine(config).once() == 1  # load1 fails, load0's delete is acknowledged

    report = status.collect(config)
    service = report["services"][0]
    assert service["counts"] == {"adding": {"failed": 1}, "deleted": {"done": 1}}
    assert [(row["dn"], row["return_value"]) for row in service["failed"]] == [(dn, 41)]

    out = io.StringIO()
    assert preview.main(config, dn, out, as_json=True) == 0
    shown = json.loads(out.getvalue())
    assert (shown["mode"], [step["name"] for step in shown["steps"]]) == ("add", ["load tape"])
    out = io.StringIO()
    assert preview.main(config, done, out, as_json=True) == 0
    assert (json.loads(out.getvalue())["mode"], json.loads(out.getvalue())["steps"]) == (
        "delete", [])
    with pytest.raises(OperateError) as caught:
        preview.main(config, dn, io.StringIO(), mode="modify")
    assert caught.value.status == 64 and "operation" in str(caught.value)

    (root / "fail").unlink()
    moved = retry.retry(config, dn)
    assert moved["to"]["mode"] == "add"
    assert Engine(config).once() == 0
    assert mode_of(conn, dn) == "added"
    assert read(conn, LIBRARY)["provisiondPath"] == "/dev/nst0"
