"""Small keyed records kept in one append-only file: the in-flight journal and the store of
what was last provisioned.

Both used to keep one file per entry, each written crash-safely: a new temp file, fsync,
rename, fsync of the directory, and an unlink when the entry was done. Creating a file is the
expensive part on ext4 (about 0.15 ms of CPU here, more when workers create files in one
directory at once), and it happened twice per entry (issue 12). Here a change is one line
appended to one open file and, where it must survive a crash, one fdatasync:

- A line is `["put", key, value]` or `["del", key]` in JSON, so a value's newlines and any
  other byte stay inside one line. Replaying the lines in order gives the records.
- Appends are made under a lock with one write(2) each, so threads never interleave lines.
  fdatasync covers the appended bytes and the new size; the file's own name is made durable
  (its directory fsynced) once, when the file is created.
- A crash can leave a torn last line (a prefix without its newline) or, on filesystems that
  extend the size before the data, a tail of zeros. Neither parses, so it is skipped, and the
  file is rewritten at once (compacted) so that later lines do not follow a torn one on the
  same line. Only the tail can be torn: lines are appended in order and each durable put waits
  for everything before it.
- When the file holds many more lines than records, it is rewritten with one line per record
  (a crash-safe replace); that costs O(records), at most once per as many appends.
- Files named by a key in the same directory are records of the layout before this log (one
  file per key, the file's text the value): they are read into the log once, which is made
  durable before they are removed, so an upgrade keeps every record.
- One process has one RecordLog per file (`shared`): a reload builds a new engine while the old
  one's workers may still finish their jobs, and two instances would each rewrite the file from
  their own view when compacting (the other's appends then going to a replaced file), and leave
  a descriptor open per reload. The descriptor is closed when the last user lets go.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import weakref
from pathlib import Path

from provisiond.host.files import atomic_write, fsync_directory
from provisiond.logfmt import kv

log = logging.getLogger("provisiond.records")

# Rewrite the file once it holds this many lines more than twice its records: a burst of n
# entries costs O(n) appends and O(n) rewriting in all.
COMPACT_SLACK = 1000


def encode_put(key: str, value: str) -> bytes:
    return (json.dumps(["put", key, value], ensure_ascii=False) + "\n").encode("utf-8")


def encode_delete(key: str) -> bytes:
    return (json.dumps(["del", key], ensure_ascii=False) + "\n").encode("utf-8")


def replay(data: bytes) -> tuple[dict[str, str], int, int]:
    """The records `data` holds: (key -> value, lines read, lines that did not parse)."""
    records: dict[str, str] = {}
    lines = damaged = 0
    for raw in data.split(b"\n"):
        if not raw:
            continue
        lines += 1
        try:
            line = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            damaged += 1
            continue
        if isinstance(line, list) and len(line) == 3 and line[0] == "put" \
                and isinstance(line[1], str) and isinstance(line[2], str):
            records[line[1]] = line[2]
        elif isinstance(line, list) and len(line) == 2 and line[0] == "del" \
                and isinstance(line[1], str):
            records.pop(line[1], None)
        else:
            damaged += 1
    return records, lines, damaged


class RecordLog:
    """key -> text records in the append-only file `path` (see the module doc). `legacy`:
    the names of the one-file-per-key records of the earlier layout in the same directory.
    The daemon's users take theirs from `shared`."""

    def __init__(self, path: Path, legacy: re.Pattern[str] | None = None) -> None:
        self.path = Path(path)
        self.legacy = legacy
        self._lock = threading.Lock()
        self._records: dict[str, str] | None = None  # read on first use
        self._lines = 0
        self._fd: int | None = None
        self._closer: weakref.finalize[[int], RecordLog] | None = None

    # -- reading -----------------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._loaded().get(key)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._loaded()

    def items(self) -> list[tuple[str, str]]:
        """The records, sorted by key (a copy)."""
        with self._lock:
            return sorted(self._loaded().items())

    # -- writing -----------------------------------------------------------------------------

    def put(self, key: str, value: str, *, durable: bool = True) -> None:
        """Set `key`; with `durable`, on disk when this returns."""
        with self._lock:
            records = self._loaded()
            records[key] = value
            self._append(encode_put(key, value), durable)

    def delete(self, key: str, *, durable: bool = False) -> None:
        """Remove `key` (nothing is written if there is no such record)."""
        with self._lock:
            records = self._loaded()
            if records.pop(key, None) is None:
                return
            self._append(encode_delete(key), durable)

    def close(self) -> None:
        with self._lock:
            self._close()

    # -- the file ----------------------------------------------------------------------------

    def _loaded(self) -> dict[str, str]:
        if self._records is None:
            self._records = self._load()
        return self._records

    def _load(self) -> dict[str, str]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        records, self._lines, damaged = replay(data)
        migrated = self._legacy_records()
        new = {key: value for key, value in migrated.items() if key not in records}
        records.update(new)
        if damaged or (data and not data.endswith(b"\n")) or new:
            if damaged:
                log.warning(kv(event="records-damaged", path=str(self.path), lines=damaged,
                               msg="lines that do not parse were dropped (a torn write)"))
            self._rewrite(records)
        for key in migrated:  # in the log (durably) before the old files go
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path.parent / key)
        if migrated:
            fsync_directory(self.path.parent)
        return records

    def _legacy_records(self) -> dict[str, str]:
        if self.legacy is None:
            return {}
        found: dict[str, str] = {}
        try:
            names = sorted(os.listdir(self.path.parent))
        except FileNotFoundError:
            return found
        for name in names:
            if not self.legacy.fullmatch(name):
                continue
            try:
                found[name] = (self.path.parent / name).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                log.warning(kv(event="records-unreadable", path=str(self.path.parent / name),
                               reason=str(exc)))
        return found

    def _append(self, line: bytes, durable: bool) -> None:
        fd = self._open()
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fdatasync(fd)
        self._lines += 1
        records = self._loaded()
        if self._lines > 2 * len(records) + COMPACT_SLACK:
            self._rewrite(records)

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            created = not os.path.lexists(self.path)
            self._fd = os.open(self.path, flags, 0o600)
            self._closer = weakref.finalize(self, os.close, self._fd)  # at the latest when unused
            if created:  # its name must survive a crash, as the records in it must
                fsync_directory(self.path.parent)
                fsync_directory(self.path.parent.parent)
        return self._fd

    def _rewrite(self, records: dict[str, str]) -> None:
        """Replace the file crash-safely with one line per record (the caller holds the lock
        or is the first use); appends go to the new file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = b"".join(encode_put(key, value) for key, value in sorted(records.items()))
        self._close()
        atomic_write(self.path, data, mode=0o600)
        fsync_directory(self.path.parent.parent)
        self._lines = len(records)

    def _close(self) -> None:
        if self._closer is not None:
            with contextlib.suppress(OSError):
                self._closer()  # closes the descriptor once, now
            self._closer = None
        self._fd = None


_SHARED: weakref.WeakValueDictionary[str, RecordLog] = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


def shared(path: Path, legacy: re.Pattern[str] | None = None) -> RecordLog:
    """This process's RecordLog of `path` (see the module doc), made on first use."""
    key = os.path.abspath(path)
    with _SHARED_LOCK:
        found = _SHARED.get(key)
        if found is None:
            found = _SHARED[key] = RecordLog(Path(key), legacy)
        return found


def forget_shared() -> None:
    """Let `shared` make new RecordLogs, which read their files afresh: what a restarted
    process sees (for tests; the ones made before stay usable by whoever holds them)."""
    with _SHARED_LOCK:
        _SHARED.clear()
