"""templates/bacula/bacula-sd.conf.j2 on its own: a golden file, generated configurations that
the REAL `bacula-sd -t` (through scripts/bacula-sd-check) accepts, values escaped as Bacula's
parser reads them back (bsdjson), and hostile values stopped before anything is rendered."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import jinja2
import pytest

from provisiond.config.schema import Where
from provisiond.config.services import _values
from provisiond.model.values import InvalidValue, ValueSpec, parse_entry
from tests.kinds.bacula.support import (
    BACULA_SD,
    PASSWORD,
    Site,
    render,
    require_bacula_sd,
    run_check,
    with_bacula,
)

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden" / "bacula-sd.conf"
# The injection of the notes: a quote ends the value, a newline and a brace end the resource,
# and a new Device follows (it passed `bacula-sd -t` when a template did not escape).
INJECTION = 'x"\n  Archive Device = "/srv"\n}\nDevice {\n  Name = "evil"\n  Media Type = "x'


def written(site: Site, text: str) -> Path:
    site.config.write_text(text)
    return site.config


def golden_text(site: Site, text: str) -> str:
    return text.replace(str(site.base), "@SITE@")


def test_golden_file(tmp_path: Path) -> None:
    """Two libraries (one with its drives in reverse order), a disk repository with its
    mount point reported and one being added (mount_root/NAME), one not flagged for Bacula
    and one block volume (both left out)."""
    site = Site(tmp_path / "site").create()
    vars_ = site.vars()
    text = render(vars_, libraries=[
        site.library("lib1", 2, vars_),
        site.library("lib2", 3, vars_, media_type="LTO-9", reverse=True),
    ], disks=[
        site.disk("repo1", vars_),
        site.disk("repo2", vars_, reported=False),
        site.disk("repo3", vars_, flagged=False),
        site.disk("vol4", vars_, type_="block"),
    ])
    if not GOLDEN.exists():  # pragma: no cover - written once, then reviewed by hand
        GOLDEN.write_text(golden_text(site, text))
    assert golden_text(site, text) == GOLDEN.read_text()
    require_bacula_sd()
    result = run_check(written(site, text), site.password_file)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(("libraries", "drives", "disks", "file_devices", "address"), [
    (0, 0, 1, 1, None),
    (1, 1, 0, 1, "127.0.0.1"),
    (1, 4, 2, 2, "localhost"),  # a name must resolve: bacula-sd -t looks it up
    (3, 2, 3, 4, "::1"),
    (2, 12, 0, 1, None),  # drive indexes 10 and 11 sort before 2: still one each
])
def test_generated_configurations_pass_the_real_bacula_sd_test(
        tmp_path: Path, libraries: int, drives: int, disks: int, file_devices: int,
        address: str | None) -> None:
    require_bacula_sd()
    site = Site(tmp_path / "site").create()
    vars_ = site.vars(bacula_sd_address=address, bacula_file_devices=file_devices)
    text = render(vars_, [site.library(f"lib{i}", drives, vars_) for i in range(libraries)],
                  [site.disk(f"repo{i}", vars_) for i in range(disks)])
    result = run_check(written(site, text), site.password_file)
    assert result.returncode == 0, result.stdout
    devices = re.findall(r"^Device \{$", text, re.M)
    assert len(devices) == libraries * drives + disks * file_devices
    assert PASSWORD not in text and not re.search(r"^\s*Password\s*=", text, re.M)


def test_a_file_of_no_entries_has_a_placeholder_device_bacula_accepts(tmp_path: Path) -> None:
    """bacula-sd needs a Device: without one the last library could never be deleted."""
    require_bacula_sd()
    site = Site(tmp_path / "site").create()
    vars_ = site.vars()
    text = render(vars_, disks=[site.disk("repo1", vars_, flagged=False)])
    assert re.findall(r'^  Name = "(.*)"$', text, re.M) == [
        "test-sd", "test-dir", "Standard", "provisiond:none"]
    result = run_check(written(site, text), site.password_file)
    assert result.returncode == 0, result.stdout


def bsdjson(config: Path) -> list[dict[str, Any]]:
    """The configuration as Bacula's own parser reads it."""
    output = subprocess.run([str(BACULA_SD).replace("bacula-sd", "bsdjson"), "-c", str(config)],
                            capture_output=True, text=True, check=True).stdout
    parsed: list[dict[str, Any]] = json.loads(output, strict=False)  # it writes raw TABs
    return parsed


def test_quotes_and_backslashes_are_escaped_as_bacula_reads_them(tmp_path: Path) -> None:
    require_bacula_sd()
    site = Site(tmp_path / "site").create()
    command = '/usr/local/bin/changer "%c" %o %S %a %d \\ # not a comment'
    vars_ = site.vars(bacula_changer_command=command)
    config = written(site, render(vars_, [site.library("lib1", 1, vars_)]))
    assert run_check(config, site.password_file).returncode == 0
    changers = [r["Autochanger"] for r in bsdjson(config) if "Autochanger" in r]
    assert [c["ChangerCommand"] for c in changers] == [command]
    directors = [r["Director"] for r in bsdjson(config) if "Director" in r]
    assert directors[0]["Password"] == PASSWORD  # the include reads the admin's file


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\tb", "a\x1bb", INJECTION])
def test_a_control_character_fails_the_render(tmp_path: Path, bad: str) -> None:
    """Values reach the template validated (no control character can); if one did anyway,
    the render fails rather than writing it."""
    site = Site(tmp_path / "site").create()
    vars_ = site.vars(bacula_changer_command=bad)
    with pytest.raises(jinja2.UndefinedError, match="a control character in the value"):
        render(vars_, [site.library("lib1", 1, vars_)])


