"""Broken configurations stop at load with `FILE: key.path: reason` (exit 78), never later.

Issue 8 items 5-8: one row per broken configuration; each must be refused by `load_config`
with the file, the key path and the reason, and a few rows go through the real
`provisiond check --config` command line to see exit status 78.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from provisiond.config import ConfigError, load_config
from tests.support import run_cli
from tests.test_config import write

NAN, INF = float("nan"), float("inf")


def service(**overrides: Any) -> dict[str, Any]:
    """A small custom service with one hook step and one render step under `roots`."""
    data: dict[str, Any] = {
        "base": "dc=example,dc=org",
        "roots": ["/srv/provisiond-test"],
        "steps": {"add": [{"name": "hook", "code": 1, "hook": ["demo-hook", "x"]}]},
    }
    data.update(overrides)
    return {"services": {"x": data}}


def hook_step(**overrides: Any) -> dict[str, Any]:
    return service(steps={"add": [{"name": "hook", "code": 1, "hook": ["demo-hook"], **overrides}]})


def step(action: str, value: Any) -> dict[str, Any]:
    return service(steps={"add": [{"name": "s", "code": 1, action: value}]})


def demo(**vars_: Any) -> dict[str, Any]:
    return {"services": {"demo": {"kind": "demo", "vars": vars_}}}


@dataclass(frozen=True)
class Row:
    """One broken configuration: `data` overrides the valid base config of test_config.write;
    `files` are written (relative to the test directory) first; the error must be in `file`
    (relative; "" is provisiond.yaml) at `key`, with `reason` in its reason."""

    id: str
    data: dict[str, Any]
    key: str
    reason: str
    files: dict[str, bytes] = field(default_factory=dict)
    file: str = ""
    prepare: Callable[[Path], None] | None = None


ROWS: list[Row] = [
    # item 5: roots that mean / (or a system directory) are refused after rendering
    Row("root /tmp/..", service(roots=["/tmp/.."]), "services.x.roots[0]", "is /"),
    Row("root //", service(roots=["//"]), "services.x.roots[0]", "is /"),
    Row("root /.", service(roots=["/."]), "services.x.roots[0]", "is /"),
    Row("root /etc/../", service(roots=["/etc/../"]), "services.x.roots[0]", "is /"),
    Row("root /etc", service(roots=["/etc"]), "services.x.roots[0]", "system directory"),
    Row("root /usr/", service(roots=["/usr/"]), "services.x.roots[0]", "system directory"),
    Row("root ///var/lib/..", service(roots=["///var/lib/.."]), "services.x.roots[0]",
        "system directory"),
    Row("demo var root /var/..", demo(root="/var/.."), "services.demo.roots[0]", "is /"),
    Row("root symlink to /", service(roots=["{{ vars.link }}"], vars={"link": "LINK"}),
        "services.x.roots[0]", "resolves to /", prepare=lambda d: (d / "up").symlink_to("/")),
    # item 6: every number is finite and bounded; file modes are not silently misread
    Row("hooks.timeout .nan", {"hooks": {"timeout": NAN}}, "hooks.timeout", "finite"),
    Row("hooks.timeout .inf", {"hooks": {"timeout": INF}}, "hooks.timeout", "finite"),
    Row("hooks.timeout 1e400", {"hooks": {"timeout": 10**400}}, "hooks.timeout", "at most"),
    Row("hooks.timeout a year", {"hooks": {"timeout": 365 * 86400}}, "hooks.timeout", "at most"),
    Row("kill_grace .nan", {"hooks": {"kill_grace": NAN}}, "hooks.kill_grace", "finite"),
    Row("kill_grace -.inf", {"hooks": {"kill_grace": -INF}}, "hooks.kill_grace", "finite"),
    Row("ldap.timeout .nan", {"ldap": {"timeout": NAN}}, "ldap.timeout", "finite"),
    Row("sync.interval .inf", {"sync": {"interval": INF}}, "sync.interval", "finite"),
    Row("shutdown_grace .nan", {"shutdown_grace": NAN}, "shutdown_grace", "finite"),
    Row("retry.initial .inf", {"retry": {"initial": INF}}, "retry.initial", "finite"),
    Row("retry.maximum .nan", {"retry": {"maximum": NAN}}, "retry.maximum", "finite"),
    Row("retry.limit 10**9", {"retry": {"limit": 10**9}}, "retry.limit", "at most"),
    Row("metrics.interval .nan", {"metrics": {"interval": NAN}}, "metrics.interval", "finite"),
    Row("workers 1000000", {"workers": 1000000}, "workers", "at most"),
    Row("step timeout 0", hook_step(timeout=0), "services.x.steps.add[0].timeout", "at least"),
    Row("step timeout -1", hook_step(timeout=-1), "services.x.steps.add[0].timeout", "at least"),
    Row("step timeout .nan", hook_step(timeout=NAN), "services.x.steps.add[0].timeout",
        "finite"),
    Row("step timeout .inf", hook_step(timeout=INF), "services.x.steps.add[0].timeout",
        "finite"),
    Row("timeout on a mkdir step", service(steps={"add": [
        {"name": "s", "code": 1, "timeout": 5, "mkdir": "/srv/provisiond-test/a"}]}),
        "services.x.steps.add[0].timeout", "only hook steps"),
    Row("render mode 0644 unquoted", {"services": {}},
        "x.steps.add[0].render.mode", "quote", file="services.d/x.yaml",
        files={"services.d/x.yaml": b"""x:
  base: dc=example,dc=org
  roots: [/srv/provisiond-test]
  steps:
    add:
      - {name: s, code: 1, render: {template: demo/item.conf.j2, path: /srv/provisiond-test/a,
                                    mode: 0644}}
