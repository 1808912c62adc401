"""Step conditions (`when:`) end to end: the demo kind with its hook run only for entries
owned by root, on a real slapd, in the daemon and in the `render` preview."""

from __future__ import annotations

import io
import json
from pathlib import Path

from provisiond.config import load_config
from provisiond.core.engine import Engine
from provisiond.operate import preview
from provisiond.steps import render
from provisiond.testing.slapd import Slapd
from tests.support import (
    SyslogCapture,
    add_item,
    connect,
    demo_service,
    mode_of,
    read,
    running,
    runs,
    wait_for,
    write_config,
)

WHEN = "values.owner == 'root' and entry.mode in ['add', 'modify']"


def service(root: Path) -> dict[str, object]:
    """The demo kind, its hook under a condition."""
    return demo_service(root, steps={"add": [
        {"name": "write item file", "code": 7,
         "render": {"template": "demo/item.conf.j2",
                    "path": "{{ vars.root }}/items/{{ values.name }}.conf"}},
        {"name": "provision item", "code": 5, "when": WHEN,
         "hook": ["demo-hook", "{{ entry.mode }}", "{{ values.name }}", "{{ vars.root }}"]},
    ]})


def test_a_step_runs_only_for_entries_its_condition_holds_for(
        slapd: Slapd, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    syslog = SyslogCapture(cfg / "syslog.sock")
    conn = connect(slapd)
    try:
        with running(write_config(cfg, slapd, service(root))):
            ours = add_item(conn, "ours")
            theirs = add_item(conn, "theirs", provisiondOwner="nobody")
            for dn in (ours, theirs):
                wait_for(lambda dn=dn: mode_of(conn, dn) == "added", what=f"{dn} added")
        log = syslog.text()
    finally:
        syslog.close()
    ours_uuid, theirs_uuid = read(conn, ours)["entryUUID"], read(conn, theirs)["entryUUID"]
    assert (root / "items" / "ours.conf").exists() and (root / "items" / "theirs.conf").exists()
    ran = [line.split()[0] for line in runs(root)]
    assert ran == [ours_uuid]  # the hook ran for root's entry only
    assert read(conn, theirs)["provisiondReturnValue"] == "0"
    skipped = [line for line in log.splitlines() if "event=step-skipped" in line]
    assert len(skipped) == 1, log
    assert f"uuid={theirs_uuid}" in skipped[0] and 'step="provision item"' in skipped[0]
    assert "reason=when" in skipped[0]


def test_render_shows_a_step_skipped_by_its_condition(slapd: Slapd, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    config = load_config(write_config(tmp_path / "cfg", slapd, service(root)))
    conn = connect(slapd)
    ours = add_item(conn, "ours")
    theirs = add_item(conn, "theirs", provisiondOwner="nobody")

    out = io.StringIO()
    assert preview.main(config, theirs, out) == 0
    assert (f'step 2/2 "provision item" (hook, code 5): skipped: its condition is false '
            f"(when: {WHEN})") in out.getvalue()
    out = io.StringIO()
    assert preview.main(config, theirs, out, as_json=True) == 0
    assert json.loads(out.getvalue())["steps"][1]["skipped"] == "when"
    out = io.StringIO()
    assert preview.main(config, ours, out) == 0
    assert "argv: " in out.getvalue() and "skipped" not in out.getvalue()
    assert Engine(config).once() == 0  # the preview changed nothing the run then needs
    assert [line.split()[1] for line in runs(root)] == ["add"]


def test_a_file_of_all_entries_follows_a_condition_on_vars(slapd: Slapd, tmp_path: Path) -> None:
    index = {"name": "write index", "code": 8, "when": "vars.root != '/nowhere'",
             "render": {"template": "demo/index.conf.j2", "path": "{{ vars.root }}/index.conf",
                        "scope": "all"}}
    for root, expected in ((tmp_path, ["write index"]), (Path("/nowhere"), [])):
        services = demo_service(root, steps={"add": [index]})
        spec = load_config(write_config(tmp_path / "cfg", slapd, services)).services[0]
        assert [step.name for step in render.aggregate_steps(spec)] == expected
