"""scripts/bacula-sd-apply: restart bacula-sd after its configuration changed, never while a
job runs. A real bacula-sd runs on a loopback port with a rendered configuration (disk
autochangers of File devices); a TCP connection held open to its port is what a running job
looks like to the hook (the Director keeps its connection to the SD for the whole job)."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kinds.bacula.support import (
    APPLY,
    Site,
    Supervisor,
    fake_systemctl,
    free_port,
    load_script,
    render,
    require_bacula_sd,
    run_check,
)
from tests.support import wait_for

apply = load_script(APPLY)

# /proc/net/tcp as Linux writes it: a listener on 127.0.0.1:9103 (0x238F), one connection to
# it (state 01), one in TIME_WAIT (06), and an outgoing connection from another port.
TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:238F 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0100007F:238F 0100007F:D0A0 01 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 0100007F:238F 0100007F:D0A2 06 00000000:00000000 00:00000000 00000000     0        0 0 1
   3: 0100007F:D0A0 0100007F:238F 01 00000000:00000000 00:00000000 00000000     0        0 3 1
"""
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue
   0: 00000000000000000000000000000000:238F 00000000000000000000000000000000:0000 0A 00000000
   1: 0000000000000000FFFF00000100007F:238F 0000000000000000FFFF00000100007F:9C40 01 00000000
"""


def test_established_connections_on_the_port_are_counted() -> None:
    assert apply.port_state([TCP], 9103) == (1, True)
    assert apply.port_state([TCP, TCP6], 9103) == (2, True)
    assert apply.port_state([TCP], 9104) == (0, False)
    assert apply.port_state([TCP], 0xD0A0) == (1, False)  # the client side counts for its port


def test_restart_argv_is_systemctl_restart_unit() -> None:
    assert apply.restart_argv("/usr/bin/systemctl", "bacula-sd.service") == [
        "/usr/bin/systemctl", "restart", "bacula-sd.service"]


@pytest.fixture
def sd(tmp_path: Path) -> Iterator[tuple[Site, Supervisor, int]]:
    """A real bacula-sd on a free loopback port, its configuration rendered from two disk
    repositories (a disk autochanger of two File devices each), checked as the engine would."""
    require_bacula_sd()
    site = Site(tmp_path / "site").create()
    port = free_port()
    vars_ = site.vars(bacula_sd_port=port)
    site.config.write_text(render(vars_, disks=[site.disk("repo1", vars_),
                                                site.disk("repo2", vars_)]))
    checked = run_check(site.config, site.password_file)
    assert checked.returncode == 0, checked.stdout
    supervisor = Supervisor(site.config, tmp_path / "systemd.sock").start()
    try:
        wait_for(lambda: apply.port_state(apply.read_tables(), port)[1], timeout=15,
                 what="bacula-sd listening")
        yield site, supervisor, port
    finally:
        supervisor.stop()


def run_apply(tmp_path: Path, port: int) -> subprocess.CompletedProcess[str]:
    systemctl = fake_systemctl(tmp_path / "bin", tmp_path / "systemd.sock")
    return subprocess.run([str(APPLY), f"--port={port}", f"--systemctl={systemctl}",
                           "--unit=bacula-sd.service", "--wait=15"],
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.slow
def test_bacula_sd_runs_with_a_rendered_disk_autochanger_and_is_restarted_when_idle(
        tmp_path: Path, sd: tuple[Site, Supervisor, int]) -> None:
    site, supervisor, port = sd
    before = supervisor.pid
    assert supervisor.process is not None and supervisor.process.poll() is None
    result = run_apply(tmp_path, port)
    assert result.returncode == 0, result.stdout + result.stderr
    assert supervisor.restarts == 1 and supervisor.pid != before
    assert apply.port_state(apply.read_tables(), port)[1]  # listening again when it returns
    assert f"restarted bacula-sd.service; it listens on port {port}" in result.stdout


@pytest.mark.slow
def test_restart_is_skipped_while_a_job_runs_and_done_afterwards(
        tmp_path: Path, sd: tuple[Site, Supervisor, int]) -> None:
    site, supervisor, port = sd
    before = supervisor.pid
    job = socket.create_connection(("127.0.0.1", port))  # a Director's job connection
    try:
        wait_for(lambda: apply.port_state(apply.read_tables(), port)[0] == 1, timeout=5,
                 what="the connection established")
        busy = run_apply(tmp_path, port)
        assert busy.returncode == 75, busy.stdout + busy.stderr
        assert busy.stdout.strip().splitlines()[-1] == (
            f"bacula-sd-apply: bacula-sd is busy: 1 connection on port {port} (a job or a "
            "console); not restarted now, the engine tries again later")
        assert supervisor.restarts == 0 and supervisor.pid == before
    finally:
        job.close()
    wait_for(lambda: apply.port_state(apply.read_tables(), port)[0] == 0, timeout=10,
             what="the connection closed")
    done = run_apply(tmp_path, port)
    assert done.returncode == 0, done.stdout + done.stderr
    assert supervisor.restarts == 1 and supervisor.pid != before


@pytest.mark.slow
def test_a_failed_restart_fails_with_systemctls_message(
        tmp_path: Path, sd: tuple[Site, Supervisor, int]) -> None:
    site, supervisor, port = sd
    supervisor.fail_next = True
    result = run_apply(tmp_path, port)
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert "Job for bacula-sd.service failed." in result.stdout
    assert lines[-1].startswith("bacula-sd-apply: systemctl restart bacula-sd.service exited 1")


def test_a_restart_that_does_not_come_back_fails(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there, and the stand-in restarts nothing
    systemctl = tmp_path / "systemctl"
    systemctl.write_text("#!/bin/sh\nexit 0\n")
    systemctl.chmod(0o755)
    result = subprocess.run([str(APPLY), f"--port={port}", f"--systemctl={systemctl}",
                             "--unit=bacula-sd.service", "--wait=1"],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1
    assert result.stdout.strip().splitlines()[-1] == (
        f"bacula-sd-apply: bacula-sd.service does not listen on port {port} 1 s after the "
        "restart (journalctl -u bacula-sd.service says why)")


def test_usage_errors_exit_64(tmp_path: Path) -> None:
    result = subprocess.run([str(APPLY), "--port=0"], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 64