def test_a_hostile_address_fails_the_render(tmp_path: Path) -> None:
    site = Site(tmp_path / "site").create()
    with pytest.raises(jinja2.UndefinedError, match="is not a host name or IP address"):
        render(site.vars(bacula_sd_address='x"}'))


def test_services_with_different_sd_vars_fail_the_render(tmp_path: Path) -> None:
    site = Site(tmp_path / "site").create()
    vars_ = site.vars()
    other = site.vars(bacula_sd_port=9999)
    with pytest.raises(jinja2.UndefinedError, match="var bacula_sd_port of service "
                       "disk-repository is \"9999\", but \"9103\" where the file is rendered"):
        render(vars_, disks=[site.disk("repo1", other)])


def test_a_service_that_did_not_opt_in_is_left_out(tmp_path: Path) -> None:
    site = Site(tmp_path / "site").create()
    vars_ = site.vars()
    off = site.vars(bacula_sd_config=None, bacula_sd_port=1)  # its other vars do not matter
    text = render(vars_, [site.library("lib1", 1, vars_)], [site.disk("repo1", off)])
    assert "repo1" not in text and '"lib1"' in text


def kind_values(kind: str) -> tuple[ValueSpec, ...]:
    """The value declarations of a shipped kind (with the Bacula blocks), read as a service
    of it reads them."""
    return _values(with_bacula(kind)["values"], Where(f"kind {kind}").child("values"))


HOSTILE = [INJECTION, 'LTO-8"', "LTO-8\n", "a}", "a{", "a\\b", "lib/1", "x" * 128, "@/etc/x"]


@pytest.mark.parametrize(("kind", "attribute", "good"), [
    ("tape-library", "cn", "lib1"),
    ("tape-library", "provisiondChangerDevice", "/dev/sg3"),
    ("tape-library", "provisiondDrive", "0 /dev/nst0"),
    ("tape-library", "provisiondMediaType", "LTO-8"),
    ("disk-repository", "cn", "repo1"),
    ("disk-repository", "provisiondMediaType", "File-repo1"),
])
def test_hostile_values_are_rejected_before_rendering(
        kind: str, attribute: str, good: str) -> None:
    """Every LDAP value the SD file shows is typed so that no quote, newline, brace,
    backslash, `/` in a name or over-long name gets past intake (the entry fails with the
    kind's invalid_code; nothing is rendered)."""
    specs = kind_values(kind)
    base = {"tape-library": {"cn": ["lib1"], "provisiondChangerDevice": ["/dev/sg3"],
                             "provisiondDrive": ["0 /dev/nst0"],
                             "provisiondMediaType": ["LTO-8"], "provisiondIsActive": ["TRUE"]},
            "disk-repository": {"cn": ["repo1"], "provisiondBackend": ["lvm"],
                                "provisiondPool": ["vg0"],
                                "provisiondVolumeType": ["filesystem"],
                                "provisiondSize": ["1G"], "provisiondIsActive": ["TRUE"],
                                "provisiondBaculaDevice": ["TRUE"]}}[kind]
    attributes = {k.lower(): vs for k, vs in base.items()}
    attributes[attribute.lower()] = [good]
    parse_entry(specs, attributes)  # the good value passes
    for bad in HOSTILE:
        if attribute == "provisiondChangerDevice" and bad == "lib/1":
            continue  # a path may hold '/'; it is no name
        attributes[attribute.lower()] = [bad]
        with pytest.raises(InvalidValue):
            parse_entry(specs, attributes)


def test_the_notes_injection_passes_bacula_sd_t_but_not_the_check(tmp_path: Path) -> None:
    """What an unescaped template would write: Bacula takes it (a new Device archiving into
    /etc), the check refuses it."""
    require_bacula_sd()
    site = Site(tmp_path / "site").create()
    vars_ = site.vars(bacula_file_devices=1)
    text = render(vars_, disks=[site.disk("repo1", vars_)])
    text = text.replace('Media Type = "File-repo1"', f'Media Type = "{INJECTION}"')
    config = written(site, text)
    direct = subprocess.run([str(BACULA_SD), "-t", "-c", str(config)], capture_output=True,
                            text=True, check=False)
    assert direct.returncode == 0, direct.stdout  # Bacula itself sees nothing wrong
    result = run_check(config, site.password_file)
    assert result.returncode == 65
    assert "Device 'evil': Device Type File or Tape" in result.stdout


@pytest.mark.parametrize(("drives", "why"), [
    (["0 {dev}/nst-a", "0 {dev}/nst-b"], "drive index 0 given twice"),
    (["0 /srv/nst-a"], "a device outside device_prefixes"),
])
def test_a_library_its_kind_refuses_is_left_out(
        tmp_path: Path, drives: list[str], why: str) -> None:
    """A library whose check fails (40) may still be listed (a failed modify keeps it alive):
    left out with a comment, it cannot make the file fail for every other entry."""
    site = Site(tmp_path / "site").create()
    vars_ = site.vars(device_prefixes=[f"{site.base}/dev/", "/dev/nst"])
    good = site.library("good", 1, vars_)
    bad = site.library("bad", 1, vars_)
    bad = replace(bad, values={**bad.values,
                               "drives": [d.format(dev=site.base / "dev") for d in drives]})
    text = render(vars_, [bad, good])
    assert f'# Tape library "bad" left out: {why} (its entry failed with 40)' in text
    assert '"bad:drive-0"' not in text and '"good:drive-0"' in text
