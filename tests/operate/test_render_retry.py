"""`provisiond render` (which must change nothing) and `provisiond retry` against a real slapd."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import ldap3
import pytest

from provisiond.config import load_config
from provisiond.core.engine import Engine
from provisiond.operate import retry as operate_retry
from provisiond.operate.common import OperateError
from provisiond.process.daemon import configure_logging
from tests.operate.conftest import Site
from tests.support import DEMO_BASE, add_item, mode_of, read, request, run_cli, runs, wait_for


def snapshot_files(root: Path) -> dict[str, tuple[bytes | None, int, float]]:
    """Every path below `root` with its content, mode and mtime."""
    found: dict[str, tuple[bytes | None, int, float]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        content = path.read_bytes() if path.is_file() else None
        found[str(path)] = (content, info.st_mode, info.st_mtime)
    return found


def snapshot_entry(conn: ldap3.Connection, dn: str) -> dict[str, list[bytes]]:
    conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE,
                attributes=["*", "+"])
    return {k: list(v) for k, v in conn.response[0]["raw_attributes"].items()}


def test_render_shows_diffs_and_hooks_and_changes_nothing(site: Site) -> None:
    config = load_config(site.config)
    first = add_item(site.conn, "first", size="10M")
    assert Engine(config).once() == 0
    request(site.conn, first, "modify", provisiondSize="20M")
    second = add_item(site.conn, "second", size="1G")
    files_before = snapshot_files(site.root)
    entries_before = {dn: snapshot_entry(site.conn, dn) for dn in (first, second)}
    runs_before = runs(site.root)

    result = run_cli("--config", str(site.config), "render", first)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "steps for modify (requested by the entry" in text
    item = site.root / "items" / "first.conf"
    assert f"--- {item}\n+++ {item}\n" in text
    assert "-size\t10485760\n+size\t20971520\n" in text
    assert f"argv: {config.hooks.path[0]}/demo-hook modify first {site.root}" in text
    index = site.root / "index.conf"
    assert f"{index} from 1 active entry: would change" in text  # "second" is not added yet
    assert "-first\t10485760\t" in text and "+first\t20971520\t" in text
    assert "preview only" in text

    result = run_cli("--config", str(site.config), "render", second, "--json")
    assert result.returncode == 0, result.stderr
    preview = json.loads(result.stdout)
    assert preview["mode"] == "add" and preview["complete"] is True
    write_item = preview["steps"][0]
    assert write_item["changes"] and write_item["diff"].startswith("--- /dev/null\n")
    hook = preview["steps"][1]
    assert hook["argv"][1:] == ["add", "second", str(site.root)]
    assert hook["environment"]["PROVISIOND_VALUE_SIZE"] == "1073741824"
    assert "PATH" in hook["environment"]

    result = run_cli("--config", str(site.config), "render", first, "--mode", "delete")
    assert result.returncode == 0, result.stderr
    assert "WAITING  precondition not met: active must be False" in result.stdout
    assert f"{item}: would be removed" in result.stdout

    assert snapshot_files(site.root) == files_before
    assert {dn: snapshot_entry(site.conn, dn) for dn in (first, second)} == entries_before
    assert runs(site.root) == runs_before
    assert not list(site.root.rglob(".*.tmp"))


def test_render_refusals(site: Site) -> None:
    cli = ("--config", str(site.config), "render")
    result = run_cli(*cli, f"cn=nobody,{DEMO_BASE}")
    assert result.returncode == 66 and "no entry" in result.stderr
    result = run_cli(*cli, DEMO_BASE)  # exists, but no service's filter matches it
    assert result.returncode == 66 and "not managed by any service" in result.stderr
    result = run_cli(*cli, "not a dn")
    assert result.returncode == 64
    bad = add_item(site.conn, "bad", description="tab\there")
    result = run_cli(*cli, bad)
    assert result.returncode == 1
    assert "INVALID  validate: " in result.stdout and "ReturnValue 2" in result.stdout
    site.slapd.stop()
    result = run_cli(*cli, bad)
    assert result.returncode == 69


def test_retry_puts_a_failed_entry_back_and_the_daemon_finishes_it(site: Site) -> None:
    config = load_config(site.config)
    dn = add_item(site.conn, "broken", description="tab\there")
    assert Engine(config).once() == 1
    failed = read(site.conn, dn)
    assert failed["provisiondMode"] == "adding" and failed["provisiondReturnValue"] == "2"

    site.conn.modify(dn, {"description": [(ldap3.MODIFY_REPLACE, ["fixed"])]})
    result = run_cli("--config", str(site.config), "retry", dn)
    assert result.returncode == 0, result.stderr
    assert "adding (ReturnValue 2: validate:" in result.stdout and "-> add" in result.stdout
    entry = read(site.conn, dn)
    assert entry["provisiondMode"] == "add" and entry["provisiondState"] == "0"
    assert "provisiondReturnValue" not in entry and "provisiondMessage" not in entry

    configure_logging(config, foreground=False)
    engine = Engine(config)
    stop = threading.Event()
    engine.start_workers()
    engine.run_streams(stop)
    try:
        wait_for(lambda: mode_of(site.conn, dn) == "added", what="retried entry added")
    finally:
        stop.set()
        engine.shutdown(grace=10)


def test_retry_refuses_entries_that_are_not_failed(site: Site) -> None:
    config = load_config(site.config)
    done = add_item(site.conn, "done")
    assert Engine(config).once() == 0
    pending = add_item(site.conn, "pending")
    working = add_item(site.conn, "working", mode="adding")
    cli = ("--config", str(site.config), "retry")
    for dn in (done, pending, working):
        before = snapshot_entry(site.conn, dn)
        result = run_cli(*cli, dn, "--json")
        assert result.returncode == 65, (dn, result.stdout, result.stderr)
        assert "is not a failed entry" in result.stderr
        assert snapshot_entry(site.conn, dn) == before
    assert run_cli(*cli, f"cn=nobody,{DEMO_BASE}").returncode == 66


def test_retry_is_one_atomic_modify(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """If the entry changes between the read and the write, nothing is modified (75)."""
    config = load_config(site.config)
    dn = add_item(site.conn, "raced", description="tab\there")
    assert Engine(config).once() == 1
    real_find = operate_retry.find_entry

    def find_then_change(*args: Any, **kwargs: Any) -> Any:
        found = real_find(*args, **kwargs)
        site.conn.modify(dn, {"provisiondReturnValue": [(ldap3.MODIFY_REPLACE, ["9"])]})
        return found

    monkeypatch.setattr(operate_retry, "find_entry", find_then_change)
    with pytest.raises(OperateError) as raised:
        operate_retry.retry(config, dn)
    assert raised.value.status == 75
    entry = read(site.conn, dn)
    assert entry["provisiondMode"] == "adding" and entry["provisiondReturnValue"] == "9"

    monkeypatch.setattr(operate_retry, "find_entry", real_find)
    done = operate_retry.retry(config, dn)
    assert done["from"]["return_value"] == "9" and done["to"]["mode"] == "add"
