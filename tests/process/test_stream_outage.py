"""A service without a change stream is visible: `status` fails, metrics say 0, and the systemd
watchdog is no longer pinged once it lasts (issue 8.1). The daemon runs as systemd runs it,
against a real notify socket; the outage is a rotated password and a slapd restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provisiond.testing.slapd import Slapd
from tests.process.test_notify import NotifySocket
from tests.process.test_notify import notify_socket as notify_socket  # the fixture
from tests.support import (
    REPO,
    add_item,
    connect,
    demo_service,
    mode_of,
    run_cli,
    wait_for,
    write_config,
)

WATCHDOG_SECONDS = 2  # WatchdogSec: pings every second, withheld after 2 s without a stream


def status(config: Path) -> tuple[int, dict[str, Any]]:
    result = run_cli("--config", str(config), "status", "--json")
    return result.returncode, json.loads(result.stdout)


def connected_metric(metrics: Path) -> str | None:
    for line in metrics.read_text().splitlines() if metrics.exists() else []:
        if line.startswith('provisiond_connected{service="demo"}'):
            return line.split()[-1]
    return None


def pings_within(listener: NotifySocket, seconds: float) -> int:
    """WATCHDOG=1 datagrams arriving in the next `seconds` (after dropping those queued)."""
    while listener.receive(timeout=0.05):
        pass
    start = len(listener.messages)
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        listener.receive(timeout=left)
    return sum(1 for message in listener.messages[start:] if "WATCHDOG" in message)


@pytest.fixture
def daemon(slapd: Slapd, tmp_path: Path, notify_socket: tuple[str, NotifySocket]
           ) -> Iterator[tuple[subprocess.Popen[bytes], Path, NotifySocket]]:
    path, listener = notify_socket
    root = tmp_path / "root"
    root.mkdir()
    config = write_config(tmp_path / "cfg", slapd, demo_service(root),
                          metrics={"path": str(tmp_path / "metrics.prom"), "interval": 0.2})
    env = {**os.environ, "PYTHONPATH": str(REPO), "NOTIFY_SOCKET": path,
           "WATCHDOG_USEC": str(WATCHDOG_SECONDS * 1_000_000)}
    process = subprocess.Popen(
        [sys.executable, "-m", "provisiond", "--config", str(config), "run"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "daemon.log", "wb"),  # noqa: SIM115 - the child owns it
    )
    try:
        yield process, config, listener
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_a_stream_down_for_long_fails_status_and_withholds_the_watchdog(
    slapd: Slapd, tmp_path: Path,
    daemon: tuple[subprocess.Popen[bytes], Path, NotifySocket],
) -> None:
    process, config, listener = daemon
    metrics = tmp_path / "metrics.prom"
    listener.wait_for("READY", "1", timeout=30)
    conn = connect(slapd)
    first = add_item(conn, "first")
    wait_for(lambda: mode_of(conn, first) == "added", what="an entry processed")
    assert pings_within(listener, 1.5) >= 1

    # `status` gets a password file of its own, so its reads keep working; the daemon keeps
    # the file it loaded, which now holds a wrong password, and slapd restarts.
    daemon_secret = tmp_path / "cfg" / "bind.secret"
    status_secret = slapd.write_password_file(tmp_path / "status.secret")
    config.write_text(config.read_text().replace(str(daemon_secret), str(status_secret)))
    daemon_secret.write_text("wrong\n")
    slapd.restart()
    down_at = time.monotonic()

    def stream_down() -> dict[str, Any] | None:
        code, report = status(config)
        stream = report["services"][0].get("stream") or {}
        return report if code == 69 and stream.get("connected") is False else None

    report = wait_for(stream_down, what="status to fail while the stream is down")
    assert report["directory"]["reachable"] is True
    assert "invalidCredentials" in report["services"][0]["stream"]["reason"]
    assert report["summary"]["no_stream"] == 1
    text = run_cli("--config", str(config), "status")
    assert text.returncode == 69
    assert "  stream     NONE for " in text.stdout and "invalidCredentials" in text.stdout
    wait_for(lambda: connected_metric(metrics) == "0", what="provisiond_connected 0")

    time.sleep(max(0.0, down_at + WATCHDOG_SECONDS + 2.5 - time.monotonic()))
    assert pings_within(listener, 2.5) == 0  # systemd would restart provisiond now
    assert process.poll() is None

    conn = connect(slapd)  # the old connection ended with the restart
    waiting = add_item(conn, "waiting")
    slapd.write_password_file(daemon_secret)  # fixed: the next retry binds
    wait_for(lambda: mode_of(conn, waiting) == "added", timeout=40,
             what="the entry made while the stream was down")
    assert pings_within(listener, 1.5) >= 1
    wait_for(lambda: status(config)[0] == 0, what="status to succeed again")
    assert connected_metric(metrics) == "1"

    process.terminate()
    assert process.wait(timeout=30) == 0
    assert not (tmp_path / "cfg" / "state" / "streams.json").exists()
