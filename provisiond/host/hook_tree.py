"""The processes of one hook run, and how to find the ones that try to get away.

A hook is an arbitrary program: it may fork, leave its process group, daemonize, or leave a
child holding its output pipe. hooks.py needs to find all of them to kill a hook that timed
out, and to notice what a hook that exited left behind, without scanning every pid in /proc
for every entry (most hooks leave nothing, and one runs per entry). This module is that
finding; hooks.py decides when to look and what to do with what is found.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import psutil

from provisiond.host.subreaper import ADOPTION

TRACK_FIRST_INTERVAL = 0.05  # seconds until the first look at a running hook's descendants
TRACK_MAX_INTERVAL = 1.0  # the looks back off to this, for a hook that runs long


def alive(proc: psutil.Process) -> bool:
    """Running and not a zombie (a zombie holds nothing and cannot be signalled away)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class HookTree:
    """The hook's processes: its group (pgid == leader pid), descendants seen outside it, and
    orphans adopted by us (the subreaper) that carry the hook's token."""

    def __init__(self, leader: int, token: str) -> None:
        self.pgid = leader
        self.token = token
        self.leader: psutil.Process | None = None  # made on the first look: most hooks end first
        self.tracked: dict[int, psutil.Process] = {}
        self.interval = TRACK_FIRST_INTERVAL
        self.reaped = False  # the leader is reaped: its pid may be reused, as a group id too

    def track(self) -> None:
        """Remember every current descendant, so they can be found after being orphaned.
        (Only before the main process is reaped: until then its pid cannot be reused.)"""
        if self.leader is None:
            self.leader = psutil.Process(self.pgid)
        self.tracked = {pid: p for pid, p in self.tracked.items() if p.is_running()}
        found: set[int] = set()
        for root in (self.leader, *self.tracked.values()):
            if root.pid in found:
                continue
            try:
                children = root.children(recursive=True)
            except psutil.Error:
                continue
            for child in children:
                found.add(child.pid)
                self.tracked.setdefault(child.pid, child)
        self.interval = min(self.interval * 2, TRACK_MAX_INTERVAL)

    def group(self) -> list[psutil.Process]:
        members = []
        for pid in psutil.pids():
            try:
                if os.getpgid(pid) == self.pgid:
                    members.append(psutil.Process(pid))
            except (OSError, psutil.Error):
                continue
        return [p for p in members if alive(p)]

    def left_behind(self) -> list[psutil.Process]:
        """What a hook that exited by itself left running, once its main process is reaped.

        Finding that takes a scan of every pid in /proc, so it is skipped when it would find
        nothing. everyone(()) is made of the live tracked processes, the live members of the
        group, and the adopted children carrying the token with their descendants; with no
        live tracked process, an empty group (`group_empty`) and no such adopted child (the
        sweep after the reap has looked), each part is empty."""
        if (any(map(alive, self.tracked.values())) or not group_empty(self.pgid)
                or ADOPTION.holds(self.token)):
            return self.everyone(())
        return []

    def everyone(self, pipe_inodes: Iterable[int]) -> list[psutil.Process]:
        procs = {p.pid: p for p in self.tracked.values() if alive(p)}
        procs.update((p.pid, p) for p in self.group())
        procs.update((p.pid, p) for p in pipe_holders(pipe_inodes))
        procs.update((p.pid, p) for p in ADOPTION.descendants(self.token) if alive(p))
        return list(procs.values())

    def signal(self, signum: int, procs: Iterable[psutil.Process]) -> None:
        try:
            if not self.reaped:  # then group members are among `procs` (everyone())
                os.killpg(self.pgid, signum)
        except (ProcessLookupError, PermissionError):
            pass
        for proc in procs:
            try:
                proc.send_signal(signum)
            except psutil.Error:
                pass


def group_empty(pgid: int) -> bool:
    """Whether process group `pgid` surely has no process left, zombies included. Only sound
    once its leader is reaped (a zombie leader is a member): while any member lives, the
    number stays taken, so no new process can get it and ESRCH proves the group empty. A
    number reused since can only make the answer False, which costs a scan, nothing more."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: members we may not signal
        return False
    return False


def pipe_holders(inodes: Iterable[int]) -> list[psutil.Process]:
    """Processes (other than us) with a write end of one of these pipes open, found via /proc."""
    wanted = {f"pipe:[{inode}]" for inode in inodes}
    holders: list[psutil.Process] = []
    if not wanted:
        return holders
    for pid in psutil.pids():
        if pid == os.getpid():
            continue
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") not in wanted:
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                    flags = next(int(ln.split()[1], 8) for ln in info if ln.startswith("flags:"))
                if flags & os.O_ACCMODE != os.O_RDONLY:
                    holders.append(psutil.Process(pid))
                    break
        except (OSError, StopIteration, psutil.Error):
            continue
    return [p for p in holders if alive(p)]
