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

from provisiond import paths
from provisiond.config import ConfigError, load_config
from tests.config.test_config import write
from tests.support import run_cli

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


# A billion laughs where the loader used it: 10**9 strings once expanded (the old loader
# spent 37 s and then died of a MemoryError building the error message).
BOMB = b"""
services:
  demo:
    kind: demo
    vars:
      a: &a [x, x, x, x, x, x, x, x, x, x]
      b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
      c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
      d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
      e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
      f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
      g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
      h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
      i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]
ldap: {uri: *i}
"""
RENDER = {"name": "r", "code": 1, "render": {"template": "demo/item.conf.j2",
                                             "path": "/srv/provisiond-test/a"}}
TEMPLATES = {"templates": ["TMP/templates", str(paths.SOURCE_ROOT / "templates")]}


def render_of(template: str) -> dict[str, Any]:
    return {**TEMPLATES, **service(steps={"add": [
        {"name": "r", "code": 1, "render": {"template": template, "path": "/srv/provisiond-test/a"}}]})}


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
    append: bytes = b""  # raw bytes added to the end of provisiond.yaml
    raw: bytes = b""  # the whole of provisiond.yaml instead


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
    Row("demo var root /", demo(root="/"), "services.demo.roots[0]", "is /"),
    Row("demo var root /var/..", demo(root="/var/.."), "services.demo.vars.root",
        "not normalized"),  # a typed var (a path) is refused before it becomes a root
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
    Row("when: bad syntax", hook_step(when="values.backend = 'lvm'"),
        "services.x.steps.add[0].when", "unexpected"),
    Row("when: an undeclared value", hook_step(when="values.backend == 'lvm'"),
        "services.x.steps.add[0].when", "values.backend is not declared"),
    Row("when: an undeclared var", service(vars={"pool": "a"}, steps={"add": [
        {"name": "hook", "code": 1, "hook": ["demo-hook"], "when": "vars.backend == 'zfs'"}]}),
        "services.x.steps.add[0].when", "vars.backend is not declared"),
    Row("when: attribute access", hook_step(when="entry.mode.__class__ == 'x'"),
        "services.x.steps.add[0].when", "nothing inside it"),
    Row("when: not text", hook_step(when=True), "services.x.steps.add[0].when",
        "condition in quotes"),
    Row("when: an entry's value on a file of all entries", service(
        values={"backend": {"attribute": "description", "type": "string"}},
        steps={"add": [{**RENDER, "render": {**RENDER["render"], "scope": "all"},
                        "when": "values.backend == 'lvm'"}]}),
        "services.x.steps.add[0].when", "may read vars only"),
    Row("var .nan", service(vars={"pct": NAN}), "services.x.vars.pct", "finite"),
    Row("var .inf in a list", service(vars={"levels": [1, INF]}), "services.x.vars.levels[1]",
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
    # item 7: loader gaps (each was a traceback or a failure after start)
    Row("config not UTF-8", {}, "", "not UTF-8", append=b"# caf\xe9\n"),
    Row("services.d file not UTF-8", {}, "", "not UTF-8", file="services.d/x.yaml",
        files={"services.d/x.yaml": b"x: {base: caf\xe9}\n"}),
    Row("template not UTF-8", render_of("bad.j2"), "services.x.steps.add[0].render.template",
        "not UTF-8", files={"templates/bad.j2": b"caf\xe9 {{ values }}\n"}),
    Row("included template not UTF-8", render_of("main.j2"),
        "services.x.steps.add[0].render.template", "not UTF-8",
        files={"templates/main.j2": b'{% include "part.j2" %}\n', "templates/part.j2": b"\xff"}),
    Row("included template missing", render_of("main.j2"),
        "services.x.steps.add[0].render.template", "'part.j2' not found",
        files={"templates/main.j2": b'{% include "part.j2" %}\n'}),
    Row("included template syntax", render_of("main.j2"),
        "services.x.steps.add[0].render.template", "part.j2:1",
        files={"templates/main.j2": b'{% extends "part.j2" %}\n',
               "templates/part.j2": b"{% if %}\n"}),
    Row("filter not a string", service(filter=5), "services.x.filter", "must be a string"),
    Row("active not a string", service(active=["(a=b)"]), "services.x.active",
        "must be a string"),
    Row("filter unbalanced", service(filter="(a=b))((c=d)"), "services.x.filter",
        "not an LDAP filter"),
    Row("filter trailing garbage", service(filter="(a=b)x"), "services.x.filter",
        "not an LDAP filter"),
    Row("filter two filters", service(filter="(a=b)(c=d)"), "services.x.filter",
        "not an LDAP filter"),
    Row("filter without attribute", service(filter="(=b)"), "services.x.filter",
        "bad attribute name"),
    Row("active unbalanced", service(active="(&(a=b)"), "services.x.active",
        "not an LDAP filter"),
    Row("base not a DN", service(base="not a dn"), "services.x.base", "not a DN"),
    Row("base from a var not a DN", service(base="{{ vars.b }}", vars={"b": "ou=demo,,dc=x"}),
        "services.x.base", "not a DN"),
    Row("typed var base not a DN", demo(base="ou=demo,,dc=x"), "services.demo.vars.base",
        "not a DN"),
    Row("bind_dn not a DN", {"ldap": {"bind_dn": "cn"}}, "ldap.bind_dn", "not a DN"),
    Row("start_tls with ldaps", {"ldap": {"uri": "ldaps://x", "start_tls": True}},
        "ldap.start_tls", "TLS from the first byte"),
    Row("ca_file without TLS", {"ldap": {"uri": "ldap://x", "ca_file": "/etc/hostname"}},
        "ldap.ca_file", "no connection uses TLS"),
    Row("uri without //", {"ldap": {"uri": "ldap//x"}}, "ldap.uri", "not an LDAP URI"),
    Row("uri http", {"ldap": {"uri": "http://x"}}, "ldap.uri", "scheme"),
    Row("uri port out of range", {"ldap": {"uri": "ldap://x:99999"}}, "ldap.uri", "port"),
    Row("uri host with space", {"ldap": {"uri": "ldap://a b"}}, "ldap.uri", "bad host"),
    Row("uri without host", {"ldap": {"uri": "ldap://"}}, "ldap.uri", "host"),
    Row("uri with a DN", {"ldap": {"uri": "ldap://x:389/dc=x"}}, "ldap.uri", "not an LDAP URI"),
    Row("uri non-ASCII port", {"ldap": {"uri": "ldap://x:\u0663\u0668\u0669"}}, "ldap.uri",
        "expected ldap://host"),
    Row("write_uri bad", {"ldap": {"write_uri": "ldaps://:636"}}, "ldap.write_uri", "host"),
    Row("ldapi relative", {"ldap": {"uri": "ldapi://slapd"}}, "ldap.uri", "socket path"),
    Row("ca_file missing", {"ldap": {"ca_file": "TMP/missing.pem"}}, "ldap.ca_file",
        "cannot read"),
    Row("logging.tag with space", {"logging": {"tag": "my tag"}}, "logging.tag", "syslog tag"),
    Row("logging.tag non-ASCII", {"logging": {"tag": "provisiond\u00e9"}}, "logging.tag",
        "syslog tag"),
    Row("syslog_address no port", {"logging": {"syslog_address": "localhost"}},
        "logging.syslog_address", "host:port"),
    Row("syslog_address non-ASCII port", {"logging": {"syslog_address": "localhost:\u0661"}},
        "logging.syslog_address", "host:port"),
    Row("syslog_address port 0", {"logging": {"syslog_address": "localhost:0"}},
        "logging.syslog_address", "host:port"),
    Row("state_dir under a file", {"state_dir": "TMP/file/state"}, "state_dir", "cannot be created",
        files={"file": b""}),
    Row("state_dir is a file", {"state_dir": "TMP/file"}, "state_dir", "not a directory",
        files={"file": b""}),
    Row("state_dir relative", {"state_dir": "state"}, "state_dir", "absolute"),
    Row("pid_file relative", {"pid_file": "provisiond.pid"}, "pid_file", "absolute"),
    Row("metrics.path relative", {"metrics": {"path": "x.prom"}}, "metrics.path", "absolute"),
    Row("templates relative", {"templates": ["templates"]}, "templates[0]", "absolute"),
    Row("roots [] with a render step", service(roots=[], steps={"add": [RENDER]}),
        "services.x.roots", "steps.add[0]"),
    Row("roots missing with a mkdir step", {"services": {"x": {
        "base": "dc=x", "steps": {"add": [{"name": "m", "code": 1, "mkdir": "/srv/x/y"}]}}}},
        "services.x.roots", "steps.add[0]"),
    Row("hooks.path relative", {"hooks": {"path": ["hooks"]}}, "hooks.path[0]", "absolute"),
    Row("hooks.path with ':'", {"hooks": {"path": ["/usr/lib/a:/tmp"]}}, "hooks.path[0]", "':'"),
    Row("alias bomb", {}, "", "aliases expanded", raw=BOMB),
    Row("recursive alias", {}, "", "recursive", append=b"loop: &l [1, *l]\n"),
    Row("file larger than 1 MiB", {}, "", "larger than 1024 KiB",
        append=b"#" * (1 << 20) + b"\n"),
    Row("nested too deeply", {}, "", "invalid YAML", append=b"deep: " + b"[" * 5000 + b"]" * 5000),
    # item 8: no LDAP value may choose which program runs (hooks and validate commands)
    Row("hook program from a value", hook_step(hook=["{{ values.name }}", "x"]),
        "services.x.steps.add[0].hook[0]", "program"),
    Row("hook program chosen by an if", hook_step(
        hook=["{% if entry.mode == 'add' %}demo-hook{% else %}other{% endif %}"]),
        "services.x.steps.add[0].hook[0]", "program"),
    Row("hook program from refs", hook_step(hook=["{{ refs.disk.values.tool }}"]),
        "services.x.steps.add[0].hook[0]", "program"),
    Row("hook program from a var holding a template",
        service(vars={"tool": "{{ values.name }}"},
                steps={"add": [{"name": "h", "code": 1, "hook": ["{{ vars.tool }}"]}]}),
        "services.x.steps.add[0].hook[0]", "program"),
    Row("validate program is the file", step("render", {
        "template": "demo/item.conf.j2", "path": "/srv/provisiond-test/a",
        "validate": ["{{ file }}"]}), "services.x.steps.add[0].render.validate[0]", "program"),
    Row("validate program from a value", step("render", {
        "template": "demo/item.conf.j2", "path": "/srv/provisiond-test/a",
        "validate": ["/usr/lib/checkers/{{ values.kind }}", "{{ file }}"]}),
        "services.x.steps.add[0].render.validate[0]", "program"),
]


