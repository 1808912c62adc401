"""Helpers for the Bacula SD tests: the hook scripts as modules, the template rendered from
members as the engine gives them, a site of real directories and device nodes, and a real
bacula-sd kept running by a small supervisor that a stand-in `systemctl` asks to restart it
(as systemd would: the restart is not a child of the hook, so the hook's tree may end)."""

from __future__ import annotations

import copy
import importlib.machinery
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from provisiond import paths
from provisiond.aggregates.mirror import Member
from provisiond.config.load import find_kind
from provisiond.config.schema import Where
from provisiond.host.jinja import make_environment
from tests.support import REPO, stop_daemon

HERE = Path(__file__).resolve().parent
SCRIPTS = REPO / "scripts"
CHECK = SCRIPTS / "bacula-sd-check"
APPLY = SCRIPTS / "bacula-sd-apply"
BACULA_SD = Path("/usr/sbin/bacula-sd")
TEMPLATE = "bacula/bacula-sd.conf.j2"
ENV = make_environment(paths.templates_dirs())
PASSWORD = 'pa"ss\\word-Secret42'  # a quote and a backslash: escaped in the file


def require_bacula_sd() -> None:
    if not os.access(BACULA_SD, os.X_OK):
        pytest.skip("Debian's bacula-sd is not installed (scripts/dev/test installs it)")


def load_script(path: Path) -> types.ModuleType:
    """A hook script as a module, to test its pure functions."""
    name = path.name.replace("-", "_")
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    loader.exec_module(module)
    return module


def with_bacula(kind: str, *, only_bacula: bool = False, **vars_: Any) -> dict[str, Any]:
    """The shipped `kind` (tape-library or disk-repository: both carry the Bacula SD step and
    include etc/kinds/parts/bacula-sd.yaml) as a plain service definition, `vars_` set;
    `only_bacula`: the Bacula step is its only step (no mtx, no LVM)."""
    data = copy.deepcopy(dict(find_kind(kind, Where(f"kind {kind}"))))
    data.pop("description", None)
    if only_bacula:
        (step,) = [step for step in data["steps"]["add"]
                   if step.get("name") == "write bacula-sd configuration"]
        data["steps"] = {"add": [step], "modify": "add", "delete": [step]}
    for name, value in vars_.items():
        declaration = data["vars"][name]
        base = declaration if isinstance(declaration, dict) else {}
        data["vars"][name] = {**base, "default": value}
    return data


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Site:
    """An SD host inside the test's temp dir: the SD's directories, the password file, disk
    repository mount points and tape device nodes (real character devices, made with mknod:
    the kernel has no tape driver, so nothing opens them)."""

    base: Path

    @property
    def work(self) -> Path:
        return self.base / "work"

    @property
    def password_file(self) -> Path:
        return self.base / "etc" / "sd-director.password"

    @property
    def config(self) -> Path:
        return self.base / "etc" / "bacula-sd.conf"

    def create(self) -> Site:
        for directory in (self.work, self.password_file.parent, self.base / "disks",
                          self.base / "dev"):
            directory.mkdir(parents=True, exist_ok=True)
        self.write_password(PASSWORD)
        return self

    def write_password(self, password: str, mode: int = 0o600) -> None:
        escaped = password.replace("\\", "\\\\").replace('"', '\\"')
        self.password_file.write_text(f'Password = "{escaped}"\n')
        self.password_file.chmod(mode)

    def mount_point(self, name: str) -> Path:
        path = self.base / "disks" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def char_device(self, name: str, minor: int) -> Path:
        """A character device node (major 9, the st driver's) at dev/NAME."""
        if os.geteuid() != 0:
            pytest.skip("needs root (mknod of a tape device node)")
        path = self.base / "dev" / name
        if not path.exists():
            os.mknod(path, 0o660 | 0o020000, os.makedev(9, minor))
        return path

    def vars(self, **overrides: Any) -> dict[str, Any]:
        """The bacula_* vars of a service writing the SD file (as typed vars reach the
        template) plus mount_root, which disk repositories' members carry."""
        return {
            "bacula_sd_config": str(self.config),
            "bacula_sd": str(BACULA_SD),
            "bacula_sd_name": "test-sd",
            "bacula_sd_port": 9103,
            "bacula_sd_address": "127.0.0.1",
            "bacula_sd_working_directory": str(self.work),
            "bacula_sd_pid_directory": str(self.work),
            "bacula_sd_maximum_concurrent_jobs": 20,
            "bacula_director_name": "test-dir",
            "bacula_director_password_file": str(self.password_file),
            "bacula_changer_command": "/etc/bacula/scripts/mtx-changer %c %o %S %a %d",
            "bacula_tape_always_open": True,
            "bacula_file_devices": 2,
            "bacula_systemctl": "/usr/bin/systemctl",
            "bacula_sd_unit": "bacula-sd.service",
            "bacula_sd_restart_wait": 120,
            **overrides,
        }

    def library(self, name: str, drives: int, vars_: dict[str, Any],
                media_type: str = "LTO-8", reverse: bool = False) -> Member:
        changer = self.char_device(f"sg-{name}", 200)
        lines = [f"{i} {self.char_device(f'nst-{name}-{i}', 128 + i)}" for i in range(drives)]
        lines = lines[::-1] if reverse else lines  # as LDAP may return them
        return Member(f"cn={name},ou=libraries,dc=example,dc=org", f"uuid-{name}",
                      {"name": name, "changer": str(changer), "drives": lines,
                       "media_type": media_type, "active": True},
                      vars=vars_, service="tape-library")

    def disk(self, name: str, vars_: dict[str, Any], *, flagged: bool = True,
             type_: str = "filesystem", reported: bool = True) -> Member:
        """A disk repository; `reported`: its mount point is already in provisiondPath (else
        the template falls back to mount_root/NAME, as for an entry being added)."""
        path = self.mount_point(name)
        return Member(f"cn={name},ou=disks,dc=example,dc=org", f"uuid-{name}",
                      {"name": name, "backend": "lvm", "pool": "vg0", "type": type_,
                       "size": 1 << 30, "active": True, "bacula_device": flagged},
                      outputs={"path": str(path)} if reported else {},
                      vars={**vars_, "mount_root": str(path.parent)},
                      service="disk-repository")


