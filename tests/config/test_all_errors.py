"""Loading reports every error, not only the first (issue 10.4): each section, each option
and each service is checked even after another failed; the CLI prints them all and exits 78."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from provisiond.config import ConfigError, load_config
from provisiond.config.schema import Where
from provisiond.config.services import read_service
from provisiond.host.jinja import make_environment
from tests.config.test_config import write
from tests.support import run_cli


def three_errors(tmp_path: Path) -> tuple[Path, list[tuple[str, str, str]]]:
    """A bad URI, a bad var of a kind service, a bad filter in a services.d file."""
    path = write(tmp_path, {
        "ldap": {"uri": "http://x"},
        "services": {"demo": {"kind": "demo", "vars": {"root": "relative"}}},
    })
    extra = tmp_path / "services.d" / "more.yaml"
    extra.parent.mkdir()
    extra.write_text(yaml.safe_dump({"more": {
        "base": "dc=x", "filter": "(a=b", "steps": {"add": [{"name": "h", "code": 1,
                                                              "hook": ["demo-hook"]}]}}}))
    return path, [(str(path), "ldap.uri", "scheme"),
                  (str(path), "services.demo.vars.root", "not an absolute path"),
                  (str(extra), "more.filter", "not an LDAP filter")]


def test_three_independent_errors_are_all_reported(tmp_path: Path) -> None:
    path, expected = three_errors(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    error = caught.value
    assert [(e.file, e.key) for e in error.errors] == [(f, k) for f, k, _ in expected]
    for one, (_, _, reason) in zip(error.errors, expected, strict=True):
        assert reason in one.reason, one
    # the first error stays in file, key and reason; str() has one line per error
    assert (error.file, error.key) == (str(path), "ldap.uri") and "scheme" in error.reason
    lines = str(error).splitlines()
    assert len(lines) == 3
    assert all(line.startswith(f"{f}: {k}: ") for line, (f, k, _) in zip(lines, expected,
                                                                          strict=True))


def test_the_command_line_prints_every_error_and_exits_78(tmp_path: Path) -> None:
    path, expected = three_errors(tmp_path)
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 78, result.stdout + result.stderr
    for file, key, reason in expected:
        line = next(line for line in result.stderr.splitlines() if f"{file}: {key}: " in line)
        assert reason in line
    assert "Traceback" not in result.stderr


def test_every_bad_option_of_the_top_level_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, {"workers": 0, "shutdown_grace": -1, "colour": "red",
                            "sync": {"mode": "push", "interval": ".5"},
                            "logging": {"tag": "my tag"}, "hooks": {"path": ["rel"]}})
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [e.key for e in caught.value.errors] == [
        "colour", "sync.mode", "sync.interval", "logging.tag", "hooks.path[0]", "workers",
        "shutdown_grace"]


def test_every_bad_key_of_a_service_is_reported(tmp_path: Path) -> None:
    data = {"base": "dc=x", "filter": "(a=b", "invalid_code": 0, "scope": "tree",
            "bogus": 1, "values": {"n": {"attribute": "cn", "type": "nope"}},
            "preconditions": {"delete": {"active": False}},
            "attributes": {"mode": "bad name"}, "roots": ["/etc"],
            "steps": {"add": [{"name": "h", "code": 1, "hook": ["demo-hook"]}]}}
    with pytest.raises(ConfigError) as caught:
        read_service("x", data, Where("f.yaml", "services.x"), make_environment(()))
    assert [e.key.removeprefix("services.x.") for e in caught.value.errors] == [
        "bogus", "scope", "invalid_code", "attributes.mode", "values.n.type", "filter",
        "roots[0]"]
    # preconditions name values, which are broken: checked once those are fixed


def test_a_service_defined_twice_and_a_broken_one_do_not_hide_the_others(
    tmp_path: Path
) -> None:
    path = write(tmp_path, {"services": {
        "a": {"kind": "demo", "vars": {"root": "/srv/a", "nope": 1}},
        "b": {"kind": "demo", "vars": {"root": "/srv/b"}},
        "c": "not a mapping"}})
    (tmp_path / "services.d").mkdir()
    (tmp_path / "services.d" / "b.yaml").write_text("b: {kind: demo}\n")
    (tmp_path / "services.d" / "c.yaml").write_text("[a list]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [(Path(e.file).name, e.key) for e in caught.value.errors] == [
        ("c.yaml", ""), ("provisiond.yaml", "services.a.vars.nope"),
        ("provisiond.yaml", "services.c"), ("b.yaml", "b")]
