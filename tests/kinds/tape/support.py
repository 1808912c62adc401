"""Helpers for the tape tests: the tape-mtx hook as a module, fake libraries (the state file
fake_mtx reads), the site's services, library and operation entries, the fake's call log."""

from __future__ import annotations

import fcntl
import importlib.machinery
import importlib.util
import json
import sys
import types
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import ldap3

from tests.support import REPO, mode_of, read, wait_for

HERE = Path(__file__).resolve().parent
FAKE_MTX = HERE / "fake_mtx"
TAPE_MTX = REPO / "scripts" / "tape-mtx"
SUFFIX = "dc=example,dc=org"
LIBRARIES = f"ou=libraries,ou=tape,ou=storage,{SUFFIX}"
OUS = "\n".join(
    f"dn: {dn}\nobjectClass: organizationalUnit\nou: {dn.split(',')[0].split('=')[1]}\n"
    for dn in (f"ou=storage,{SUFFIX}", f"ou=tape,ou=storage,{SUFFIX}", LIBRARIES))
RETURN, MESSAGE = "provisiondReturnValue", "provisiondMessage"


def load_hook() -> types.ModuleType:
    """scripts/tape-mtx as a module, to test its pure functions."""
    loader = importlib.machinery.SourceFileLoader("tape_mtx", str(TAPE_MTX))
    spec = importlib.util.spec_from_loader("tape_mtx", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["tape_mtx"] = module  # dataclasses look their module up
    loader.exec_module(module)
    return module


def library_state(slots: list[str], drives: list[str] | None = None,
                  **options: Any) -> dict[str, Any]:
    """A fake library: slots as "TAG", "" (empty), "ie:" / "ie:TAG" (import/export);
    drives as "" (empty) or "SLOT:TAG"."""
    def slot(text: str) -> dict[str, Any]:
        ie = text.startswith("ie:")
        tag = text[3:] if ie else text
        return {"full": bool(tag), "tag": tag, "ie": ie}

    def drive(text: str) -> dict[str, Any]:
        if not text:
            return {"full": False}
        source, _, tag = text.partition(":")
        return {"full": True, "source": int(source) if source else None, "tag": tag}

    return {"slots": [slot(s) for s in slots], "drives": [drive(d) for d in drives or ["", ""]],
            **options}


@dataclass
class Site:
    """A tape host inside the test's temp dir: dev/ holds the fake changers (their state
    files) and the drive paths, state/ tape-mtx's records."""

    base: Path
    changers: list[Path] = field(default_factory=list)

    @property
    def dev(self) -> Path:
        return self.base / "dev"

    @property
    def state(self) -> Path:
        return self.base / "state"

    def create(self) -> Site:
        self.dev.mkdir(parents=True, exist_ok=True)
        return self

    def changer(self, name: str, state: dict[str, Any]) -> Path:
        path = self.dev / name
        path.write_text(json.dumps(state))
        self.changers.append(path)
        return path

    def vars(self, **overrides: Any) -> dict[str, Any]:
        return {"mtx": str(FAKE_MTX), "retry_delay": 0, **overrides}

    def services(self, library: dict[str, Any] | None = None,
                 operation: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "tape-library": {"kind": "tape-library", "vars": self.vars(
                device_prefixes=[f"{self.dev}/"], **(library or {}))},
            "tape-operation": {"kind": "tape-operation", "vars": self.vars(
                state_dir=str(self.state), **(operation or {}))},
        }


def state_of(changer: Path) -> dict[str, Any]:
    return json.loads(changer.read_text())


def set_state(changer: Path, **changes: Any) -> None:
    """Change the fake library between calls, under its lock as the fake itself does."""
    with changer.open("r+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        state = json.load(handle)
        state.update(changes)
        handle.seek(0)
        handle.truncate()
        json.dump(state, handle)


@dataclass(frozen=True)
class Call:
    """One fake mtx call: its commands, when it began and ended (None: killed), its exit."""

    argv: tuple[str, ...]
    begin: float
    end: float | None
    rc: int | None
    pid: int


def calls(changer: Path) -> list[Call]:
    log = changer.with_name(changer.name + ".log")
    if not log.exists():
        return []
    begun: dict[int, dict[str, Any]] = {}
    found: list[Call] = []
    for line in log.read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "begin":
            if event["pid"] in begun:  # a pid reused after a kill: that call never ended
                old = begun.pop(event["pid"])
                found.append(Call(tuple(old["argv"]), old["time"], None, None, old["pid"]))
            begun[event["pid"]] = event
        else:
            start = begun.pop(event["pid"])
            found.append(Call(tuple(start["argv"]), start["time"], event["time"], event["rc"],
                              event["pid"]))
    found += [Call(tuple(e["argv"]), e["time"], None, None, e["pid"]) for e in begun.values()]
    return sorted(found, key=lambda call: call.begin)


def no_two_at_once(changer: Path) -> None:
    """Every call of the fake on `changer` ended before the next began."""
    every = calls(changer)
    assert all(a.end is not None and a.end <= b.begin for a, b in pairwise(every)), every


def moves(changer: Path) -> list[str]:
    """The move commands the fake was asked for, in order ("load 3 0")."""
    return [" ".join(c.argv) for c in calls(changer) if c.argv and c.argv[0] in
            ("load", "unload", "transfer")]


def library_dn(name: str) -> str:
    return f"cn={name},{LIBRARIES}"


def add_library(conn: ldap3.Connection, name: str, changer: Path | str,
                drives: list[str], **attributes: str | list[str]) -> str:
    """A library entry as a portal writes it; `attributes` replace the usual values (a
    different `cn` too: the DN keeps `name`)."""
    dn = library_dn(name)
    assert conn.add(dn, ["provisiondTapeLibrary", "provisiondProvisioning"], {
        "cn": name, "provisiondChangerDevice": str(changer), "provisiondDrive": drives,
        "provisiondMediaType": "LTO-8", "provisiondIsActive": "TRUE",
        "provisiondMode": "add", "provisiondState": "0", "provisiondExecutionDate": "0",
        **attributes}), conn.result
    return dn


def add_operation(conn: ldap3.Connection, library: str, name: str, action: str, *,
                  slot: str | None = None, drive: str | None = None,
                  target: str | None = None) -> str:
    dn = f"cn={name},{library}"
    attributes = {"cn": name, "provisiondTapeAction": action, "provisiondMode": "add",
                  "provisiondState": "0", "provisiondExecutionDate": "0"}
    for attribute, value in (("provisiondSlot", slot), ("provisiondDriveIndex", drive),
                             ("provisiondTargetSlot", target)):
        if value is not None:
            attributes[attribute] = value
    assert conn.add(dn, ["provisiondTapeOperation", "provisiondProvisioning"],
                    attributes), conn.result
    return dn


def values_of(conn: ldap3.Connection, dn: str, attribute: str) -> list[str]:
    conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=[attribute])
    return [v.decode() for v in conn.response[0]["raw_attributes"].get(attribute, [])]


def wait_done(conn: ldap3.Connection, dn: str, timeout: float = 30) -> dict[str, str]:
    """The entry once added or failed."""
    wait_for(lambda: mode_of(conn, dn) == "added" or read(conn, dn).get(RETURN) not in
             (None, "0"), timeout=timeout, what=f"{dn} done")
    return read(conn, dn)


def wait_added(conn: ldap3.Connection, dn: str, timeout: float = 30) -> dict[str, str]:
    entry = wait_done(conn, dn, timeout)
    assert entry.get("provisiondMode") == "added", entry
    return entry


def wait_failed(conn: ldap3.Connection, dn: str, timeout: float = 30) -> dict[str, str]:
    wait_for(lambda: read(conn, dn).get(RETURN) not in (None, "0")
             or mode_of(conn, dn) == "added", timeout=timeout, what=f"{dn} failed")
    entry = read(conn, dn)
    assert entry.get(RETURN) not in (None, "0"), entry
    return entry