def render(vars_: dict[str, Any], libraries: list[Member] = (),  # type: ignore[assignment]
           disks: list[Member] = ()) -> str:  # type: ignore[assignment]
    """The SD file as the writer's render makes it (sources in the kinds' order)."""
    return ENV.get_template(TEMPLATE).render({
        "service": "tape-library", "vars": vars_, "entries": list(libraries),
        "sources": {"tape-library": list(libraries), "disk-repository": list(disks)}})


def run_check(config: Path, password_file: Path | None,
              bacula_sd: Path = BACULA_SD) -> subprocess.CompletedProcess[str]:
    argv = [str(CHECK), f"--bacula-sd={bacula_sd}", str(config)]
    if password_file is not None:
        argv.insert(2, f"--password-file={password_file}")
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


class Supervisor:
    """Keeps one real `bacula-sd -f -c CONFIG` running, like systemd: a restart request on
    a UNIX socket (what the stand-in systemctl sends) stops it (SIGTERM, waited for) and
    starts it again; the answer says whether it came back."""

    def __init__(self, config: Path, socket_path: Path) -> None:
        self.config = config
        self.socket_path = socket_path
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.fail_next = False
        self._lock = threading.Lock()  # a restart and the test's stop never interleave
        self._stopped = False
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(socket_path))
        self._server.listen(4)
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> Supervisor:
        self._launch()
        self._thread.start()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def _launch(self) -> None:
        self.process = subprocess.Popen([str(BACULA_SD), "-f", "-c", str(self.config)],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)

    def _stop_sd(self) -> None:
        if self.process is None:
            return
        try:
            stop_daemon(self.process, timeout=10)  # bacula-sd exits on SIGTERM...
        except subprocess.TimeoutExpired:  # ...unless it is stuck opening a drive
            stop_daemon(self.process, signal.SIGKILL)

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return
            with connection:
                request = connection.recv(1024).decode()
                if self.fail_next:
                    self.fail_next = False
                    connection.sendall(b"Job for bacula-sd.service failed.\n")
                    continue
                if request.startswith("restart "):
                    with self._lock:
                        if self._stopped:
                            connection.sendall(b"the test is over\n")
                            continue
                        self._stop_sd()
                        self._launch()
                        self.restarts += 1
                    connection.sendall(b"ok\n")
                else:
                    connection.sendall(b"unknown request\n")

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._server.close()
            self._stop_sd()


def fake_systemctl(directory: Path, socket_path: Path) -> Path:
    """A `systemctl` for the apply hook: `systemctl restart UNIT` asks the supervisor and
    exits 0 when it answers ok, 1 with its answer on stderr otherwise (as systemctl does)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "systemctl"
    path.write_text(
        "#!/usr/bin/env python3\n"
        "import socket, sys\n"
        "if sys.argv[1:2] != ['restart'] or len(sys.argv) != 3:\n"
        "    sys.exit('usage: systemctl restart UNIT')\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        f"s.connect({str(socket_path)!r})\n"
        "s.sendall(('restart ' + sys.argv[2]).encode())\n"
        "answer = s.recv(1024).decode()\n"
        "if answer != 'ok\\n':\n"
        "    sys.stderr.write(answer)\n"
        "    sys.exit(1)\n")
    path.chmod(0o755)
    return path
