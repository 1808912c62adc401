"""Kind vars are typed (issue 10.4): a kind declares each var with a value type, a site's
value is parsed with it at load (exit 78 with file, `services.NAME.vars.VAR` and the reason),
and templates get typed values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from provisiond import paths
from provisiond.config import ConfigError, load_config
from provisiond.config.kind_vars import read_vars
from provisiond.config.load import refine
from provisiond.config.schema import Where
from tests.config.test_config import write
from tests.support import run_cli


def backup(tmp_path: Path, **vars_: Any) -> Path:
    return write(tmp_path, {"services": {"backup": {"kind": "backup-account", "vars": {
        "backup_root": str(tmp_path / "backup"), **vars_}}}})


def refused(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value


BAD_VARS = [
    ("schedule_start_hour", "8pm", "not an integer: '8pm'"),  # became 0 through `| int`
    ("schedule_start_hour", 24, "24 is above the maximum 23"),
    ("schedule_start_hour", 20.5, "must be text, a whole number, true, false or a date"),
    ("schedule_start_hour", None, "must be set"),
    ("schedule_window_hours", 0, "0 is below the minimum 1"),  # stagger(0) divides by zero
    ("schedule_weekday", -1, "below the minimum 0"),
    ("quota_soft_percent", 150, "above the maximum 100"),
    ("levels", ["hourly", "daily"], "must be a list of 5 values, not 2"),
    ("levels", "hourly", "must be a list"),
    ("on_delete", "shred", "not one of archive, remove"),
    ("backup_root", "backup", "not an absolute path"),
    ("rsnapshot", "/usr/bin/../bin/rsnapshot", "not normalized"),
    ("home_dir_name", "../home", "not a file name"),
    ("schedule_user", "Root User", "not a POSIX name"),
    ("schedule_file", "backup.cron", "does not match"),
    ("suffix", "dc=example,,dc=org", "not a DN"),
]


@pytest.mark.parametrize(("var", "value", "reason"), BAD_VARS,
                         ids=[f"{v}={value!r}" for v, value, _ in BAD_VARS])
def test_a_bad_kind_var_is_refused_with_file_key_and_reason(
    tmp_path: Path, var: str, value: Any, reason: str
) -> None:
    path = backup(tmp_path, **{var: value})
    error = refused(path)
    assert (error.file, error.key) == (str(path), f"services.backup.vars.{var}"), error
    assert reason in error.reason, error


def test_a_bad_item_of_a_list_var_is_named_by_its_index(tmp_path: Path) -> None:
    error = refused(backup(tmp_path, levels=["hourly", "daily", "we ekly", "monthly", "yearly"]))
    assert error.key == "services.backup.vars.levels[2]"
    assert "only [A-Za-z0-9_] allowed: 'we ekly'" in error.reason


def test_an_unknown_var_is_refused_with_the_known_names(tmp_path: Path) -> None:
    error = refused(backup(tmp_path, schedule_start=21))
    assert error.key == "services.backup.vars.schedule_start"
    assert "not a var of kind backup-account" in error.reason
    assert "schedule_start_hour" in error.reason and "schedule_weekday" in error.reason


def test_the_check_command_exits_78_naming_the_var(tmp_path: Path) -> None:
    path = backup(tmp_path, schedule_start_hour="8pm")
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 78, result.stdout + result.stderr
    assert f"{path}: services.backup.vars.schedule_start_hour: not an integer: '8pm'" in (
        result.stderr)


def test_templates_get_typed_values(tmp_path: Path) -> None:
    path = backup(tmp_path, schedule_start_hour="21", schedule_weekday=6, base="",
                  levels=["h", "d", "w", "m", "y"])
    spec = next(s for s in load_config(path).services if s.name == "backup")
    assert spec.vars["schedule_start_hour"] == 21  # the integer, not the text "21"
    assert spec.vars["schedule_weekday"] == 6
    assert spec.vars["schedule_window_hours"] == 8  # the kind's default, typed too
    assert spec.vars["levels"] == ["h", "d", "w", "m", "y"]
    assert spec.vars["base"] is None and spec.vars["archive_dir"] is None  # unset, optional
    assert spec.base == "ou=accounts,ou=backup,ou=services,dc=stoney-cloud,dc=org"


def test_every_var_of_a_shipped_kind_is_typed_and_described() -> None:
    for path in sorted(paths.shipped().kinds.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        for name, declaration in (data.get("vars") or {}).items():
            if data.get("extends") and set(declaration) <= {"default"}:
                continue  # a new default for the parent's declaration
            assert isinstance(declaration, dict) and "type" in declaration, (path.name, name)
            assert declaration.get("description"), (path.name, name)


def test_a_derived_kind_gives_a_var_a_new_default_and_keeps_its_type() -> None:
    base = {"vars": {"hour": {"type": "integer", "min": 0, "max": 23, "default": 20}}}
    for new in (5, {"default": 5}):
        merged = refine(base, {"vars": {"hour": new}})
        assert merged["vars"]["hour"] == {"type": "integer", "min": 0, "max": 23, "default": 5}
    with pytest.raises(ConfigError, match="vars.hour.default: 24 is above the maximum 23"):
        read_vars(refine(base, {"vars": {"hour": 24}})["vars"], Where("k.yaml", "vars"))


DECLARATIONS = [
    ({"x": {"type": "number"}}, "vars.x.type", "unknown type 'number'; known types: string"),
    ({"x": {"type": "integer", "maximum": 3}}, "vars.x.maximum",
     "unknown key; options of integer: min, max; var keys: type, default"),
    ({"x": {"type": "integer", "min": 5, "max": 1}}, "vars.x.min", "greater than max"),
    ({"x": {"type": "integer", "default": "many"}}, "vars.x.default", "not an integer"),
    ({"x": {"type": "string", "items": 2}}, "vars.x.items", "with multi: true"),
    ({"x": {"type": "string", "multi": "yes"}}, "vars.x.multi", "true or false"),
    ({"x": {"min": 1, "default": 2}}, "vars.x.type", "is required with min"),
    ({"items": {"type": "string", "default": "a"}}, "vars.items", "method of a mapping"),
    ({"Hour": 1}, "vars.Hour", "^[a-z][a-z0-9_]*$"),
    ({"x": {"type": "integer"}}, "vars.x", "must be set"),  # required, with no default
]


@pytest.mark.parametrize(("declarations", "key", "reason"), DECLARATIONS,
                         ids=[key + ":" + reason[:20] for _, key, reason in DECLARATIONS])
def test_a_bad_declaration_names_its_key(declarations: dict[str, Any], key: str,
                                         reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        read_vars(declarations, Where("kind.yaml", "vars"))
    assert (caught.value.key, caught.value.file) == (key, "kind.yaml")
    assert reason in caught.value.reason


def test_declarations_and_plain_values() -> None:
    found = read_vars({
        "hour": {"type": "integer", "default": "07"},
        "on": {"type": "boolean", "default": True},
        "day": {"type": "date", "default": "20240229"},
        "size": {"type": "bytes", "default": "1G"},
        "names": {"type": "posix_name", "multi": True, "default": []},
        "maybe": {"type": "path", "required": False},
        "plain": [1, "two", {"three": 3}],  # untyped: as YAML read it
        "plain_described": {"default": {"a": 1}, "description": "an untyped mapping"},
    }, Where("f", "vars"))
    assert found == {"hour": 7, "on": True, "day": __import__("datetime").date(2024, 2, 29),
                     "size": 1 << 30, "names": [], "maybe": None,
                     "plain": [1, "two", {"three": 3}], "plain_described": {"a": 1}}
