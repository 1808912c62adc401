"""Running operator-supplied hook programs whose exit codes gate each provisioning step.

Hooks are arbitrary programs, so running one must be bounded and must not leak:

* The environment is built from scratch, so the bind password (or anything else in the daemon's
  environment) cannot reach a hook; programs are found in the hook directories only, never via
  the daemon's $PATH; the argv list is executed without a shell.
* Each hook gets its own session/process group and a token in its environment
  (PROVISIOND_HOOK_ID). Descendants that leave the group (setsid, daemonizing) are tracked with
  psutil while the hook runs, processes still holding the hook's output pipe are found through
  /proc, and orphans are adopted by the daemon (a child subreaper, see subreaper.py) where the
  token attributes them to their hook. The main process is not reaped until we are done
  signalling (waitid WNOWAIT): its pid is the group id and must not be recycled meanwhile.
* stdout and stderr (two pipes, so `provisiond-set` is only taken from stdout) are drained
  continuously; every stdout line is inspected, only `provisiond-set` lines are kept (every
  value of a name, bounded by MAX_SETTING_LINE and `settings_limit`), and a 4 KiB tail of all
  output is kept for the log. A chatty hook neither blocks on a full pipe nor exhausts memory,
  and a setting line that does not fit is reported in `settings_lost` (the step fails), never
  dropped silently.
* On timeout the whole tree gets SIGTERM, then SIGKILL after `kill_grace`. After a normal exit,
  leftovers that keep the output pipe open are killed after a short grace (logged as strays);
  processes that detached properly are left alone (a hook may start a helper, e.g. FUSE) and
  logged (`hook-left-running`). Looking for them scans every pid in /proc, so it is done only
  when something can be left (`HookTree.left_behind` in hook_tree.py): most hooks leave
  nothing, and a hook runs for every entry.

A descendant that double-forks, closes the pipe, is orphaned and also clears its environment
(dropping the token) before the first look at the tree can still escape a timeout kill;
containing that needs a cgroup, which is the service manager's job.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
import select
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import psutil

from provisiond.exitcodes import EX_TEMPFAIL
from provisiond.host.hook_output import HookOutput
from provisiond.host.hook_tree import HookTree, alive, pipe_holders
from provisiond.host.subreaper import ADOPTION, TOKEN, orphan_threads
from provisiond.logfmt import kv

log = logging.getLogger(__name__)

EXIT_RETRY = EX_TEMPFAIL  # a hook asks to be retried later
STANDARD_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
STRAY_GRACE = 1.0  # seconds a hook's leftovers may keep the output pipe open after it exits
DRAIN_LIMIT = 2.0  # seconds we keep reading once everything we could find was killed
_POLL = 0.05
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_PROGRAM_ERRNOS = {errno.ENOENT, errno.EACCES, errno.ENOEXEC, errno.ENOTDIR, errno.EISDIR,
                   errno.ELOOP, errno.EPERM, errno.ENAMETOOLONG}


class HookError(Exception):
    """The hook cannot be run at all (missing, not executable, bad interpreter)."""


@dataclass(frozen=True)
class HookResult:
    argv: tuple[str, ...]
    returncode: int | None  # None when killed after timeout; -N when killed by signal N
    timed_out: bool
    duration_ms: int  # from start until the main process exited
    output_tail: str  # last ~4 KiB of stdout+stderr (arrival order), errors="replace"
    # `provisiond-set NAME=VALUE` on stdout: each name's values, in order, without duplicates
    settings: Mapping[str, tuple[str, ...]] = field(hash=False)
    settings_lost: str  # why some `provisiond-set` lines were not taken; "" if none was lost


def resolve_program(argv0: str, search_path: Sequence[str]) -> str:
    """An absolute path is checked and returned as is; a bare name is looked up in the
    `search_path` directories only (not $PATH). Relative paths with a slash are refused."""
    if not argv0 or "\0" in argv0:
        raise HookError(f"hook program {argv0!r}: empty or invalid name")
    if "/" in argv0:
        if not os.path.isabs(argv0):
            raise HookError(f"hook program {argv0!r}: use an absolute path or a bare name")
        try:
            regular = stat.S_ISREG(os.stat(argv0).st_mode)
        except OSError as exc:
            raise HookError(f"hook program {argv0}: {exc.strerror}") from exc
        if not regular or not os.access(argv0, os.X_OK):
            raise HookError(f"hook program {argv0}: not an executable file")
        return argv0
    not_executable = []
    for directory in search_path:
        if not os.path.isabs(directory):
            raise HookError(f"hook directory {directory!r} is not an absolute path")
        candidate = os.path.join(directory, argv0)
        if os.path.isfile(candidate):
            if os.access(candidate, os.X_OK):
                return candidate
            not_executable.append(candidate)
    if not_executable:
        raise HookError(f"hook program {argv0!r}: {', '.join(not_executable)} not executable")
    where = ":".join(search_path) or "(no hook directories configured)"
    raise HookError(f"hook program {argv0!r} not found in {where}")


def hook_environment(*, search_path: Sequence[str], service: str, mode: str, dn: str,
                     uuid: str, values: Mapping[str, str]) -> dict[str, str]:
    """The complete environment of a hook; nothing comes from os.environ."""
    dirs: list[str] = []
    for directory in (*search_path, *STANDARD_PATH):
        if not os.path.isabs(directory) or ":" in directory:
            raise ValueError(f"hook directory {directory!r}: must be absolute, without ':'")
        directory = os.path.normpath(directory)
        if directory not in dirs:
            dirs.append(directory)
    env = {"PATH": ":".join(dirs), "LANG": "C.UTF-8", "PROVISIOND_SERVICE": service,
           "PROVISIOND_MODE": mode, "PROVISIOND_DN": dn, "PROVISIOND_ENTRYUUID": uuid}
    for name, value in values.items():
        if not _NAME.fullmatch(name):
            raise ValueError(f"hook value name {name!r}: expected [a-z][a-z0-9_]*")
        env[f"PROVISIOND_VALUE_{name.upper()}"] = value
    for key, value in env.items():
        if "\0" in value:
            raise ValueError(f"hook environment {key}: contains a NUL character")
    return env


class _Run:
    """One supervised hook process: output pump, exit detection, tree killing."""

    def __init__(self, proc: subprocess.Popen[bytes], pipes: tuple[int, int],
                 argv: tuple[str, ...], limit: int, token: str) -> None:
        self.proc = proc
        self.argv = argv
        self.output = HookOutput(limit)
        self.tree = HookTree(proc.pid, token)
        # poll(2) on three descriptors: no epoll instance to make and close for each hook
        self.poller = select.poll()
        self.names: dict[int, str] = {}  # fd -> "stdout", "stderr" or "exit"
        self.pipes = list(pipes)  # the read ends of stdout and stderr, ours to close
        self.open_pipes = 2
        for fd, name in zip(self.pipes, ("stdout", "stderr"), strict=True):
            os.set_blocking(fd, False)
            self.watch(fd, name)
        self.pidfd: int | None = None
        try:  # wakes the poll when the main process exits
            self.pidfd = os.pidfd_open(proc.pid)
            self.watch(self.pidfd, "exit")
        except (AttributeError, OSError):  # no pidfd (old kernel): exited() is polled
            pass

    @functools.cached_property
    def inodes(self) -> set[int]:
        """The output pipes' inodes, which a process holding them shows in /proc: looked up
        only when strays or a kill need them (the pipes are open until `close`)."""
        return {os.fstat(fd).st_ino for fd in self.pipes}

    def watch(self, fd: int, name: str) -> None:
        self.poller.register(fd, select.POLLIN)
        self.names[fd] = name

    def exited(self) -> bool:
        """Whether the main process exited, without reaping it (the pgid stays reserved)."""
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        try:
            return os.waitid(os.P_PID, self.proc.pid, flags) is not None
        except ChildProcessError:
            return True

    def pump(self, until: float, done: Callable[[], bool], track: bool = False) -> bool:
        """Read output until done() or the monotonic time `until`; True if done."""
        next_track = time.monotonic() + self.tree.interval
        while not done():
            now = time.monotonic()
            if now >= until:
                return False
            if track and now >= next_track:
                self.tree.track()
                next_track = now + self.tree.interval
            wake = min(until, next_track) if track else until
            # any event (POLLIN, POLLHUP, POLLERR) means: read, or note the exit
            for fd, _ in self.poller.poll(max(0.0, min(wake - now, _POLL)) * 1000):
                name = self.names[fd]
                if name == "exit":
                    self.poller.unregister(fd)
                    continue
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if chunk:
                    self.output.feed(chunk, name == "stdout")
                else:
                    self.poller.unregister(fd)
                    self.open_pipes -= 1
        return True

    def kill_tree(self, kill_grace: float) -> None:
        """SIGTERM everything that belongs to the hook, SIGKILL what survives `kill_grace`.

        "Everything" is re-scanned for each signal and while waiting: a process the hook
        started just before the first scan (say a `setsid` grandchild) shows up later, in
        the group, among the tracked descendants or as a holder of the output pipe."""
        checked = [0.0]

        def gone() -> bool:  # scans /proc, so at most every _POLL seconds
            if time.monotonic() - checked[0] < _POLL:
                return False
            checked[0] = time.monotonic()
            return self.exited() and not self.tree.everyone(self.inodes)

        for signum, wait in ((signal.SIGTERM, kill_grace), (signal.SIGKILL, DRAIN_LIMIT)):
            self.tree.track()
            self.tree.signal(signum, self.tree.everyone(self.inodes))
            if self.pump(time.monotonic() + wait, gone, track=True):
                return
        self.tree.signal(signal.SIGKILL, self.tree.everyone(self.inodes))  # late arrivals

    def kill_strays(self, strays: list[psutil.Process], kill_grace: float) -> None:
        """SIGTERM (then SIGKILL) processes that kept the output pipe open; not the group."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in strays:
                try:
                    proc.send_signal(sig)
                except psutil.Error:
                    pass
            if self.pump(time.monotonic() + kill_grace, lambda: not any(map(alive, strays))):
                return

    def reap(self, kill_grace: float, killed: bool) -> int | None:
        try:
            returncode = self.proc.wait(timeout=kill_grace)
        except subprocess.TimeoutExpired:  # uninterruptible sleep: subprocess reaps it later
            log.error(kv(event="hook-unkillable", program=self.argv[0], pid=self.proc.pid))
            return None
        self.tree.reaped = True
        ADOPTION.finished(self.proc.pid)
        # reap what was adopted from this hook (and killed), note what it left: after a kill
        # every thread's children, else only where this hook's orphans went (cheap, each hook)
        ADOPTION.sweep(None if killed else orphan_threads())
        return returncode

    def close(self) -> None:
        for fd in self.pipes:
            os.close(fd)
        if self.pidfd is not None:
            os.close(self.pidfd)

    def supervise(self, timeout: float, kill_grace: float) -> HookResult:
        def closed() -> bool:
            return self.open_pipes == 0

        start = time.monotonic()
        timed_out = not self.pump(start + timeout, self.exited, track=True)
        if timed_out:
            log.warning(kv(event="hook-timeout", program=self.argv[0], timeout=timeout))
            self.kill_tree(kill_grace)
        duration_ms = int((time.monotonic() - start) * 1000)
        if not timed_out and not self.pump(time.monotonic() + STRAY_GRACE, closed):
            strays = pipe_holders(self.inodes)
            pids = ",".join(str(p.pid) for p in strays) or "unknown"
            log.warning(kv(event="hook-stray", program=self.argv[0], pids=pids, action="kill"))
            self.kill_strays(strays, kill_grace)
        self.pump(time.monotonic() + DRAIN_LIMIT, closed)
        returncode = self.reap(kill_grace, timed_out)
        if not timed_out and returncode is not None and (left := self.tree.left_behind()):
            pids = ",".join(str(p.pid) for p in left)
            log.info(kv(event="hook-left-running", program=self.argv[0], pids=pids))
        tail, settings = self.output.finish()
        return HookResult(self.argv, None if timed_out else returncode, timed_out, duration_ms,
                          tail, settings, self.output.lost())


