"""Crash-safe files and confined paths.

The daemon rewrites configuration that other services read, and a power cut must leave either
the old or the new file, never a torn one: files are written to a temp file in the same
directory, fsynced, renamed over the target, and the directory is fsynced. Unchanged files are
not rewritten, so mtimes stay meaningful and reload hooks are not triggered for nothing.

Paths come from LDAP values through templates, so every path is confined to the service's
declared roots: normalized lexically and with symlinks in its existing parents resolved, and it
must end up strictly below a root. The last component is not resolved, so a symlink there is
replaced or removed itself, never followed. This guards against hostile *values*; it does not
make the tree safe against a local user who can swap directories for symlinks concurrently.
Since this runs on every path, the kernel resolves the existing parents in one lookup (and
names the result in /proc/self/fd); whatever it cannot vouch for goes through
os.path.realpath, so the answer is always realpath's. Nothing is cached between calls.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path


class PathNotAllowed(Exception):
    """A path is not strictly below one of the allowed roots (the message says why)."""


# A root must confine: one that is (or resolves to) / or one of these would let LDAP values
# reach the system itself. Directories *below* them (/etc/rsnapshot, /var/backup) are fine.
SYSTEM_DIRECTORIES = frozenset(Path(p) for p in (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/root",
    "/run", "/sbin", "/sys", "/tmp", "/usr", "/usr/bin", "/usr/lib", "/usr/lib32", "/usr/lib64",
    "/usr/libexec", "/usr/local", "/usr/sbin", "/usr/share", "/var", "/var/lib", "/var/log",
    "/var/tmp",
))


# The same, as text: confine compares normalized strings, not Paths (Path construction showed
# up in profiles of the hot path, issue 12).
_SYSTEM_DIRECTORY_TEXTS = frozenset(map(str, SYSTEM_DIRECTORIES))


def _lexical(text: str) -> str:
    """Absolute and normalized without touching the filesystem ("//x/./y/.." is "/x")."""
    return "/" + os.path.normpath(text).lstrip("/")


def _kernel_name(fd: int) -> str:
    """The kernel's name for what `fd` was opened on (a test replaces it to fake /proc)."""
    return os.readlink(f"/proc/self/fd/{fd}")


def _kernel_resolved(directory: str) -> str | None:
    """`directory` with every symlink resolved by the kernel in one lookup, or None if its
    name for it is not a path that leads back to the very directory opened now: /proc not
    mounted, " (deleted)" appended, a directory reached in another mount namespace (through a
    /proc magic link). Raises OSError if `directory` cannot be opened as a directory."""
    fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        name = _kernel_name(fd)
        if not name.startswith("/"):
            return None
        opened, found = os.fstat(fd), os.stat(name)
    except OSError:
        return None
    finally:
        os.close(fd)
    if (opened.st_dev, opened.st_ino) != (found.st_dev, found.st_ino):
        return None
    return name


def _realpath(path: str) -> str:
    """`os.path.realpath(path)` for an absolute, lexically normalized `path` (no ".", "..",
    or repeated "/"), which lstats every component from Python: here the kernel resolves the
    deepest existing directory in one lookup instead, and any case it cannot vouch for falls
    back to realpath itself, so the answer is always the same.

    realpath resolves what exists and appends the rest as written. The rest is appended here
    only when its first name does not exist or is neither a directory nor a symlink (then
    nothing below it can exist either); a dangling symlink or one to a file is followed by
    realpath, and a directory means the tree changed meanwhile, so both fall back. Any other
    error (a loop, more than 40 links, no permission, no file descriptor left) falls back too.
    """
    head, missing = path, []
    while True:
        try:
            real = _kernel_resolved(head)
            break
        except (FileNotFoundError, NotADirectoryError):
            if head == "/":
                return os.path.realpath(path)
            head, name = head.rsplit("/", 1)
            head = head or "/"
            missing.append(name)
        except OSError:
            return os.path.realpath(path)
    if real is None:
        return os.path.realpath(path)
    if not missing:
        return real
    missing.reverse()
    try:
        info = os.lstat(os.path.join(real, missing[0]))
    except FileNotFoundError:
        pass
    except OSError:
        return os.path.realpath(path)
    else:
        if stat.S_ISLNK(info.st_mode) or stat.S_ISDIR(info.st_mode):
            return os.path.realpath(path)
    return os.path.join(real, *missing)


def _root_forms(root: str | os.PathLike[str]) -> tuple[str, str]:
    """(normalized, symlinks resolved) forms of a service root; PathNotAllowed unless it is
    absolute and neither form is / or a system directory."""
    text = os.fspath(root)
    if not text or "\0" in text or not os.path.isabs(text):
        raise PathNotAllowed(f"root {text!r} is not an absolute path")
    lexical = _lexical(text)
    resolved = _realpath(lexical)
    for form, how in ((lexical, "is"), (resolved, "resolves to")):
        if form == "/":
            raise PathNotAllowed(f"root {text} {how} / (normalised); a root must be a "
                                 "directory below it")
        if form in _SYSTEM_DIRECTORY_TEXTS:
            raise PathNotAllowed(f"root {text} {how} the system directory {form}; use a "
                                 "directory below it")
    return lexical, resolved


def check_root(root: str | os.PathLike[str]) -> Path:
    """A service root, normalized; PathNotAllowed if it is relative, or if it (or what it
    resolves to now) is / or a system directory. `confine` checks again on every use, since
    a symlink may change after the configuration was loaded."""
    return Path(_root_forms(root)[0])


