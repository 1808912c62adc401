"""`references:` and `dependents:` as a service definition gives them (issue 11.2): the forms
read into `Reference`s and `Dependents`, and every mistake stopped at load with its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from provisiond.config import ConfigError, load_config
from provisiond.model.settings import Dependents, Reference
from tests.config.test_config import write

DISK = {"attribute": "provisiondReference", "type": "dn", "under": "ou=demo,dc=example,dc=org"}


def luns(references: Any = None, dependents: Any = None, **values: Any) -> dict[str, Any]:
    """A service `luns` with a `dn` value `disk` (code 4), a multi-valued `disks`, and the
    given `references:` (and `dependents:` on the demo service it references)."""
    service: dict[str, Any] = {
        "base": "ou=luns,dc=example,dc=org",
        "values": {"name": {"attribute": "cn", "type": "posix_name"},
                   "disk": {**DISK, "code": 4}, "disks": {**DISK, "multi": True},
                   **values},
        "invalid_code": 9,
        "steps": {"add": [{"name": "hook", "code": 1, "hook": ["demo-hook", "x"]}]},
    }
    if references is not None:
        service["references"] = references
    demo: dict[str, Any] = {"kind": "demo", "vars": {"root": "/srv/provisiond-test"}}
    if dependents is not None:
        demo["dependents"] = dependents
    return {"services": {"luns": service, "demo": demo}}


def loaded(tmp_path: Path, data: dict[str, Any]) -> dict[str, Any]:
    config = load_config(write(tmp_path, data), check_state=False)
    return {spec.name: spec for spec in config.services}


def test_every_form_reads_into_a_reference(tmp_path: Path) -> None:
    specs = loaded(tmp_path, luns({
        "disk": "demo",
        "disks": {"service": "demo", "code": 12},
        "library": {"parent": "demo"},
    }, dependents={"code": 31, "fixed": ["size"]}))
    assert specs["luns"].references == (
        Reference("disk", "demo", code=4),  # the value's code
        Reference("disks", "demo", code=12, multi=True),
        Reference("library", "demo", code=9, parent=True),  # the service's invalid_code
    )
    assert specs["demo"].dependents == Dependents(code=31, delete="refuse", fixed=("size",))
    assert specs["luns"].dependents == Dependents()  # refuse, invalid_code, nothing fixed


@pytest.mark.parametrize(("references", "key", "reason"), [
    ({"disk": {"service": "nothing"}}, "references.disk", "no service 'nothing'"),
    ({"disk": "nothing"}, "references.disk", "no service 'nothing'"),
    ({"library": {"parent": "nothing"}}, "references.library", "no service 'nothing'"),
    ({"name": "demo"}, "references.name", "must name a declared `dn` value"),
    ({"nope": {"service": "demo"}}, "references.nope", "must name a declared `dn` value"),
    ({"disk": {"service": "demo", "parent": "demo"}}, "references.disk", "either"),
    ({"disk": {"code": 3}}, "references.disk", "either"),
    ({"disk": {"service": "demo", "colour": 1}}, "references.disk.colour", "unknown option"),
    ({"disk": {"service": "demo", "code": 0}}, "references.disk.code", "1 to 999"),
    ({"disk": "Demo Service"}, "references.disk", "must name a service"),
    ({"disk": {"service": 7}}, "references.disk.service", "must name a service"),
    ({"items": {"parent": "demo"}}, "references.items", "method of a mapping"),
    ({"Lib": {"parent": "demo"}}, "references.Lib", "lowercase"),
    ("demo", "references", "must be a mapping"),
])
def test_a_broken_reference_stops_the_load(tmp_path: Path, references: Any, key: str,
                                           reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        loaded(tmp_path, luns(references))
    assert caught.value.key == f"services.luns.{key}", caught.value
    assert reason in caught.value.reason, caught.value


@pytest.mark.parametrize(("dependents", "key", "reason"), [
    ({"fixed": ["colour"]}, "fixed[0]", "'colour' is not a declared value"),
    ({"delete": "sometimes"}, "delete", "must be one of refuse, allow"),
    ({"code": 1000}, "code", "at most 999"),
    ({"refuse": True}, "refuse", "unknown option"),
])
def test_broken_dependents_stop_the_load(tmp_path: Path, dependents: Any, key: str,
                                         reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        loaded(tmp_path, luns({"disk": "demo"}, dependents=dependents))
    assert caught.value.key == f"services.demo.dependents.{key}", caught.value
    assert reason in caught.value.reason, caught.value