"""}),
    Row("mkdir mode 0755 unquoted", {"services": {}},
        "x.steps.add[0].mkdir.mode", "quote", file="services.d/x.yaml",
        files={"services.d/x.yaml": b"""x:
  base: dc=example,dc=org
  roots: [/srv/provisiond-test]
  steps: {add: [{name: s, code: 1, mkdir: {path: /srv/provisiond-test/a, mode: 0755}}]}
"""}),
    Row("mkdir mode 10000", step("mkdir", {"path": "/srv/provisiond-test/a", "mode": "10000"}),
        "services.x.steps.add[0].mkdir.mode", "octal file mode"),
]


def materialise(tmp_path: Path, row: Row) -> Path:
    for name, content in row.files.items():
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    if row.prepare is not None:
        row.prepare(tmp_path)
    data = _substitute(row.data, tmp_path)
    return write(tmp_path, data)


def _substitute(data: Any, tmp_path: Path) -> Any:
    """TMP in strings is the test directory; LINK is its symlink `up`."""
    if isinstance(data, dict):
        return {k: _substitute(v, tmp_path) for k, v in data.items()}
    if isinstance(data, list):
        return [_substitute(v, tmp_path) for v in data]
    if isinstance(data, str):
        return data.replace("LINK", str(tmp_path / "up")).replace("TMP", str(tmp_path))
    return data


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_broken_config_is_refused_at_load(tmp_path: Path, row: Row) -> None:
    path = materialise(tmp_path, row)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    error = caught.value
    assert (error.file, error.key) == (str(tmp_path / row.file) if row.file else str(path),
                                       row.key), error
    assert row.reason in error.reason, error


CLI_ROWS = ["root /tmp/..", "demo var root /var/..", "hooks.timeout .nan",
            "render mode 0644 unquoted"]


@pytest.mark.parametrize("row_id", CLI_ROWS)
def test_check_command_exits_78_with_file_key_and_reason(tmp_path: Path, row_id: str) -> None:
    row = next(row for row in ROWS if row.id == row_id)
    path = materialise(tmp_path, row)
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 78, result.stdout + result.stderr
    file = str(tmp_path / row.file) if row.file else str(path)
    assert f"provisiond: configuration error: {file}: {row.key}: " in result.stderr
    assert row.reason in result.stderr
    assert "Traceback" not in result.stderr
