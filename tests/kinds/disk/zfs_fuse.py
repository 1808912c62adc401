"""A real ZFS for tests: Debian's zfs-fuse daemon, a pool per test on a sparse file vdev.

zfs-fuse listens on a fixed socket (/var/run/zfs/zfs_socket, with /var/lock/zfs/zfs_lock) and
its `zfs`/`zpool` know no other, so there is one daemon per host, not one per test: the
fixture uses the one that answers, or starts one in the foreground (its own session) and
stops it when the last test process using it is done (a shared flock counts the users; a
daemon the fixture did not start is never stopped). Each test gets its own pool, named
uniquely, created with `-o cachefile=none` (never imported again by a later daemon) and `-m
none` (its root not mounted), destroyed afterwards with its vdev. zfs-fuse makes datasets,
enforces quotas and mounts through FUSE; it cannot make volumes (`zfs create -V` aborts with
"Function not implemented"): zvols are tested with tests/kinds/disk/fake_zfs.

Also here: the hook under test loaded as a module, and running it as a process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import runpy
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.support import REPO

HOOK = REPO / "scripts" / "disk-zfs"
ZFS = shutil.which("zfs", path="/usr/sbin:/sbin") or "/usr/sbin/zfs"
ZPOOL = shutil.which("zpool", path="/usr/sbin:/sbin") or "/usr/sbin/zpool"
ZFS_FUSE = shutil.which("zfs-fuse", path="/usr/sbin:/sbin")
STATE = Path("/run/provisiond-tests-zfs-fuse")  # the users' lock and the started daemon's pid
POOL_SIZE = 256 << 20


def load_hook() -> SimpleNamespace:
    """scripts/disk-zfs's functions and classes (runpy registers it as a module while it runs,
    as its dataclasses need)."""
    return SimpleNamespace(**runpy.run_path(str(HOOK), run_name="disk_zfs"))


def run_hook(*args: str, env: dict[str, str] | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The hook as the engine runs it: a process under the system python3."""
    return subprocess.run([str(HOOK), *args], capture_output=True, text=True, timeout=timeout,
                          env=env if env is not None else {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                          check=False)


def outputs(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """The hook's `provisiond-set NAME=VALUE` lines."""
    found = {}
    for line in done.stdout.splitlines():
        if line.startswith("provisiond-set "):
            key, _, value = line.removeprefix("provisiond-set ").partition("=")
            found[key] = value
    return found


def zfs(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([ZFS, *args], capture_output=True, text=True, check=False,
                          env={"PATH": "/usr/sbin:/usr/bin", "LC_ALL": "C"}, timeout=60)
    if check and done.returncode != 0:
        raise AssertionError(f"zfs {' '.join(args)}: exit {done.returncode}: {done.stderr}")
    return done


def prop(dataset: str, name: str) -> str:
    return zfs("get", "-Hp", "-o", "value", name, dataset).stdout.strip()


def _answers() -> bool:
    done = subprocess.run([ZPOOL, "list", "-H"], capture_output=True, check=False, timeout=30)
    return done.returncode == 0


def _retry_busy(argv: list[str], tries: int = 20) -> subprocess.CompletedProcess[str]:
    """zfs-fuse says "busy" for a moment after files were written: try again briefly."""
    for _ in range(tries):
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
        if done.returncode == 0 or "busy" not in done.stderr:
            return done
        time.sleep(0.25)
    return done


def _alive(pid: int) -> bool:
    """Running (a zombie whose parent, another test process, has not reaped it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


class Daemon:
    """The host's zfs-fuse, shared by every test process; this process holds a use of it."""

    def __init__(self) -> None:
        STATE.mkdir(mode=0o700, exist_ok=True)
        self._users = open(STATE / "users", "a")  # noqa: SIM115 - held for the session
        with self._exclusive():
            if not _answers():
                self._start()
            fcntl.flock(self._users, fcntl.LOCK_SH)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        with open(STATE / "start", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _start(self) -> None:
        assert ZFS_FUSE, "zfs-fuse is not installed"
        log = open(STATE / "daemon.log", "ab")  # noqa: SIM115 - the daemon's
        process = subprocess.Popen([ZFS_FUSE, "--no-daemon", "--no-kstat-mount"],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                   start_new_session=True)
        (STATE / "pid").write_text(f"{process.pid}\n")
        deadline = time.monotonic() + 20
        while not _answers():
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"zfs-fuse did not start (see {STATE / 'daemon.log'})")
            time.sleep(0.05)

    def release(self) -> None:
        """Give up this process's use; the last user stops a daemon a fixture started."""
        with self._exclusive():
            fcntl.flock(self._users, fcntl.LOCK_UN)
            try:
                fcntl.flock(self._users, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another test process still uses it
            try:
                self._stop_started()
            finally:
                fcntl.flock(self._users, fcntl.LOCK_UN)
                self._users.close()

    @staticmethod
    def _stop_started() -> None:
        pid_file = STATE / "pid"
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            return  # not started by a fixture: not ours to stop
        pid_file.unlink()
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() != "zfs-fuse":
                return
            os.kill(pid, signal.SIGTERM)  # it unmounts its filesystems and exits (~4 s)
        except (OSError, ProcessLookupError):
            return
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.1)


@dataclass(frozen=True)
class Pool:
    """A private zpool on a file vdev, and a directory to mount its datasets under."""

    name: str
    vdev: Path
    mount_root: Path

    def dataset(self, leaf: str) -> str:
        return f"{self.name}/{leaf}"

    def exists(self, leaf: str) -> bool:
        return zfs("get", "-H", "-o", "value", "type", self.dataset(leaf),
                   check=False).returncode == 0

    def clear(self) -> None:
        """Destroy every dataset of the pool (retrying a passing "busy")."""
        for child in self.children():
            if "/" not in child:
                done = _retry_busy([ZFS, "destroy", "-r", self.dataset(child)])
                assert done.returncode == 0 or "does not exist" in done.stderr, done.stderr

    def children(self) -> list[str]:
        out = zfs("list", "-H", "-r", "-o", "name", self.name).stdout.split()
        return sorted(name.split("/", 1)[1] for name in out if "/" in name)


_daemon: Daemon | None = None


def daemon() -> Daemon:
    """This process's use of the daemon, taken once and given back at exit."""
    global _daemon
    if _daemon is None:
        import atexit

        _daemon = Daemon()
        atexit.register(_daemon.release)
    return _daemon


def require_zfs_fuse() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (zfs-fuse mounts through /dev/fuse); CI runs as root")
    if not ZFS_FUSE or not os.path.exists("/dev/fuse"):
        pytest.skip("zfs-fuse is not installed (scripts/dev/test installs it) or no /dev/fuse")


@pytest.fixture
def zpool(tmp_path: Path) -> Iterator[Pool]:
    """A fresh pool of 256 MiB on zfs-fuse, destroyed afterwards."""
    require_zfs_fuse()
    daemon()
    pool = Pool(name=f"pvd{secrets.token_hex(4)}", vdev=tmp_path / "vdev",
                mount_root=tmp_path / "mnt")
    with open(pool.vdev, "wb") as vdev:
        vdev.truncate(POOL_SIZE)
    pool.mount_root.mkdir()
    done = subprocess.run([ZPOOL, "create", "-o", "cachefile=none", "-m", "none", pool.name,
                           str(pool.vdev)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    try:
        yield pool
    finally:
        destroyed = _retry_busy([ZPOOL, "destroy", "-f", pool.name])
        assert destroyed.returncode == 0, destroyed.stderr


def killer(directory: Path, real: str, after: int) -> Path:
    """A `zfs` that runs the real one and then SIGKILLs its caller (the hook) once it has
    run `after` commands: the hook dies right after its Nth zfs command took effect. The
    count is kept in a file beside it (the hook passes no environment of ours along)."""
    directory.mkdir(parents=True, exist_ok=True)
    program = directory / "zfs"
    program.write_text(f"""#!/usr/bin/env python3
import os, signal, subprocess, sys
count = {str(directory / 'count')!r}
try:
    n = int(open(count).read()) + 1
except OSError:
    n = 1
open(count, "w").write(str(n))
done = subprocess.run([{real!r}, *sys.argv[1:]])
if n == {after}:
    os.kill(os.getppid(), signal.SIGKILL)
sys.exit(done.returncode)
""")
    program.chmod(0o755)
    with contextlib.suppress(FileNotFoundError):
        (directory / "count").unlink()
    return program


def calls(directory: Path) -> int:
    try:
        return int((directory / "count").read_text())
    except OSError:
        return 0


def state_of(pool: Pool, leaves: list[str], props: tuple[str, ...]) -> dict[str, Any]:
    """The properties that matter of each dataset, to compare runs."""
    return {leaf: {p: prop(pool.dataset(leaf), p) for p in props} for leaf in leaves}


FAKE = Path(__file__).with_name("fake_zfs")


@dataclass(frozen=True)
class FakeZfs:
    """tests/kinds/disk/fake_zfs installed as DIR/bin/zfs with its state beside it."""

    program: Path
    device_dir: Path

    @property
    def state_file(self) -> Path:
        return self.program.with_name("fake_zfs.json")

    def state(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.state_file.read_text())
        return loaded

    def update(self, **changes: Any) -> None:
        self.state_file.write_text(json.dumps({**self.state(), **changes}))

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.program), *args], capture_output=True, text=True,
                              check=False, timeout=30)


def install_fake(directory: Path, *pools: str) -> FakeZfs:
    (directory / "bin").mkdir(parents=True)
    (directory / "dev").mkdir()
    fake = FakeZfs(directory / "bin" / "zfs", directory / "dev")
    fake.program.symlink_to(FAKE)
    fake.state_file.write_text(json.dumps({"pools": list(pools), "datasets": {},
                                           "device_dir": str(fake.device_dir)}))
    return fake
