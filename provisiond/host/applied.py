"""What batch apply must not forget: files still waiting for their apply command, and the
last file whose apply succeeded.

A render with `on_change` installs a file and then runs a command that makes a service read
it (`tgt-admin --update`, `scstadmin -config`, a storage daemon restart). Between the two the
file on disk is newer than what the service runs, and a failed apply or a crash must not let
that be forgotten: the next render would find the file unchanged and run nothing. So an
*apply pending* marker is written and fsynced in the state directory before the install and
removed only once the command succeeded; a render that finds it runs the command even for an
unchanged file, after a daemon restart too.

Before the install the current file is also kept as `FILE.prev`, for a roll-back by hand
(`mv FILE.prev FILE`, then the command). It is the last file whose apply succeeded: while an
apply is pending the current file was never applied, so `.prev` is left as it is.

Markers are `STATE_DIR/apply-pending/<sha256 of the path>`, holding the path for a human.
Without a state directory (a test's pipeline, a preview) they live in memory only.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from pathlib import Path

from provisiond.host.files import atomic_write, fsync_directory


def previous(path: Path) -> Path:
    """Where the last applied version of `path` is kept."""
    return path.with_name(path.name + ".prev")


class PendingApplies:
    """The apply-pending markers of one daemon (one per file)."""

    def __init__(self, state_dir: Path | None) -> None:
        self.directory = Path(state_dir) / "apply-pending" if state_dir is not None else None
        self._memory: set[Path] = set()

    def _marker(self, path: Path) -> Path | None:
        if self.directory is None:
            return None
        return self.directory / hashlib.sha256(os.fsencode(path)).hexdigest()

    def pending(self, path: Path) -> bool:
        """Whether `path` was installed (or about to be) and not yet applied."""
        marker = self._marker(path)
        return path in self._memory if marker is None else marker.exists()

    def before_install(self, path: Path) -> None:
        """Call right before a changed `path` is installed: the current file kept as
        FILE.prev (unless an apply is pending), then the marker written."""
        if not self.pending(path):
            _keep_previous(path)
        self.mark(path)

    def mark(self, path: Path) -> None:
        """Record that `path` awaits its apply, durably (file and directory fsynced)."""
        marker = self._marker(path)
        if marker is None:
            self._memory.add(path)
            return
        assert self.directory is not None
        if not self.directory.is_dir():
            self.directory.mkdir(parents=True, exist_ok=True)
            fsync_directory(self.directory.parent)
        # Its existence is what counts: a torn content after a crash is harmless.
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            os.write(fd, os.fsencode(path) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_directory(self.directory)

    def applied(self, path: Path) -> None:
        """The apply command of `path` succeeded: nothing is pending any more. (Not fsynced:
        a marker that comes back after a crash only runs the command once more.)"""
        marker = self._marker(path)
        if marker is None:
            self._memory.discard(path)
        else:
            marker.unlink(missing_ok=True)


def _keep_previous(path: Path) -> None:
    """FILE.prev becomes a copy of the file at `path` (its mode kept), crash-safely; when
    there is no file, a stale FILE.prev goes (the roll-back is then removing the file). A
    symlink or anything but a regular file is not copied."""
    kept = previous(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(kept)
        return
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symlink: not ours to copy
            return
        raise
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            return
        content = handle.read()
    atomic_write(kept, content, mode=stat.S_IMODE(info.st_mode))
