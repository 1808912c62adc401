"""`include: [PART]` in a kind file: declarations two kinds share (the Bacula SD vars of
tape-library and disk-repository) live once, in etc/kinds/parts/PART.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from provisiond.config import ConfigError
from provisiond.config.load import find_kind
from provisiond.config.schema import Where


def _kinds(tmp_path: Path, kind: dict[str, object], part: object) -> tuple[Path, ...]:
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "shared.yaml").write_text(yaml.safe_dump(part))
    (tmp_path / "k.yaml").write_text(yaml.safe_dump(kind))
    return (tmp_path,)


def test_a_part_gives_vars_and_roots_and_the_kind_refines_them(tmp_path: Path) -> None:
    dirs = _kinds(tmp_path, {
        "include": ["shared"],
        "vars": {"port": {"default": 9}, "own": {"type": "string", "default": "x"}},
        "roots": ["{{ vars.own }}"]},
        {"vars": {"port": {"type": "integer", "default": 1}, "dir": {"type": "path"}},
         "roots": ["{{ vars.dir }}"]})
    kind = find_kind("k", Where("test"), dirs=dirs)
    assert kind["vars"]["port"] == {"type": "integer", "default": 9}
    assert set(kind["vars"]) == {"port", "dir", "own"}
    assert kind["roots"] == ["{{ vars.dir }}", "{{ vars.own }}"]
    assert "include" not in kind


@pytest.mark.parametrize(("include", "part", "reason"), [
    (["missing"], {"vars": {}}, "no part 'missing'"),
    (["../k"], {"vars": {}}, "no part '../k'"),  # a name, not a path (k.yaml is there)
    ("shared", {"vars": {}}, "must be a list of part names"),
    (["shared"], {"steps": {}}, "a part is a mapping of vars, values, roots"),
])
def test_a_bad_include_stops_the_load_naming_it(tmp_path: Path, include: object, part: object,
                                                reason: str) -> None:
    dirs = _kinds(tmp_path, {"include": include}, part)
    with pytest.raises(ConfigError) as caught:
        find_kind("k", Where("test"), dirs=dirs)
    assert reason in str(caught.value)


def test_the_shipped_bacula_part_is_in_both_kinds_alike() -> None:
    tape, disk = (find_kind(name, Where("test")) for name in ("tape-library",
                                                               "disk-repository"))
    shared = {name for name in disk["vars"] if name.startswith("bacula_")}
    assert "bacula_sd_config" in shared
    assert all(tape["vars"][name] == disk["vars"][name] for name in shared)
