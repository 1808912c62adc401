"""A request is decided on the values its change notification carried, without reading the
entry again: the claim asserts the entry's entryCSN, so an entry changed between the
notification and the claim is never provisioned with the values it no longer has. The claim
is then refused, the entry read, and the decision made again on what it holds now."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from provisiond.config import load_config
from provisiond.core.engine import Engine
from provisiond.core.runtime import Work
from provisiond.directory.access import Directory, Entry
from provisiond.testing.slapd import Slapd
from tests.support import (
    add_item,
    connect,
    demo_service,
    mode_of,
    read,
    wait_for,
    write_config,
)


def notified(slapd: Slapd, tmp_path: Path, name: str) -> tuple[Engine, Any, str, Entry]:
    """An engine (no stream), a connection, an entry `name` to add, and the entry as a change
    notification shows it (its values and entryCSN)."""
    config = load_config(write_config(tmp_path / "cfg", slapd, demo_service(tmp_path / "root")))
    conn = connect(slapd)
    dn = add_item(conn, name, size="10M")
    engine = Engine(config)
    spec = engine.services["demo"].spec
    seen = Directory(engine.factory).read(dn, (*spec.ldap_attributes(), "entryCSN"))
    assert seen is not None and seen.attributes.get("entrycsn")
    return engine, conn, dn, seen


def test_an_entry_changed_since_its_notification_is_provisioned_as_it_is_now(
        slapd: Slapd, tmp_path: Path) -> None:
    engine, conn, dn, seen = notified(slapd, tmp_path, "changing")
    root = tmp_path / "root"
    assert conn.modify(dn, {"provisiondSize": [("MODIFY_REPLACE", ["20M"])]}), conn.result
    engine.start_workers()  # no stream: the one change is the stale notification below
    try:
        engine.submit(Work("demo", seen.uuid, dn, seqs=(), seen=seen))
        wait_for(lambda: mode_of(conn, dn) == "added", 15, "added")
    finally:
        engine.shutdown(grace=5)
    assert read(conn, dn).get("provisiondReturnValue") == "0"
    assert "size\t20971520\n" in (root / "items" / "changing.conf").read_text()


def test_an_unchanged_entry_is_claimed_on_its_notification_alone(
        slapd: Slapd, tmp_path: Path) -> None:
    engine, conn, dn, seen = notified(slapd, tmp_path, "steady")
    root = tmp_path / "root"
    reads: list[str] = []
    real_read = engine.directory.read
    engine.directory.read = lambda *a, **k: reads.append(a[0]) or real_read(*a, **k)  # type: ignore[method-assign]
    engine.start_workers()
    try:
        engine.submit(Work("demo", seen.uuid, dn, seqs=(), seen=seen))
        wait_for(lambda: mode_of(conn, dn) == "added", 15, "added")
    finally:
        engine.shutdown(grace=5)
    assert dn not in reads  # decided and claimed on what the notification carried
    assert "size\t10485760\n" in (root / "items" / "steady.conf").read_text()
