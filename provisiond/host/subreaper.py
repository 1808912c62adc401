"""The daemon as child subreaper: orphaned hook descendants are adopted by us, not by init.

A hook descendant that double-forks, calls setsid and closes its standard file descriptors
leaves the hook's process group and pipes, and once its parent exits it is nobody's descendant:
no scan of the tree can attribute it to the hook. With PR_SET_CHILD_SUBREAPER the kernel
re-parents such orphans to this process instead, so every hook descendant is at all times
either below the hook's main process or below a child of ours. Each hook carries a token
(TOKEN in its environment, inherited by all it starts) telling which hook an adopted child came
from, since several hooks run at once.

A subreaper must reap what it adopts, or zombies pile up; reaping must never take the exit
status of a child someone else waits for (a hook's own Popen, any other subprocess). A zombie
child is reaped here only if it cannot be one of those:

* it was seen alive as our child carrying a hook token and not being a hook's main process
  (those are registered under the same lock as the Popen that starts them), or
* its session is neither ours nor its own: a process we fork stays in our session or, after
  setsid, leads its own; a child in a third session can only have been adopted.

What this cannot see: an adopted process without the token (it exec'd with a cleared
environment, or runs as a user whose environment we cannot read) and not seen before is killed
only if found otherwise (group, pipe, an earlier look at the tree); an adopted session leader
that dies before any look is left a zombie until the daemon exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import psutil

from provisiond.logfmt import kv

log = logging.getLogger(__name__)

TOKEN = "PROVISIOND_HOOK_ID"
PR_SET_CHILD_SUBREAPER = 36
SWEEP_INTERVAL = 2.0  # seconds between looks for adopted children (and zombies to reap)


def _stat(pid: int) -> tuple[str, int]:
    """A process's state letter and session id, from /proc (also readable for zombies)."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        fields = handle.read().rpartition(b")")[2].split()
    return fields[0].decode(), int(fields[3])


def _token(pid: int) -> str | None:
    """The hook token in a process's environment (as it was at its last exec)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            variables = handle.read().split(b"\0")
    except OSError:
        return None
    prefix = f"{TOKEN}=".encode()
    return next((v[len(prefix) :].decode() for v in variables if v.startswith(prefix)), None)


def orphan_threads() -> tuple[int, ...]:
    """The threads of ours whose children lists get the orphans of a hook this thread ran.

    The kernel gives an orphan to the first live thread of the subreaper, our main thread
    (find_alive_thread(), Linux 3.19 and later); older kernels gave it to the thread that was
    its ancestor's parent, the one that started the hook. Reading these two lists instead of
    every thread's (the daemon has a dozen) makes a look after each hook cheap."""
    return tuple({os.getpid(), threading.get_native_id()})


def _read_small(path: str) -> bytes:
    """A small /proc file in three system calls (a file object costs six: this runs after
    every hook, for two threads)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _children(threads: Iterable[int] | None = None) -> list[int]:
    """Our children, from the kernel's per-thread lists: of `threads`, or of every thread (a
    look at them all, not all of /proc: the sweep runs every few seconds for as long as the
    daemon does)."""
    found: set[int] = set()
    listed = False
    if threads is None:
        try:
            threads = [int(thread) for thread in os.listdir("/proc/self/task")]
        except OSError:
            threads = []
    for thread in threads:
        try:
            found.update(map(int, _read_small(f"/proc/self/task/{thread}/children").split()))
            listed = True
        except (OSError, ValueError):
            continue  # the thread ended meanwhile
    if listed:
        return sorted(found)
    try:  # a kernel without CONFIG_PROC_CHILDREN
        return [child.pid for child in psutil.Process().children()]
    except psutil.Error:
        return []


class Adoption:
    """Which of our children are adopted hook descendants, and reaping them."""

    def __init__(self) -> None:
        self.forked()

    def forked(self) -> None:
        """Fresh state, also in a forked child (the subreaper flag is not inherited, the
        reaper thread does not exist there, and the lock may have been held at the fork)."""
        self.lock = threading.Lock()
        self.leaders: set[int] = set()  # hooks' main processes: their Popen reaps them
        self.adopted: dict[int, str] = {}  # pid -> token, seen alive
        self.owner = 0  # pid of the process that became subreaper (0: not yet)
        self.nonce = ""  # starts every token we issue: a token from elsewhere is not ours

    def enable(self) -> None:
        """Become a child subreaper (once per process) and start the reaper thread."""
        with self.lock:
            if self.owner == os.getpid():
                return
            self.owner = os.getpid()
            self.nonce = secrets.token_hex(4)
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            failed = libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0
            error = os.strerror(ctypes.get_errno())
        except (OSError, AttributeError) as exc:  # not Linux
            failed, error = True, str(exc)
        if failed:
            log.warning(kv(event="no-subreaper", error=error))
            return
        threading.Thread(target=self._sweeper, name="provisiond-reaper", daemon=True).start()

    def new_token(self) -> str:
        return self.nonce + secrets.token_hex(4)

    @contextlib.contextmanager
    def starting(self) -> Iterator[Callable[[int], None]]:
        """`with adoption.starting() as register: register(Popen(...).pid)`: no sweep runs
        between the fork and the registration, so a hook's main process is never reaped here."""
        with self.lock:
            yield self.leaders.add

    def finished(self, pid: int) -> None:
        """The hook's Popen has reaped its main process."""
        with self.lock:
            self.leaders.discard(pid)

    def descendants(self, token: str) -> list[psutil.Process]:
        """Live adopted children from the hook with this token, and all their descendants."""
        self.sweep()
        with self.lock:
            roots = [pid for pid, owner in self.adopted.items() if owner == token]
        found: list[psutil.Process] = []
        for pid in roots:
            try:
                root = psutil.Process(pid)
                found += [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
        return found

    def holds(self, token: str) -> bool:
        """Whether a live adopted child from the hook with this token was seen (by a sweep)."""
        with self.lock:
            return token in self.adopted.values()

    def sweep(self, threads: Iterable[int] | None = None) -> None:
        """Note adopted children that are alive; reap the zombies that are surely adopted.
        `threads`: look at these threads' children only (orphan_threads()), not all."""
        if self.owner != os.getpid():
            return
        ours = os.getsid(0)
        with self.lock:
            children = _children(threads)
            for pid in children:
                if pid in self.leaders:
                    continue
                try:
                    state, session = _stat(pid)
                except (OSError, ValueError, IndexError):
                    continue
                if state != "Z":
                    token = _token(pid) if pid not in self.adopted else None
                    if token and self.nonce and token.startswith(self.nonce):
                        self.adopted[pid] = token
                elif pid in self.adopted or session not in (ours, pid):
                    self._reap(pid)
            if threads is not None:
                return  # a child of another thread is not gone
            for pid in set(self.adopted).difference(children):
                del self.adopted[pid]  # gone without us (cannot happen to a child; be safe)

    def _reap(self, pid: int) -> None:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        self.adopted.pop(pid, None)

    def _sweeper(self) -> None:
        while True:
            time.sleep(SWEEP_INTERVAL)
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - the reaper must keep going
                log.exception(kv(event="reaper-error"))


ADOPTION = Adoption()
os.register_at_fork(after_in_child=ADOPTION.forked)
