"""The checks test_hostile_values.py relies on can fail: each storage file check (hostile_storage.py)
and the hook argv check report an injection that got past the value types, here forced into
a real render (a file edited as a hostile value would have changed it, or values that skip
their types). A check that passed these would make the hostile-value test pass vacuously."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from provisiond.model.values import parse_entry
from tests.model.hostile_files import TEMPLATE_CHECKS
from tests.model.hostile_run import KindRun
from tests.model.hostile_world import BENIGN, at_site, make_world, prepare_site


def rendered(kind: str, site: Path, **changes: Any) -> tuple[KindRun, dict[str, Any], Any]:
    """The kind's files for its valid entry (values replaced by `changes`, unchecked)."""
    prepare_site(site)
    world = make_world(kind, site)
    benign = {v.attribute.lower(): [at_site(BENIGN[kind][v.name], site)]
              for v in world.spec.values}
    values = {**parse_entry(world.spec.values, benign), **changes}
    run = KindRun(world)
    return run, values, run.render(values)


def problems(capture: Any, template: str, text: str | None = None) -> list[str]:
    return TEMPLATE_CHECKS[template](capture.files[template] if text is None else text,
                                     capture.models[template])


@pytest.mark.parametrize("template", ["iscsi/tgt.conf.j2", "iscsi/scst.conf.j2",
                                      "iscsi/target-check.j2"])
def test_the_valid_iscsi_files_pass(tmp_path: Path, template: str) -> None:
    _, _, capture = rendered("iscsi-target", tmp_path)
    assert problems(capture, template) == []


TGT, SCST, BACULA = "iscsi/tgt.conf.j2", "iscsi/scst.conf.j2", "bacula/bacula-sd.conf.j2"
HOST = "iqn.2026-12.org.example:host-1"
# kind -> template -> (text of the valid file, what a hostile value would have made of it)
CHANGES: dict[str, dict[str, list[tuple[str, str]]]] = {"iscsi-target": {
    TGT: [(f"initiator {HOST}\n", f"initiator {HOST}\ninitiator {HOST}x\n"),  # a line more
          ("chap user-1 Secret-1234567", "chap user-1 Secret-1234567 x"),  # a token more
          ("lun 2 /dev/vg0/repo-2", "lun 2 /dev/vg0/repo-2#"),  # out of its set
          ("\nend\n", "\n")],  # a block not closed
    SCST: [(f"INITIATOR {HOST}\n", f"INITIATOR {HOST}\n\t\t\tINITIATOR {HOST}x\n"),
           ('"user-1 Secret-1234567"', '"user-1 Secret-1234567" #'),
           ("allowed_portal 192.0.2.10", "allowed_portal 192.0.2.10 {"),
           ("LUN 2 repo-2\n", "LUN 2 repo-2\n\t\t\tLUN 2 repo-2\n"),  # a LUN twice
           ("enabled 1\n", "enabled 1 extra\n")],
}, "disk-repository": {BACULA: [
    # the injection of the notes: a quote, a newline and a brace, and a new Device
    ('"Disk-1"', '"x"\n}\nDevice {\n  Name = "evil"\n  Archive Device = "/srv"\n  Media Type = "x"'),
    ('"Disk-1"', '"Disk-1"; Archive Device = "/etc"'), ('"Disk-1"', '"Disk-1" # x'),
    ('"Disk-1"', '"Disk"-1"'), ('"repo-1:disk-0"', '"repo-1:disk-0\\"x"'),  # \" is text
]}}
INJECTIONS = [(kind, template, old, new) for kind, files in CHANGES.items()
              for template, changes in files.items() for old, new in changes]


@pytest.mark.parametrize(("kind", "template", "old", "new"), INJECTIONS)
def test_a_file_check_reports_an_injection(tmp_path: Path, kind: str, template: str, old: str,
                                           new: str) -> None:
    _, _, capture = rendered(kind, tmp_path)
    text = capture.files[template]
    assert old in text
    assert problems(capture, template, text.replace(old, new, 1))


def test_target_check_reports_a_secret_or_a_line_more(tmp_path: Path) -> None:
    _, _, capture = rendered("iscsi-target", tmp_path)
    text = capture.files["iscsi/target-check.j2"]
    assert problems(capture, "iscsi/target-check.j2", text + "portal 192.0.2.99:3260\n")
    assert problems(capture, "iscsi/target-check.j2", text + "# Secret-1234567\n")


def test_the_valid_bacula_file_passes(tmp_path: Path) -> None:
    _, _, capture = rendered("disk-repository", tmp_path)
    assert problems(capture, "bacula/bacula-sd.conf.j2") == []


def test_hook_check_reports_a_comma_in_a_joined_list(tmp_path: Path) -> None:
    """tape-mtx gets the drives joined with commas: a comma in one adds a drive."""
    device = f"{tmp_path}/dev/nst0"
    run, values, _ = rendered("tape-library", tmp_path)
    assert run.hook_problems(values) == []
    found = run.hook_problems({**values, "drives": [f"0 {device},1 {device}"]})
    assert found and all("--drives=" in problem for problem in found)