def _cannot_execute(argv0: str, cwd: str, exc: OSError) -> str:
    if exc.filename == cwd and exc.filename != argv0:
        return f"cannot run hook {argv0}: working directory {cwd}: {exc.strerror}"
    hint = {
        errno.ENOENT: " (or its #! interpreter is missing)",
        errno.EACCES: " (is it executable, and are its directories searchable?)",
        errno.ENOEXEC: " (not a binary and no #! line)",
    }.get(exc.errno or 0, "")
    return f"cannot execute hook {argv0}: {exc.strerror}{hint}"


_DEVNULL: list[int] = []
_DEVNULL_LOCK = threading.Lock()


def _devnull() -> int:
    """One descriptor of /dev/null for every hook's stdin (close-on-exec; the child gets a
    copy), opened at the first hook: after daemonizing, which closes descriptors."""
    with _DEVNULL_LOCK:
        if not _DEVNULL:
            _DEVNULL.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
        return _DEVNULL[0]


def run_hook(argv: Sequence[str], *, env: Mapping[str, str], timeout: float,
             settings_limit: int = 1 << 20, kill_grace: float = 5.0, cwd: str = "/") -> HookResult:
    """Run one hook to completion (or timeout) and report; a non-zero exit is not an error
    here, the caller decides. Raises HookError if the program cannot be executed at all."""
    args = tuple(argv)
    if not args or not os.path.isabs(args[0]):
        raise HookError(f"hook command {args!r}: program must be an absolute path")
    ADOPTION.enable()
    token = ADOPTION.new_token()
    # Our own pipes and a kept /dev/null: Popen's PIPE and DEVNULL cost an open of /dev/null
    # and a file object per pipe (fstat, ioctl, lseek) for each hook, and every system call
    # hands the GIL to another worker and back (issue 12).
    out_read, out_write = os.pipe2(os.O_CLOEXEC)
    err_read, err_write = os.pipe2(os.O_CLOEXEC)
    try:
        with ADOPTION.starting() as register:
            proc = subprocess.Popen(  # an argv list, never a shell
                args, stdin=_devnull(), stdout=out_write, stderr=err_write,
                env={**env, TOKEN: token}, cwd=cwd, close_fds=True, start_new_session=True)
            register(proc.pid)
    except OSError as exc:
        os.close(out_read)
        os.close(err_read)
        if exc.errno in _PROGRAM_ERRNOS:
            raise HookError(_cannot_execute(args[0], cwd, exc)) from exc
        raise
    except BaseException:
        os.close(out_read)
        os.close(err_read)
        raise
    finally:
        os.close(out_write)  # the hook holds them now: EOF comes when it (and its heirs) exit
        os.close(err_write)
    run = _Run(proc, (out_read, err_read), args, settings_limit, token)
    try:
        return run.supervise(timeout, kill_grace)
    except BaseException:
        run.tree.signal(signal.SIGKILL, run.tree.everyone(run.inodes))  # never leave a hook
        raise
    finally:
        run.close()
