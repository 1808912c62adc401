"""The Debian packaging and the shipped files agree with the code (the build itself is
exercised by scripts/dev/ci-deb)."""

from __future__ import annotations

import configparser
import glob
import re
from pathlib import Path

import pytest

from provisiond import __version__
from provisiond.cli import main
from provisiond.commands import COMMANDS
from provisiond.config import load_config, sample_config

REPO = Path(__file__).resolve().parents[1]
DEBIAN = REPO / "debian"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEBIAN / "provisiond.service")
    return parser


def test_example_config_is_the_sample_config() -> None:
    assert (REPO / "etc" / "provisiond.yaml").read_text() == sample_config(), (
        "regenerate it: python -m provisiond sample-config > etc/provisiond.yaml")


def test_example_config_loads(tmp_path: Path) -> None:
    secret = tmp_path / "bind.secret"
    secret.write_text("pw\n")
    secret.chmod(0o600)
    text = sample_config().replace("/etc/provisiond/bind.secret", str(secret))
    (tmp_path / "provisiond.yaml").write_text(text)
    config = load_config(tmp_path / "provisiond.yaml")
    assert config.metrics.path is None and config.metrics.interval == 5.0
    assert config.services == ()


@pytest.mark.parametrize("command", [c.rpartition(".")[2].replace("_", "-") for c in COMMANDS])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    assert "usage: provisiond" in capsys.readouterr().out


def test_unit_is_notify_with_reload_restart_and_watchdog() -> None:
    service = unit()["Service"]
    assert service["Type"] == "notify"
    assert service["ExecStart"] == "/usr/bin/provisiond run"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["Restart"] == "on-failure"
    assert service["WatchdogSec"]
    assert service["KillMode"] == "mixed"
    stop = int(service["TimeoutStopSec"].rstrip("s"))
    assert stop > 30 + 10  # above the default shutdown_grace, with room to save cookies


def test_every_hardening_setting_is_documented() -> None:
    docs = (REPO / "README.md").read_text()
    hardening = [key for key in unit()["Service"] if key.startswith(
        ("Protect", "Private", "Restrict", "NoNew", "Lock", "SystemCall", "Capability",
         "UMask", "StateDirectory"))]
    assert len(hardening) >= 10
    for key in hardening:
        assert f"`{key}=" in docs, f"{key} is not explained in the README"
    unit_text = (DEBIAN / "provisiond.service").read_text()
    shown = docs.split("```ini\n", 1)[1].split("```", 1)[0]
    assert [line for line in unit_text.splitlines() if line and not line.startswith("#")] == \
        [line for line in shown.splitlines() if line], "the README shows an old unit"


def test_control_and_changelog() -> None:
    control = (DEBIAN / "control").read_text()
    for package in ("python3-ldap3", "python3-yaml", "python3-jinja2", "python3-daemon",
                    "python3-psutil"):
        assert re.search(rf"^Depends:(.|\n )*\b{package}\b", control, re.M), package
    assert "debhelper-compat (= 13)" in control and "dh-python" in control
    assert "Standards-Version: 4.6.2" in control and "Rules-Requires-Root: no" in control
    changelog = (DEBIAN / "changelog").read_text()
    assert changelog.startswith(f"provisiond ({__version__}) ")
    assert (DEBIAN / "source" / "format").read_text().strip() == "3.0 (native)"
    assert (DEBIAN / "copyright").read_text().startswith(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/")


def test_install_sources_exist() -> None:
    for line in (DEBIAN / "provisiond.install").read_text().splitlines():
        source = line.split()[0]
        assert glob.glob(str(REPO / source)), f"debian/provisiond.install: {source} matches nothing"


def test_man_page_describes_the_commands() -> None:
    page = (DEBIAN / "provisiond.8").read_text()
    assert page.startswith(".TH PROVISIOND 8 ")
    documented = ("run", "once", "check", "sample_config", "status", "render", "retry",
                  "diagnose")
    assert set(documented) <= set(COMMANDS)
    for command in documented:
        assert f".B {command.replace('_', chr(92) + '-')}" in page, \
            f"describe {command} in debian/provisiond.8"
