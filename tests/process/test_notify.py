"""The sd_notify protocol against a real AF_UNIX datagram socket, and the daemon using it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisiond.process.notify import Notifier, stderr_is_journal, watchdog_interval
from provisiond.testing.slapd import Slapd
from tests.support import REPO, demo_service, write_config


class NotifySocket:
    """What systemd listens on: a datagram socket; each datagram is KEY=VALUE lines."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.1)
        self.messages: list[dict[str, str]] = []
        self.cursor = 0

    def receive(self, timeout: float = 5.0) -> dict[str, str] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.messages.append(fields)
            return fields
        return None

    def wait_for(self, key: str, value: str | None = None, timeout: float = 20.0
                 ) -> dict[str, str]:
        """The first message from the cursor on with `key` (and `value`); moves the cursor."""
        deadline = time.monotonic() + timeout
        while True:
            for index in range(self.cursor, len(self.messages)):
                fields = self.messages[index]
                if key in fields and (value is None or fields[key] == value):
                    self.cursor = index + 1
                    return fields
            if time.monotonic() >= deadline:
                break
            self.receive(timeout=deadline - time.monotonic())
        raise AssertionError(f"no {key}={value or '*'} within {timeout}s; got {self.messages}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket() -> Iterator[tuple[str, NotifySocket]]:
    directory = Path(tempfile.mkdtemp(prefix="pvn-", dir="/tmp"))
    path = str(directory / "notify")
    listener = NotifySocket(path)
    yield path, listener
    listener.close()
    Path(path).unlink(missing_ok=True)
    directory.rmdir()


def test_ready_status_watchdog_reloading_stopping(notify_socket: tuple[str, NotifySocket]
                                                 ) -> None:
    path, listener = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.ready("running; 1/1 services connected")
    assert listener.receive() == {"READY": "1", "STATUS": "running; 1/1 services connected"}
    assert notifier.status("still\nrunning")  # one line: newlines cannot split an assignment
    assert listener.receive() == {"STATUS": "still running"}
    assert not notifier.status("still\nrunning")  # unchanged: not sent again
    assert notifier.ping()
    assert listener.receive() == {"WATCHDOG": "1"}
    assert notifier.reloading()
    assert listener.receive() == {"RELOADING": "1", "STATUS": "reloading the configuration"}
    assert notifier.stopping()
    assert listener.wait_for("STOPPING")["STOPPING"] == "1"


def test_abstract_namespace_socket() -> None:
    name = f"provisiond-test-{os.getpid()}-{time.monotonic_ns()}"
    listener = NotifySocket(b"\0" + name.encode())
    try:
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready()
        assert listener.receive() == {"READY": "1"}
    finally:
        listener.close()


def test_without_systemd_nothing_happens() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready("x") and not notifier.ping() and not notifier.stopping()
    assert notifier.watchdog is None


def test_missing_socket_is_reported_once_and_ignored(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert not notifier.ready()
    assert not notifier.ping()
    assert caplog.text.count("notify-failed") == 1


def test_watchdog_interval_is_half_the_timeout() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "10000000"}) == 5.0
    assert watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}) \
        == 5.0
    assert watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({}) is None


def test_stderr_is_journal_compares_device_and_inode() -> None:
    info = os.fstat(2)
    assert stderr_is_journal({"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"})
    assert not stderr_is_journal({"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino + 1}"})
    assert not stderr_is_journal({"JOURNAL_STREAM": "garbage"})
    assert not stderr_is_journal({})


def test_daemon_notifies_ready_only_after_the_first_sync(
    slapd: Slapd, tmp_path: Path, notify_socket: tuple[str, NotifySocket]
) -> None:
    """`provisiond run` as systemd runs it: READY=1 waits for the directory; STATUS= lines and
    WATCHDOG=1 meanwhile; RELOADING=1 then READY=1 on SIGHUP; STOPPING=1 on SIGTERM."""
    path, listener = notify_socket
    root = tmp_path / "root"
    root.mkdir()
    metrics = tmp_path / "metrics.prom"
    config = write_config(tmp_path / "cfg", slapd, demo_service(root),
                          metrics={"path": str(metrics), "interval": 0.2})
    slapd.stop()  # the directory is down when the service starts
    env = {**os.environ, "PYTHONPATH": str(REPO), "NOTIFY_SOCKET": path,
           "WATCHDOG_USEC": "1000000"}
    process = subprocess.Popen(
        [sys.executable, "-m", "provisiond", "--config", str(config), "run"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "daemon.log", "wb"),  # noqa: SIM115 - the child owns it
    )
    try:
        status = listener.wait_for("STATUS", timeout=20)
        listener.wait_for("WATCHDOG", "1")
        assert "waiting for the directory: demo" in status["STATUS"]
        time.sleep(1.0)
        while listener.receive(timeout=0.1):
            pass
        assert not any("READY" in m for m in listener.messages)
        slapd.start()
        ready = listener.wait_for("READY", "1", timeout=30)
        assert "1/1 services connected" in ready["STATUS"]
        assert metrics.exists()

        process.send_signal(signal.SIGHUP)
        listener.wait_for("RELOADING", "1")
        listener.wait_for("READY", "1")
        process.send_signal(signal.SIGTERM)
        listener.wait_for("STOPPING", "1")
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
