"""Cross-entry references: an entry of one service naming an active entry of another (an
iSCSI LUN naming its disk), resolved for per-entry and aggregate templates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from provisiond import paths
from provisiond.config import ConfigError, load_config
from provisiond.testing.slapd import Slapd
from tests.support import (
    DEMO_BASE,
    add_item,
    connect,
    demo_service,
    mode_of,
    read,
    run_cli,
    running,
    wait_for,
    write_config,
)

CONSUMERS = "ou=consumers,dc=example,dc=org"
NAMES = {"mode": "provisiondMode", "state": "provisiondState",
         "execution_date": "provisiondExecutionDate", "return_value": "provisiondReturnValue",
         "message": "provisiondMessage"}


def services(root: Path, target: str = "demo") -> dict[str, Any]:
    out = root / "consumers"
    return {**demo_service(root), "consumer": {
        "base": CONSUMERS, "filter": "(objectClass=provisiondDemoItem)", "attributes": NAMES,
        "values": {"name": {"attribute": "cn", "type": "posix_name"},
                   "item": {"attribute": "provisiondReference", "type": "dn",
                            "under": DEMO_BASE, "code": 4}},
        "references": {"item": target},
        "roots": [str(out)],
        "steps": {"add": [
            {"name": "write", "code": 7,
             "render": {"template": "consumer.j2", "path": f"{out}/{{{{ values.name }}}}.conf"}},
            {"name": "write all", "code": 8,
             "render": {"template": "consumers.j2", "path": f"{out}/all.conf", "scope": "all"}},
        ]},
    }}


def config(tmp_path: Path, slapd: Slapd, root: Path, target: str = "demo") -> Path:
    templates = tmp_path / "templates"
    templates.mkdir(exist_ok=True)
    (templates / "consumer.j2").write_text(
        "{{ values.name }} uses {{ refs.item.values.name }} of {{ refs.item.values.size }}\n")
    (templates / "consumers.j2").write_text(
        "{% for c in entries %}{{ c.values.name }} {{ c.refs.item.values.name }}\n{% endfor %}")
    return write_config(tmp_path / "cfg", slapd, services(root, target),
                        templates=[str(templates), *map(str, paths.templates_dirs())])


def add_consumer(conn: Any, name: str, target: str) -> str:
    dn = f"cn={name},{CONSUMERS}"
    ok = conn.add(dn, ["provisiondDemoItem", "provisiondProvisioning"], {
        "provisiondMode": "add", "provisiondState": "0", "provisiondExecutionDate": "0",
        "provisiondReference": target})
    assert ok, conn.result
    return dn


def test_a_reference_resolves_to_the_active_entry(slapd: Slapd, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    conn = connect(slapd)
    assert conn.add(CONSUMERS, ["organizationalUnit"], {"ou": "consumers"})
    with running(config(tmp_path, slapd, root)):
        alpha = add_item(conn, "alpha", size="10M")
        wait_for(lambda: mode_of(conn, alpha) == "added")
        used = add_consumer(conn, "c1", alpha)
        wait_for(lambda: mode_of(conn, used) == "added", what="consumer added")
        assert (root / "consumers" / "c1.conf").read_text() == "c1 uses alpha of 10485760\n"
        assert (root / "consumers" / "all.conf").read_text() == "c1 alpha\n"
        preview = run_cli("--config", str(tmp_path / "cfg" / "provisiond.yaml"), "render",
                          used, "--mode", "add")
        assert preview.returncode == 0, preview.stdout + preview.stderr
        line = next(ln for ln in preview.stdout.splitlines() if "c1.conf" in ln)
        assert "unchanged" in line  # the preview resolved refs to what the daemon wrote

        dangling = add_consumer(conn, "c2", f"cn=missing,{DEMO_BASE}")
        wait_for(lambda: read(conn, dangling).get("provisiondReturnValue") == "4")
        message = read(conn, dangling)["provisiondMessage"]
        assert "is not an active entry of service demo" in message
        preview = run_cli("--config", str(tmp_path / "cfg" / "provisiond.yaml"), "render",
                          dangling, "--mode", "add")
        assert "is not an active entry of service demo" in preview.stdout + preview.stderr
    assert not (root / "consumers" / "c2.conf").exists()


def test_a_reference_to_an_unknown_service_is_a_config_error(
    slapd: Slapd, tmp_path: Path
) -> None:
    path = config(tmp_path, slapd, tmp_path / "root", target="disks")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.key == "services.consumer.references.item"
    assert "no service 'disks'" in caught.value.reason
