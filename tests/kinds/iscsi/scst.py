"""Helpers of the SCST tests: the hooks loaded as modules, scst.conf rendered from entries made
up here (shaped like the mirror's members the kinds' model describes), and the fake scstadmin
installed with a state of its own."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import shutil
import stat
from pathlib import Path
from types import ModuleType
from typing import Any

from provisiond.aggregates.mirror import Member
from provisiond.host.jinja import make_environment, render_template

REPO = Path(__file__).resolve().parents[3]
SCRIPTS = REPO / "scripts"
TEMPLATE = "iscsi/scst.conf.j2"
FAKE = Path(__file__).with_name("fake_scstadmin")
GOLDEN = Path(__file__).with_name("golden")
TARGETS = "ou=targets,ou=iscsi,ou=storage,dc=example,dc=org"
DISKS = "ou=disks,ou=storage,dc=example,dc=org"
SECRET = "s3cret.Secret!1"  # 15 characters of the CHAP charset
BSD01 = "iqn.2026-12.org.example:bsd01"
BSD02 = "iqn.2026-12.org.example:bsd02"


def load_script(name: str) -> ModuleType:
    """A hook of scripts/ (no .py suffix) as a module, to test its pure functions."""
    return load_script_at(SCRIPTS / name)


def load_script_at(path: Path) -> ModuleType:
    """A Python program without a .py suffix as a module."""
    loader = importlib.machinery.SourceFileLoader(path.name.replace("-", "_"), str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def disk(name: str, device: str | None = None) -> Member:
    outputs = {"device": device if device is not None else f"/dev/vg0/{name}"}
    return Member(dn=f"cn={name},{DISKS}", uuid=f"uuid-{name}",
                  values={"name": name, "type": "block"}, outputs=outputs,
                  service="disk-repository")


def target(name: str, *, portals: tuple[str, ...] = ("192.0.2.10:3260",),
           initiators: tuple[str, ...] = (), chap: tuple[str, str] | None = None,
           iqn: str | None = None) -> Member:
    values = {"name": name, "iqn": iqn or f"iqn.2026-12.org.example:{name}",
              "portals": list(portals), "initiators": list(initiators),
              "chap_user": chap[0] if chap else None, "chap_secret": chap[1] if chap else None,
              "active": True}
    return Member(dn=f"cn={name},{TARGETS}", uuid=f"uuid-{name}", values=values,
                  service="iscsi-target")


def lun(of: Member, number: int, on: Member | None) -> Member:
    refs: dict[str, Any] = {"target": of}
    if on is not None:
        refs["disk"] = on
    return Member(dn=f"cn=lun{number},{of.dn}", uuid=f"uuid-{of.values['name']}-{number}",
                  values={"name": f"lun{number}", "lun": number,
                          "disk": on.dn if on else f"cn=gone,{DISKS}", "active": True},
                  refs=refs, service="iscsi-lun")


def render(targets: list[Member], luns: list[Member],
           allowed: tuple[str, ...] | None = ("192.0.2.10", "[2001:db8::1]:3260")) -> str:
    """scst.conf as the render step makes it (the project's template environment)."""
    env = make_environment([REPO / "templates"])
    context = {"entries": targets, "sources": {"iscsi-target": sorted(targets, key=_dn),
                                               "iscsi-lun": sorted(luns, key=_dn)},
               "vars": {"backend": "scst", "allowed_portals": list(allowed) if allowed else None,
                        "scst_config": "/etc/scst.conf", "scstadmin": "/usr/sbin/scstadmin"},
               "service": "iscsi-target"}
    return render_template(env, TEMPLATE, context)


def _dn(item: Member) -> str:
    return item.dn


def write_private(path: Path, text: str) -> Path:
    path.write_text(text, encoding="latin-1")
    path.chmod(0o600)
    return path


class FakeScst:
    """The fake scstadmin installed as DIR/scstadmin; its live SCST state is
    DIR/scstadmin.state (JSON), the record of its calls DIR/scstadmin.calls."""

    def __init__(self, directory: Path, *, loaded: bool = True) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.program = directory / "scstadmin"
        shutil.copy(FAKE, self.program)
        self.program.chmod(self.program.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP
                           | stat.S_IXOTH)
        self.state_path = Path(f"{self.program}.state")
        self.calls_path = Path(f"{self.program}.calls")
        if loaded:
            self.state_path.write_text(json.dumps(
                {"handlers": ["vdisk_blockio", "vdisk_fileio"], "devices": {},
                 "drivers": {"iscsi": {"enabled": 0, "targets": {}}}}))

    def state(self) -> dict[str, Any]:
        return dict(json.loads(self.state_path.read_text()))

    def set_state(self, state: dict[str, Any]) -> None:
        self.state_path.write_text(json.dumps(state))

    def calls(self) -> list[list[str]]:
        if not self.calls_path.exists():
            return []
        return [json.loads(line) for line in self.calls_path.read_text().splitlines()]

    def targets(self) -> dict[str, Any]:
        return dict(self.state()["drivers"]["iscsi"]["targets"])


def environment() -> dict[str, str]:
    """A hook-like minimal environment for running the scripts in tests."""
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C.UTF-8"}
