"""The long-running process: signals, reloads, the pid file, daemonising.

SIGTERM/SIGINT: stop taking work, let in-flight entries finish within the grace period, save
the cookies, exit 0. SIGHUP: load the configuration again; if it is invalid the running one
stays and the reason is logged; if it is valid the engine drains and restarts with it.
Signal handlers only set flags: all real work happens on the main loop.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType

import psutil

from provisiond.config import Config, ConfigError, load_config
from provisiond.core.clock import Clock
from provisiond.core.engine import Engine
from provisiond.host.files import atomic_write
from provisiond.logfmt import kv
from provisiond.process import liveness
from provisiond.process.logs import setup_logging
from provisiond.process.metrics import Metrics, status_line
from provisiond.process.notify import Notifier, stderr_is_journal

log = logging.getLogger("provisiond.daemon")


class AlreadyRunning(Exception):
    pass


def read_pid(pid_file: Path) -> int | None:
    try:
        text = pid_file.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def running_pid(pid_file: Path) -> int | None:
    """The pid of a live provisiond recorded in `pid_file`; None if absent or stale."""
    pid = read_pid(pid_file)
    if pid is None or pid == os.getpid():
        return None
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        cmdline = " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return pid if "provisiond" in cmdline else None


def claim_pid_file(pid_file: Path) -> None:
    other = running_pid(pid_file)
    if other is not None:
        raise AlreadyRunning(f"provisiond is already running as pid {other} ({pid_file})")
    if pid_file.exists():
        log.warning(kv(event="stale-pid-file", path=str(pid_file), pid=read_pid(pid_file)))
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(pid_file, f"{os.getpid()}\n".encode())


def configure_logging(config: Config, foreground: bool) -> None:
    setup_logging(
        syslog_address=config.logging.syslog_address,
        facility=config.logging.facility,
        tag=config.logging.tag,
        level=config.logging.level,
        foreground=foreground,
        secrets=config.secrets(),
    )


class Runner:
    def __init__(self, config_path: str | None, config: Config, *, foreground: bool = True,
                 clock: Clock | None = None) -> None:
        self.config_path = config_path
        self.config = config
        self.foreground = foreground
        self.clock = clock
        self.wakeup = threading.Event()
        self.stop_requested = False
        self.reload_requested = False
        self.engine: Engine | None = None
        self.notifier = Notifier()  # systemd's Type=notify; does nothing outside systemd
        self.metrics = Metrics(config.metrics)
        self.ready = False
        self.publisher = liveness.Publisher(config.state_dir, os.getpid())
        self.stream_threads: dict[str, threading.Thread] = {}
        self._withheld: tuple[str, ...] = ()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        del frame
        if signum == signal.SIGHUP:
            self.reload_requested = True
        else:
            self.stop_requested = True
        self.wakeup.set()

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)

    def serve(self) -> int:
        self.install_signal_handlers()
        os.makedirs(self.config.state_dir, exist_ok=True)
        while True:
            engine = Engine(self.config, self.clock)
            self.engine = engine
            self.metrics.attach(engine)  # before any work: every step is observed
            stop = threading.Event()
            engine.start_workers()
            threads = engine.run_streams(stop)
            self.stream_threads = dict(zip(engine.services, threads, strict=True))
            self.publisher = liveness.Publisher(self.config.state_dir, os.getpid())
            log.info(kv(event="started", services=",".join(engine.services) or "none",
                        mode=self.config.sync.mode, workers=self.config.workers))
            self.metrics.configure(self.config.metrics)
            self.ready = False
            self.tick()
            new_config = self._wait_for_signal()
            if new_config is None:
                self.notifier.stopping()
            stop.set()
            finished = engine.shutdown(grace=self.config.shutdown_grace)
            self.publisher.remove()
            if not finished:
                log.warning(kv(event="grace-expired",
                               msg="unfinished entries resume on the next start"))
            if new_config is None:
                self.metrics.stop()
                log.info(kv(event="stopped"))
                return 0
            self.config = new_config
            configure_logging(new_config, self.foreground)
            log.info(kv(event="reloaded", config=new_config.source))

    def _wait_for_signal(self) -> Config | None:
        """Block until a stop (returns None) or a valid reload (returns the new config)."""
        while True:
            if not self.wakeup.wait(self.tick_seconds()):
                self.tick()
                continue
            self.wakeup.clear()
            if self.stop_requested:
                return None
            if self.reload_requested:
                self.reload_requested = False
                self.notifier.reloading()
                try:
                    return load_config(self.config_path)
                except ConfigError as exc:
                    for error in exc.errors:
                        log.error(kv(event="reload-rejected", file=error.file,
                                     key=error.key or None, reason=error.reason,
                                     msg="keeping the running configuration"))
                    if self.engine is not None:
                        self.notifier.ready(status_line(self.engine))

    def tick_seconds(self) -> float:
        return min(1.0, self.notifier.watchdog or 1.0)

    def tick(self) -> None:
        """On the main loop, about once a second: READY=1 after the first sync pass of every
        service, a fresh STATUS= line, the streams' state for `status`, and WATCHDOG=1 (the
        main loop is alive and no service has been without a change stream for long)."""
        engine = self.engine
        if engine is None:
            return
        self.publisher.publish(self.service_streams(engine))
        if not self.ready and (engine.first_sync.is_set() or not engine.services):
            self.ready = True
            self.notifier.ready(status_line(engine))
            log.info(kv(event="ready", services=len(engine.services)))
        else:
            self.notifier.status(status_line(engine))
        if self.notifier.watchdog and self.notifier.watchdog_timeout:
            stalled = self.stalled_services(engine, self.notifier.watchdog_timeout)
            if stalled != self._withheld:
                if stalled:
                    log.error(kv(event="watchdog-withheld", services=",".join(stalled),
                                 limit=f"{self.notifier.watchdog_timeout:g}s",
                                 msg="no change stream for longer than WatchdogSec: "
                                     "systemd restarts provisiond"))
                else:
                    log.info(kv(event="watchdog-resumed"))
                self._withheld = stalled
            if not stalled:
                self.notifier.ping()

    def _stream_running(self, service: str) -> bool:
        thread = self.stream_threads.get(service)
        return thread is None or thread.is_alive()

    def service_streams(self, engine: Engine) -> list[liveness.ServiceStream]:
        streams = []
        for name, rt in engine.services.items():
            health, running = rt.stream.health, self._stream_running(name)
            streams.append(liveness.ServiceStream(
                service=name, connected=health.up and running,
                reason=health.reason if running else "the change stream has ended (see the log)",
                since=health.since, running=running))
        return streams

    def stalled_services(self, engine: Engine, limit: float) -> tuple[str, ...]:
        """Services whose stream has been down for longer than `limit` seconds (WatchdogSec),
        or has ended: withholding WATCHDOG=1 then makes systemd restart provisiond, between
        1.5 and 2 times WatchdogSec after the stream went away (pings come every half)."""
        now = time.monotonic()
        return tuple(
            name for name, rt in engine.services.items()
            if not self._stream_running(name)
            or (not rt.stream.health.up and now - rt.stream.health.since_monotonic > limit)
        )


def run(config_path: str | None, config: Config, *, daemonize: bool) -> int:
    if daemonize:
        import daemon  # python-daemon; imported here so `once` and `check` do not need it

        pid_file = config.pid_file or config.state_dir / "provisiond.pid"
        if running_pid(pid_file) is not None:
            raise AlreadyRunning(f"provisiond is already running ({pid_file})")
        with daemon.DaemonContext(umask=0o022, working_directory="/"):
            configure_logging(config, foreground=False)
            claim_pid_file(pid_file)
            try:
                return Runner(config_path, config, foreground=False).serve()
            finally:
                pid_file.unlink(missing_ok=True)
    foreground = not stderr_is_journal()  # under systemd syslog reaches the journal already
    configure_logging(config, foreground=foreground)
    return Runner(config_path, config, foreground=foreground).serve()
