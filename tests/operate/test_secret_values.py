"""`secret: true` on a value (a CHAP secret): templates get it, but hook environments,
`provisiond render` and validation messages never show it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisiond.model.values import InvalidValue, SpecError, ValueSpec, parse_entry
from provisiond.testing.slapd import Slapd
from tests.support import DEMO_BASE, add_item, connect, run_cli, write_config

SECRET = "s3cr3t-Chap-42"


def _service(root: Path) -> dict[str, object]:
    return {"demo": {
        "base": DEMO_BASE, "filter": "(objectClass=provisiondDemoItem)",
        "attributes": {"mode": "provisiondMode", "state": "provisiondState",
                       "execution_date": "provisiondExecutionDate",
                       "return_value": "provisiondReturnValue", "message": "provisiondMessage"},
        "values": {"name": {"attribute": "cn", "type": "posix_name"},
                   "secret": {"attribute": "description", "type": "string", "secret": True,
                              "min_length": 12}},
        "roots": [str(root)],
        "steps": {"add": [
            {"name": "file", "code": 7,
             "render": {"template": "secret.conf.j2",
                        "path": f"{root}/{{{{ values.name }}}}.conf", "mode": "0600"}},
            {"name": "hook", "code": 5, "hook": ["/usr/bin/env"]}]}}}


def test_a_secret_value_is_never_in_a_message() -> None:
    spec = ValueSpec.from_mapping("secret", {"attribute": "description", "type": "string",
                                             "secret": True, "pattern": "[a-z]+"})
    with pytest.raises(InvalidValue) as caught:
        parse_entry((spec,), {"description": ["Not-Lower-42"]})
    assert "Not-Lower-42" not in str(caught.value) and "secret" in str(caught.value)
    with pytest.raises(SpecError, match="only values take secret"):
        ValueSpec.from_mapping("out", {"attribute": "description", "type": "string",
                                       "secret": True}, output=True)


def test_render_and_hook_environment_never_show_a_secret(slapd: Slapd, tmp_path: Path) -> None:
    root, templates = tmp_path / "root", tmp_path / "templates"
    root.mkdir()
    templates.mkdir()
    (templates / "secret.conf.j2").write_text("user {{ values.name }} {{ values.secret }}\n")
    config = write_config(tmp_path / "cfg", slapd, _service(root), templates=[str(templates)])
    conn = connect(slapd)
    dn = add_item(conn, "i1", description=SECRET)
    result = run_cli("--config", str(config), "render", dn, "--json")
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout, result.stdout
    preview = json.loads(result.stdout)
    assert preview["values"]["secret"] == "***"
    file_step, hook_step = preview["steps"]
    assert file_step["diff"] == "  (no diff: the file holds secret values)\n"
    assert not any("SECRET" in key for key in hook_step["environment"]), hook_step
    text = run_cli("--config", str(config), "render", dn)
    assert SECRET not in text.stdout and "no diff: the file holds secret values" in text.stdout
