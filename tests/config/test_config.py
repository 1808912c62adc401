"""Configuration errors stop the daemon at start: exit 78 with file, key path and reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from provisiond.config import ConfigError, load_config, sample_config
from tests.support import run_cli


def write(tmp_path: Path, data: Any, secret_mode: int = 0o600) -> Path:
    secret = tmp_path / "bind.secret"
    secret.write_text("pw\n")
    secret.chmod(secret_mode)
    base = {
        "ldap": {"uri": "ldap://127.0.0.1:1", "bind_dn": "cn=x", "bind_password_file": str(secret)},
        "state_dir": str(tmp_path / "state"),
        "services": {"demo": {"kind": "demo", "vars": {"root": str(tmp_path / "root")}}},
    }
    for key, value in data.items():
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    path = tmp_path / "provisiond.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


def test_valid_config_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, {}))
    (service,) = config.services
    assert service.name == "demo" and service.kind == "demo"
    assert service.base == "ou=demo,dc=example,dc=org"
    assert service.sync_filter == (
        "(&(objectClass=provisiondDemoItem)(|(provisiondMode=add)(provisiondMode=modify)"
        "(provisiondMode=delete))(provisiondState=0))"
    )
    assert [s.name for s in service.steps_for("modify")] == [s.name for s in service.steps_for("add")]


BAD = [
    ({"workers": 0}, "workers", "at least"),
    ({"workers": "four"}, "workers", "whole number"),
    ({"sync": {"mode": "push"}}, "sync.mode", "one of"),
    ({"ldap": {"uri": None}}, "ldap.uri", "required"),
    ({"ldap": {"bind_password_file": "/nonexistent/secret"}}, "ldap.bind_password_file",
     "cannot read"),
    ({"bogus": 1}, "bogus", "unknown key"),
    ({"logging": {"colour": "red"}}, "logging.colour", "unknown option"),
    ({"services": {"demo": {"kind": "nope"}}}, "services.demo.kind", "unknown service kind"),
    ({"services": {"demo": {"kind": "demo", "vars": {"rooot": "/x"}}}},
     "services.demo.vars.rooot", "not a var"),
    ({"services": {"x": {"base": "dc=x", "steps": {"add": [{"name": "a", "code": 1,
                                                            "render": {"template": "missing.j2",
                                                                       "path": "/x"}}]}}}},
     "services.x.steps.add[0].render.template", "not found"),
    ({"services": {"x": {"base": "dc=x", "steps": {"add": [{"name": "a", "code": 1,
                                                            "hook": ["a", "{{ values.x"]}]}}}},
     "services.x.steps.add[0].hook[1]", "syntax"),
    ({"services": {"x": {"base": "dc=x", "steps": {"add": [{"name": "a", "code": 0,
                                                            "hook": ["a"]}]}}}},
     "services.x.steps.add[0].code", "error code"),
    ({"services": {"x": {"base": "dc=x", "values": {"n": {"attribute": "cn", "type": "nope"}},
                         "steps": {"add": [{"name": "a", "code": 1, "hook": ["a"]}]}}}},
     "services.x.values.n.type", "nope"),
    ({"services": {"x": {"base": "dc=x", "steps": {"add": [{"name": "a", "code": 1,
                                                            "shell": "rm -rf /"}]}}}},
     "services.x.steps.add[0]", "exactly one of"),
]


@pytest.mark.parametrize(("data", "key", "reason"), BAD)
def test_config_errors_name_file_key_and_reason(
    tmp_path: Path, data: dict[str, Any], key: str, reason: str
) -> None:
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.file == str(path)
    assert caught.value.key == key
    assert reason in caught.value.reason


def test_secret_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, {}, secret_mode=0o644)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.key == "ldap.bind_password_file"
    assert "group or others" in caught.value.reason


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    path = tmp_path / "provisiond.yaml"
    path.write_text("ldap:\n  uri: [unclosed\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "line" in caught.value.reason


def test_cli_exits_78_with_file_key_reason(tmp_path: Path) -> None:
    path = write(tmp_path, {"sync": {"interval": -1}})
    for argv in (("--config", str(path), "run"), ("--config", str(path), "once"),
                 ("check", "--config", str(path))):
        result = run_cli(*argv)
        assert result.returncode == 78, result.stderr
        assert f"{path}: sync.interval: must be at least" in result.stderr


def test_services_d_files_are_loaded_with_their_own_file_name(tmp_path: Path) -> None:
    path = write(tmp_path, {"services": {}})
    extra = tmp_path / "services.d"
    extra.mkdir()
    (extra / "more.yaml").write_text(yaml.safe_dump({"more": {"kind": "demo", "vars": {"x": 1}}}))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.file == str(extra / "more.yaml")
    assert caught.value.key == "more.vars.x"


def test_sample_config_is_valid_yaml_documenting_every_section() -> None:
    text = sample_config()
    data = yaml.safe_load(text)
    assert set(data) >= {"ldap", "sync", "logging", "hooks", "retry", "services"}
    assert "state_dir" in text and "workers" in text


def test_a_derived_kind_refines_values_key_by_key() -> None:
    from provisiond.config.load import refine

    base = {"vars": {"a": 1, "b": 2}, "filter": "(x=1)",
            "values": {"q": {"attribute": "sstQuota", "type": "bytes", "code": 6}}}
    derived = {"vars": {"b": 3}, "filter": "(y=1)", "values": {"q": {"attribute": "pdQuota"}}}
    assert refine(base, derived) == {
        "vars": {"a": 1, "b": 3}, "filter": "(y=1)",
        "values": {"q": {"attribute": "pdQuota", "type": "bytes", "code": 6}},
    }


def test_value_code_must_be_an_error_code(tmp_path: Path) -> None:
    path = write(tmp_path, {"services": {"x": {
        "base": "dc=x", "values": {"n": {"attribute": "cn", "type": "string", "code": 0}},
        "steps": {"add": [{"name": "a", "code": 1, "hook": ["a"]}]}}}})
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.key == "services.x.values.n.code"


def test_every_number_in_the_schema_is_bounded() -> None:
    # issue 8 item 6: no option may take .nan, .inf or an absurd value such as workers: 1000000
    from provisiond.config.sections import SECTIONS, TOP

    for section in (TOP, *SECTIONS):
        for option in section.options:
            if option.kind in ("int", "number"):
                assert option.minimum is not None and option.maximum is not None, option.name
                assert option.minimum <= option.default <= option.maximum, option.name
