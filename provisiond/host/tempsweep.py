"""Removing the temp files a killed daemon left behind.

Every file is written to `.<name>.<pid>.<random>.tmp` beside its target and renamed over it
(fsutil.py), so a SIGKILL never tears a file, but it can leave the temp file: a render killed
while its validator runs leaves a whole copy of a config, and a crash loop piles them up. At
start the daemon removes them, narrowly:
- only in the directories it writes to itself (the parents of its render paths, inside the
  service's roots, and its state directory), never recursively: a root such as /var/backup
  holds millions of snapshot files that are none of the daemon's business;
- only names of exactly its own pattern;
- only when the writer is dead: the pid in the name names no live process (a live one may be
  another daemon on this host writing right now). Names without a pid come from versions
  before it was added and are always stale.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from provisiond.logfmt import kv

log = logging.getLogger("provisiond.tempsweep")

TEMP_NAME = re.compile(r"^\..+?\.(?:(?P<pid>[0-9]{1,10})\.)?[0-9a-f]{12}\.tmp$")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def is_stale_temp(name: str, alive: Callable[[int], bool] = pid_alive) -> bool:
    """Whether `name` is one of our temp files whose writer is gone."""
    match = TEMP_NAME.match(name)
    if match is None:
        return False
    pid = match.group("pid")
    return pid is None or (int(pid) != os.getpid() and not alive(int(pid)))


def sweep(directories: Iterable[Path]) -> list[Path]:
    """Remove stale temp files directly inside `directories` (missing ones are skipped)."""
    removed = []
    for directory in dict.fromkeys(directories):
        try:
            candidates = [p for p in directory.iterdir() if is_stale_temp(p.name)]
        except OSError:
            continue
        for path in candidates:
            try:
                if path.is_symlink() or not path.is_file():
                    continue
                path.unlink()
            except OSError as exc:
                log.warning(kv(event="temp-sweep-failed", path=str(path), reason=str(exc)))
                continue
            removed.append(path)
            log.info(kv(event="removed-stale-temp", path=str(path)))
    return removed