def materialise(tmp_path: Path, row: Row) -> Path:
    for name, content in row.files.items():
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    if row.prepare is not None:
        row.prepare(tmp_path)
    data = _substitute(row.data, tmp_path)
    path = write(tmp_path, data)
    if row.raw:
        path.write_bytes(row.raw)
    if row.append:
        with path.open("ab") as handle:
            handle.write(row.append)
    return path


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
            "render mode 0644 unquoted", "config not UTF-8", "template not UTF-8",
            "filter unbalanced", "uri without //", "logging.tag with space", "state_dir under a file",
            "roots [] with a render step", "hooks.path with ':'", "alias bomb",
            "hook program from a value"]


@pytest.mark.parametrize("row_id", CLI_ROWS)
def test_check_command_exits_78_with_file_key_and_reason(tmp_path: Path, row_id: str) -> None:
    row = next(row for row in ROWS if row.id == row_id)
    path = materialise(tmp_path, row)
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 78, result.stdout + result.stderr
    file = str(tmp_path / row.file) if row.file else str(path)
    where = f"{file}: {row.key}: " if row.key else f"{file}: "
    assert f"provisiond: configuration error: {where}" in result.stderr
    assert row.reason in result.stderr
    assert "Traceback" not in result.stderr


def test_a_kind_file_that_is_not_utf8_names_the_kind_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kinds = tmp_path / "kinds"
    kinds.mkdir()
    (kinds / "mine.yaml").write_bytes(b"base: caf\xe9\n")
    monkeypatch.setattr(paths, "kinds_dirs", lambda: (kinds,))
    path = write(tmp_path, {"services": None})
    (tmp_path / "services.d").mkdir()
    (tmp_path / "services.d" / "x.yaml").write_text("x: {kind: mine}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.file == str(kinds / "mine.yaml") and caught.value.key == ""
    assert caught.value.reason == "the file is not UTF-8 text: byte 0xe9 on line 1"


def test_the_state_dir_check_can_be_left_to_the_commands_that_write(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    path = write(tmp_path, {"state_dir": str(tmp_path / "file" / "state")})
    with pytest.raises(ConfigError):
        load_config(path)
    assert load_config(path, check_state=False).state_dir == tmp_path / "file" / "state"


def test_yaml_anchors_and_merge_keys_within_bounds_still_work(tmp_path: Path) -> None:
    path = write(tmp_path, {})
    text = path.read_text().replace("services:", "x-defaults: &d {kind: demo}\nservices:", 1)
    path.write_text(text)  # an unknown top-level key is still refused, after the bound check
    with pytest.raises(ConfigError, match="x-defaults: unknown key"):
        load_config(path)
    extra = tmp_path / "services.d"
    extra.mkdir()
    (extra / "two.yaml").write_text(
        "one: &one {kind: demo, vars: {root: /srv/one}}\n"
        "two: {<<: *one, vars: {root: /srv/two}}\n")
    path = write(tmp_path, {"services": None})
    config = load_config(path)
    assert [s.roots for s in config.services] == [(Path("/srv/one"),), (Path("/srv/two"),)]


def test_a_program_name_from_vars_is_rendered_once_at_load(tmp_path: Path) -> None:
    path = write(tmp_path, service(vars={"tool": "/usr/bin/true", "hook": "demo-hook"}, steps={
        "add": [{"name": "h", "code": 1, "hook": ["{{ vars.hook }}", "{{ values.x }}"]},
                {"name": "r", "code": 2, "render": {
                    "template": "demo/item.conf.j2", "path": "/srv/provisiond-test/a",
                    "validate": ["{{ vars.tool }}", "{{ file }}"]}}]}))
    spec = next(s for s in load_config(path).services if s.name == "x")
    hook, render = spec.steps["add"]
    assert hook.action.argv == ("demo-hook", "{{ values.x }}")  # type: ignore[union-attr]
    assert render.action.validate == ("/usr/bin/true", "{{ file }}")  # type: ignore[union-attr]
