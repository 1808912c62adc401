"""`provisiond render` shows the plan a run carries out, so where a run fails the preview says
so, with the same reason (against a real slapd, a real run)."""

from __future__ import annotations

import json
from pathlib import Path

from provisiond.config import load_config
from provisiond.core.engine import Engine
from provisiond.testing.slapd import Slapd
from tests.support import add_item, connect, demo_service, read, run_cli, write_config


def test_a_step_the_run_refuses_is_refused_by_the_preview(slapd: Slapd, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    # `owner` is a posix name ("root" unless set): a mkdir owner must be a number
    steps = {"add": [{"name": "home", "code": 4,
                      "mkdir": {"path": "{{ vars.root }}/homes/{{ values.name }}",
                                "owner": "{{ values.owner }}"}}]}
    config = write_config(tmp_path / "cfg", slapd, demo_service(root, steps=steps))
    conn = connect(slapd)
    dn = add_item(conn, "alpha")

    preview = run_cli("--config", str(config), "render", dn, "--json")
    shown = json.loads(preview.stdout)
    assert preview.returncode == 1, preview.stdout + preview.stderr  # incomplete
    assert shown["complete"] is False
    assert shown["steps"][0]["error"] == "owner 'root':'root' is not numeric"
    assert not (root / "homes").exists()

    assert Engine(load_config(config)).once() == 1
    entry = read(conn, dn)
    assert entry["provisiondReturnValue"] == "4"
    assert entry["provisiondMessage"] == f"home: {shown['steps'][0]['error']}"
