"""Helpers the engine and daemon tests share: configs, entries, waiting, daemons, syslog."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ldap3
import yaml

from provisiond.config import load_config
from provisiond.core.clock import Clock
from provisiond.core.engine import Engine
from provisiond.process.daemon import configure_logging
from provisiond.testing.slapd import Slapd

REPO = Path(__file__).resolve().parents[1]
DEMO_BASE = "ou=demo,dc=example,dc=org"


def connect(slapd: Slapd) -> ldap3.Connection:
    return ldap3.Connection(ldap3.Server(slapd.uri), slapd.root_dn, slapd.root_password,
                            auto_bind=True, raise_exceptions=False)


def write_config(directory: Path, slapd: Slapd, services: dict[str, Any],
                 **top: Any) -> Path:
    """A provisiond.yaml for `slapd` in `directory` (with a private secret file)."""
    directory.mkdir(parents=True, exist_ok=True)
    secret = slapd.write_password_file(directory / "bind.secret")
    config: dict[str, Any] = {
        "ldap": {"uri": slapd.uri, "bind_dn": slapd.root_dn, "bind_password_file": str(secret),
                 "timeout": 5},
        "sync": {"mode": "persist", "interval": 0.5},
        "state_dir": str(directory / "state"),
        "workers": 4,
        "logging": {"syslog_address": str(directory / "syslog.sock"), "level": "debug"},
        "retry": {"limit": 3, "initial": 0.2, "maximum": 1},
        "hooks": {"timeout": 20, "kill_grace": 1},
        "services": services,
    }
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    path = directory / "provisiond.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def add_identity(conn: ldap3.Connection, slapd: Slapd, name: str,
                 directory: Path) -> dict[str, str]:
    """A bind identity of its own for a daemon (as several daemons on one subtree must have):
    the `ldap:` settings to bind as it."""
    dn = f"cn={name},{slapd.suffix}"
    password = f"secret-{name}"
    assert conn.add(dn, ["applicationProcess", "simpleSecurityObject"],
                    {"cn": name, "userPassword": password}), conn.result
    directory.mkdir(parents=True, exist_ok=True)
    secret = directory / f"{name}.secret"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    return {"bind_dn": dn, "bind_password_file": str(secret)}


def demo_service(root: Path, **overrides: Any) -> dict[str, Any]:
    return {"demo": {"kind": "demo", "vars": {"root": str(root), "base": DEMO_BASE},
                     **overrides}}


def add_item(conn: ldap3.Connection, name: str, *, mode: str = "add", size: str = "10M",
             execution_date: str = "0", active: str | None = None, **extra: str) -> str:
    dn = f"cn={name},{DEMO_BASE}"
    attributes: dict[str, Any] = {
        "provisiondMode": mode, "provisiondState": "0",
        "provisiondExecutionDate": execution_date, "provisiondSize": size, **extra,
    }
    if active is not None:
        attributes["provisiondIsActive"] = active
    ok = conn.add(dn, ["provisiondDemoItem", "provisiondProvisioning"], attributes)
    assert ok, conn.result
    return dn


def request(conn: ldap3.Connection, dn: str, mode: str, *, names: tuple[str, str] = (
        "provisiondMode", "provisiondState"), **changes: str) -> None:
    """What a portal does: ask for `mode` (state 0), optionally changing attributes.
    `names` are the mode and state attributes (stoney's for backup accounts)."""
    modifications = {
        names[0]: [(ldap3.MODIFY_REPLACE, [mode])],
        names[1]: [(ldap3.MODIFY_REPLACE, ["0"])],
        **{k: [(ldap3.MODIFY_REPLACE, [v])] for k, v in changes.items()},
    }
    assert conn.modify(dn, modifications), conn.result


def read(conn: ldap3.Connection, dn: str) -> dict[str, str]:
    conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["*", "entryUUID"])
    if not conn.response or conn.result["result"] != 0:
        return {}
    raw = conn.response[0]["raw_attributes"]
    return {k: v[0].decode() for k, v in raw.items() if v}


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.02)


def mode_of(conn: ldap3.Connection, dn: str, attribute: str = "provisiondMode") -> str | None:
    return read(conn, dn).get(attribute)


@contextmanager
def running(config_path: Path, clock: Clock | None = None) -> Iterator[Engine]:
    """The engine in-process against the configured directory, stopped on exit."""
    config = load_config(config_path)
    configure_logging(config, foreground=False)
    engine = Engine(config, clock)
    stop = threading.Event()
    engine.start_workers()
    engine.run_streams(stop)
    try:
        yield engine
    finally:
        stop.set()
        engine.shutdown(grace=10)


class SyslogCapture:
    """A real AF_UNIX datagram socket standing in for /dev/log."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.lines.append(data.decode(errors="replace").rstrip("\0\n"))

    def text(self) -> str:
        return "\n".join(self.lines)

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


def start_daemon(config: Path, *args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - child owns it
    return subprocess.Popen(
        [sys.executable, "-m", "provisiond", "--config", str(config), "run", *args],
        env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )


def stop_daemon(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM,
                timeout: float = 30) -> int:
    if process.poll() is None:
        process.send_signal(sig)
    return process.wait(timeout=timeout)


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "provisiond", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def runs(root: Path) -> list[str]:
    log = root / "runs.log"
    return log.read_text().splitlines() if log.exists() else []


def iter_files(root: Path) -> Iterator[Path]:
    return (p for p in root.rglob("*") if p.is_file())
