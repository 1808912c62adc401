"""One writer per aggregate file per host.

A file rendered from all active entries (a cron schedule, scst.conf, bacula-sd.conf) must list
every provisioned entry. A daemon's render includes its own results even before the
directory's sync state shows them (aggregate.py), but not another daemon's, whose results it
learns only from the directory, later: two daemons rendering the same file on one host would
each drop the other's newest entries, and the last rename wins. Rather than coordinating
writers, that deployment is refused: at start each daemon takes an exclusive lock per
aggregate file it will write, held for its lifetime, and a second daemon that wants the same
file stops with the path and the pid of the holder. (Daemons on different hosts each write
their own host's file and are unaffected.)

The locks are `flock`s on files named by a hash of the target's path in a host-wide
directory; the kernel drops them when the process dies, so a crash leaves nothing stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

SYSTEM_LOCK_DIR = Path("/run/lock/provisiond")


class HostConflict(Exception):
    """Another process on this host already writes one of our aggregate files."""


def lock_directory() -> Path:
    """The host-wide lock directory: /run/lock/provisiond for root; a per-user one otherwise
    (daemons of different users cannot write the same file anyway)."""
    if os.geteuid() == 0:
        return SYSTEM_LOCK_DIR
    return Path(tempfile.gettempdir()) / f"provisiond-locks-{os.geteuid()}"


class AggregateLocks:
    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or lock_directory()
        self._held: dict[Path, int] = {}

    def acquire(self, paths: Iterable[Path]) -> None:
        """Lock every path (all or none); raises HostConflict naming the holder."""
        try:
            for path in paths:
                self._acquire(Path(os.path.abspath(path)))
        except BaseException:
            self.release()
            raise

    def _acquire(self, path: Path) -> None:
        if path in self._held:
            return
        self.directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        name = hashlib.sha256(str(path).encode()).hexdigest()[:32] + ".lock"
        fd = os.open(self.directory / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").split("\n")[0] or "unknown"
            os.close(fd)
            raise HostConflict(
                f"another provisiond (pid {holder}) already writes {path} on this host; "
                "one daemon per aggregate file per host (give each daemon its own paths "
                "or run one daemon)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n{path}\n".encode(), 0)
        self._held[path] = fd

    def release(self) -> None:
        for fd in self._held.values():
            with contextlib.suppress(OSError):
                os.close(fd)  # closing the only descriptor drops the flock
        self._held.clear()
