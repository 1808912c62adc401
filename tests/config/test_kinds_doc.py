"""One description of the service part of the config drives validation, the sample config
and docs/KINDS.md (issue 10.4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisiond.config import sample_config
from provisiond.config.kinds_doc import kinds_markdown
from provisiond.config.schema import ConfigError, Where
from provisiond.config.sections import SERVICE
from provisiond.config.services import read_service
from provisiond.host.jinja import make_environment

REPO = Path(__file__).resolve().parents[2]


def test_the_kind_reference_is_generated_from_the_kind_files() -> None:
    assert (REPO / "docs" / "KINDS.md").read_text() == kinds_markdown(REPO / "etc" / "kinds"), (
        "regenerate it: python -m provisiond.config.kinds_doc > docs/KINDS.md")


def test_the_reference_shows_each_var_with_its_type_and_default(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text(
        "description: Mine.\nbase: dc=x\n"
        "vars:\n  hour: {type: integer, min: 0, max: 23, default: 20, description: From.}\n"
        "  paths: {type: path, multi: true, items: 2, default: [/a, /b]}\n"
        "  where: {type: dn, required: false, description: 'a | b <c>'}\n"
        "steps: {add: [{name: run it, code: 3, hook: [x]}], modify: add}\n")
    text = kinds_markdown(tmp_path)
    assert "## mine\n\nMine.\n" in text
    assert "| `hour` | integer (min 0; max 23) | `20` | From. |" in text
    assert "| `paths` | path (a list of 2) | `[/a, /b]` |  |" in text
    assert "| `where` | dn | unset | a \\| b &lt;c> |" in text
    assert "| add | run it | hook | 3 |" in text and "| modify | the steps of add |" in text


def test_the_sample_config_documents_every_key_of_a_service() -> None:
    sample = sample_config()
    services = sample[sample.index("# Services:"):]
    for option in SERVICE.options:
        assert f"#   {option.name}: " in services, option.name


def test_a_service_takes_exactly_the_keys_the_schema_documents() -> None:
    with pytest.raises(ConfigError) as caught:
        read_service("x", {"base": "dc=x", "stpes": {}}, Where("f", "services.x"),
                     make_environment(()))
    unknown = next(e for e in caught.value.errors if e.key == "services.x.stpes")
    assert f"known: {', '.join(sorted(SERVICE.names()))}" in unknown.reason