def fsync_directory(directory: Path) -> None:
    """Make the entries of `directory` (a rename, a new file) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _same_content(path: Path, data: bytes, mode: int, owner: tuple[int, int] | None) -> bool:
    """Whether `path` is a regular file (not a symlink) with exactly these bytes and metadata."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size != len(data):
            return False
        if stat.S_IMODE(info.st_mode) != mode:
            return False
        if owner is not None and (info.st_uid, info.st_gid) != owner:
            return False
        return handle.read(len(data) + 1) == data


def _write_temp(path: Path, data: bytes, mode: int, owner: tuple[int, int] | None) -> Path:
    """A fully written and fsynced `.<name>.<pid>.<random>.tmp` beside `path`; removed on
    error. The pid lets a later start tell a crashed writer's leftovers from a live one's
    (tempsweep.py)."""
    for _ in range(100):
        temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(temp, flags, 0o600)
        except FileExistsError:
            continue
        break
    else:
        raise FileExistsError(f"cannot create a temporary file beside {path}")
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if owner is not None:
                os.fchown(fd, *owner)  # before fchmod: chown may clear set-id bits
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def atomic_write(
    path: Path, data: bytes, *, mode: int = 0o644, owner: tuple[int, int] | None = None,
    compare: bool = True,
) -> bool:
    """Replace `path` crash-safely; False (and nothing written) if it already has exactly these
    bytes, this mode and (when given) this owner. A symlink at `path` is replaced, not followed.
    `compare=False`: the caller knows the bytes differ (it just read the file), so the file is
    written without being read again."""
    path = Path(path)
    mode &= 0o7777
    if compare and _same_content(path, data, mode, owner):
        return False
    temp = _write_temp(path, data, mode, owner)
    try:
        os.rename(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return True


def write_temp_beside(
    path: Path, data: bytes, mode: int = 0o600, *, owner: tuple[int, int] | None = None
) -> Path:
    """Write `data` to a fsynced temp file in `path`'s directory (for a validator to check);
    then `install_temp(temp, path)`, or unlink the temp to discard it."""
    return _write_temp(Path(path), data, mode & 0o7777, owner)


def install_temp(temp: Path, path: Path) -> None:
    """Rename a temp file from `write_temp_beside` over `path` and fsync the directory."""
    temp, path = Path(temp), Path(path)
    if os.path.realpath(temp.parent) != os.path.realpath(path.parent):
        raise ValueError(f"{temp} is not beside {path}: the rename would not be atomic")
    os.rename(temp, path)
    fsync_directory(path.parent)


def _below(candidate: str, bases: Sequence[str]) -> bool:
    """Whether normalized `candidate` is strictly below one of the normalized `bases` (none
    of them /), component-wise: /srv/backup2 is not below /srv/backup."""
    return any(candidate.startswith(base + "/") for base in bases)


def confine(path: str | Path, roots: Sequence[Path]) -> Path:
    """`path` made absolute and normalized, symlinks in its existing parents resolved; raises
    PathNotAllowed unless both the lexical and the resolved form are strictly below a root,
    or if a root is unusable (see `check_root`)."""
    text = os.fspath(path)
    if "\0" in text:
        raise PathNotAllowed(f"{text!r}: contains a NUL character")
    if not os.path.isabs(text):
        raise PathNotAllowed(f"{text}: not an absolute path")
    lexical = _lexical(text)
    if lexical == "/":
        raise PathNotAllowed(f"{text}: is the filesystem root")
    parent, name = lexical.rsplit("/", 1)
    resolved = os.path.join(_realpath(parent or "/"), name)
    # Roots were checked at load; again here (defence in depth, and symlinks may have moved).
    forms = [_root_forms(r) for r in roots]
    lexical_roots = [form[0] for form in forms]
    real_roots = [form[1] for form in forms]
    shown = ", ".join(lexical_roots) or "(no roots)"
    if lexical in lexical_roots or resolved in real_roots:
        raise PathNotAllowed(f"{text}: is an allowed root itself, not a path below one")
    if not _below(lexical, lexical_roots + real_roots):
        raise PathNotAllowed(f"{text}: outside the allowed roots ({shown})")
    if not _below(resolved, real_roots):
        raise PathNotAllowed(f"{text}: leads to {resolved} through a symlink, outside {shown}")
    return Path(resolved)


def make_directory(path: Path, *, mode: int, owner: tuple[int, int] | None) -> bool:
    """Ensure `path` is a directory with this mode (and owner); missing parents are created
    0755 (root-owned when running as root). True if anything was created or changed.
    Raises FileExistsError if something other than a directory (or a symlink) is there."""
    path = Path(path)
    mode &= 0o7777
    changed = False
    missing = []
    for parent in path.parents:
        if os.path.lexists(parent):
            break
        missing.append(parent)
    for parent in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(parent, 0o700)
            if os.geteuid() == 0:
                os.chown(parent, 0, 0, follow_symlinks=False)
            os.chmod(parent, 0o755)
            changed = True
    try:
        os.mkdir(path, 0o700)  # private until owner and mode are right
        changed = True
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise FileExistsError(f"{path}: exists and is not a directory")
    if owner is not None and (info.st_uid, info.st_gid) != owner:
        os.chown(path, *owner, follow_symlinks=False)
        changed = True
        info = os.lstat(path)
    if stat.S_IMODE(info.st_mode) != mode:
        os.chmod(path, mode)
        changed = True
    return changed


def remove_path(path: Path) -> bool:
    """Remove a file, a symlink (not its target) or a directory tree; True if something was
    removed, False if nothing was there."""
    path = Path(path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(info.st_mode):
        shutil.rmtree(path, onerror=_ignore_missing)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
    fsync_directory(path.parent)
    return True


def _ignore_missing(function: object, name: str, exc_info: tuple[type, BaseException, object],
                    ) -> None:
    """rmtree error handler: something removed concurrently is fine, anything else is not."""
    if not isinstance(exc_info[1], FileNotFoundError):
        raise exc_info[1]
