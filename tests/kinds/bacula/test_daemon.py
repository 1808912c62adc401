"""The Bacula step end to end: the tape-library and disk-repository kinds (their values,
filters and outputs, with the Bacula blocks, the Bacula step their only step: no mtx, no
LVM here) through the engine against a real slapd; each render checked by bacula-sd-check
with the real `bacula-sd -t`, and applied by bacula-sd-apply restarting a real bacula-sd on
a loopback port, through a stand-in systemctl. A TCP connection held open to the SD's port
is a running job: the restart waits for it, the entry with it."""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ldap3
import pytest

from provisiond.testing.slapd import Slapd, destroy, start_private_slapd
from tests.conftest import require_slapd
from tests.kinds.bacula.support import (
    PASSWORD,
    Site,
    Supervisor,
    fake_systemctl,
    free_port,
    render,
    require_bacula_sd,
    with_bacula,
)
from tests.support import REPO, connect, read, request, run_cli, running, wait_for, write_config

SUFFIX = "dc=example,dc=org"
LIBRARIES = f"ou=libraries,ou=tape,ou=storage,{SUFFIX}"
DISKS = f"ou=disks,ou=storage,{SUFFIX}"
OUS = "\n".join(
    f"dn: {dn}\nobjectClass: organizationalUnit\nou: {dn.split(',')[0].split('=')[1]}\n"
    for dn in (f"ou=storage,{SUFFIX}", f"ou=tape,ou=storage,{SUFFIX}", LIBRARIES, DISKS))
MODE, RETURN, MESSAGE = "provisiondMode", "provisiondReturnValue", "provisiondMessage"
STATUS = ["provisiondProvisioning", "provisiondStatus"]

pytestmark = pytest.mark.slow


@pytest.fixture
def storage_slapd() -> Iterator[Slapd]:
    require_slapd()
    directory = Path(tempfile.mkdtemp(prefix="pvd-", dir="/tmp"))  # short: ldapi path limit
    server = start_private_slapd(directory, extra_ldif=OUS)
    yield server
    destroy(server)


@dataclass
class Host:
    site: Site
    supervisor: Supervisor
    port: int
    config: Path
    sd_vars: dict[str, Any]

    def sd_file(self) -> str:
        return self.site.config.read_text()


@pytest.fixture
def host(tmp_path: Path, storage_slapd: Slapd) -> Iterator[Host]:
    """A real bacula-sd running from the file of no entries (its placeholder Device), and a
    provisiond configuration whose services write that file."""
    require_bacula_sd()
    site = Site(tmp_path / "site").create()
    port = free_port()
    systemctl = fake_systemctl(tmp_path / "bin", tmp_path / "systemd.sock")
    sd_vars = {"bacula_sd_config": str(site.config), "bacula_config_dir": str(site.config.parent),
               "bacula_sd_port": port, "bacula_sd_address": "127.0.0.1",
               "bacula_sd_working_directory": str(site.work),
               "bacula_sd_pid_directory": str(site.work), "bacula_director_name": "test-dir",
               "bacula_director_password_file": str(site.password_file),
               "bacula_systemctl": str(systemctl), "bacula_file_devices": 1,
               # the device nodes here have no driver: bacula-sd would retry opening them
               # for a minute before it listens
               "bacula_tape_always_open": False,
               "bacula_sd_restart_wait": 15}
    first = site.vars(**sd_vars)
    site.config.write_text(render(first))
    supervisor = Supervisor(site.config, tmp_path / "systemd.sock").start()
    services = {
        "tape-library": with_bacula("tape-library", only_bacula=True,
                                    device_prefixes=[f"{site.base}/dev/"], **sd_vars),
        "disk-repository": with_bacula("disk-repository", only_bacula=True,
                                       mount_root=str(site.base / "disks"), **sd_vars),
    }
    config = write_config(tmp_path / "cfg", storage_slapd, services,
                          retry={"limit": 40, "initial": 0.2, "maximum": 0.5})
    try:
        yield Host(site, supervisor, port, config, sd_vars)
    finally:
        supervisor.stop()


def add_library(conn: ldap3.Connection, site: Site, name: str, drives: int = 2,
                media_type: str = "LTO-8") -> str:
    dn = f"cn={name},{LIBRARIES}"
    lines = [f"{i} {site.char_device(f'nst-{name}-{i}', 128 + i)}" for i in range(drives)]
    assert conn.add(dn, ["provisiondTapeLibrary", *STATUS], {
        "cn": name, "provisiondChangerDevice": str(site.char_device(f"sg-{name}", 200)),
        "provisiondDrive": lines, "provisiondMediaType": media_type,
        "provisiondIsActive": "TRUE", MODE: "add", "provisiondState": "0",
        "provisiondExecutionDate": "0"}), conn.result
    return dn


def add_disk(conn: ldap3.Connection, site: Site, name: str, *, type_: str = "filesystem",
             bacula: str = "TRUE", reported: bool = True, mounted: bool = True,
             **extra: Any) -> str:
    """A disk repository as D1's hooks leave it: its mount point made (`mounted`; and,
    `reported`, in provisiondPath, as an earlier run wrote it)."""
    dn = f"cn={name},{DISKS}"
    path = site.mount_point(name) if mounted else site.base / "disks" / name
    attributes = {"cn": name, "provisiondBackend": "lvm", "provisiondPool": "vg0",
                  "provisiondVolumeType": type_, "provisiondSize": "1G",
                  "provisiondBaculaDevice": bacula, "provisiondIsActive": "TRUE",
                  MODE: "add", "provisiondState": "0", "provisiondExecutionDate": "0", **extra}
    if reported:
        attributes["provisiondPath"] = str(path)
    assert conn.add(dn, ["provisiondDiskRepository", *STATUS], attributes), conn.result
    return dn


def wait_mode(conn: ldap3.Connection, dn: str, mode: str, timeout: float = 60) -> dict[str, str]:
    wait_for(lambda: read(conn, dn).get(MODE) == mode, timeout=timeout,
             what=f"{dn} {mode} ({read(conn, dn)})")
    return read(conn, dn)


def wait_failed(conn: ldap3.Connection, dn: str, timeout: float = 60) -> dict[str, str]:
    wait_for(lambda: read(conn, dn).get(RETURN) not in (None, "0"), timeout=timeout,
             what=f"{dn} failed")
    return read(conn, dn)


def test_libraries_and_disks_are_in_the_sd_and_its_restart_waits_for_a_job(
        storage_slapd: Slapd, host: Host) -> None:
    conn = connect(storage_slapd)
    site, supervisor = host.site, host.supervisor
    with running(host.config):
        lib = add_library(conn, site, "lib1")
        repo = add_disk(conn, site, "repo1")
        block = add_disk(conn, site, "vol2", type_="block")
        plain = add_disk(conn, site, "repo3", bacula="FALSE")
        for dn in (lib, repo, block, plain):
            entry = wait_mode(conn, dn, "added")
            assert entry.get(RETURN) == "0", entry
        text = host.sd_file()
        for name in ('"lib1"', '"lib1:drive-0"', '"lib1:drive-1"', '"repo1:disk"',
                     '"repo1:disk-0"', f'"{site.base}/disks/repo1"'):
            assert name in text
        assert "vol2" not in text and "repo3" not in text and "provisiond:none" not in text
        assert supervisor.restarts >= 1
        wait_for(lambda: _listening(host.port), timeout=15, what="the SD back")

        # A job runs: the new repository is written into the file, the restart waits.
        restarts = supervisor.restarts
        job = socket.create_connection(("127.0.0.1", host.port))
        try:
            late = add_disk(conn, site, "repo4", reported=False)  # being added: mount_root/NAME
            wait_for(lambda: '"repo4:disk"' in host.sd_file(), timeout=30, what="repo4 written")
            assert f'"{site.base}/disks/repo4"' in host.sd_file()
            for _ in range(3):  # the engine retries the apply: still busy, still no restart
                wait_for(lambda: read(conn, late).get(MODE) == "adding", timeout=10)
            assert supervisor.restarts == restarts
            assert (site.config.parent / "bacula-sd.conf.prev").exists()
        finally:
            job.close()
        entry = wait_mode(conn, late, "added")
        assert entry.get(RETURN) == "0"
        assert supervisor.restarts == restarts + 1

        # Deleted: out of the file, restarted once more.
        request(conn, repo, "delete", provisiondIsActive="FALSE")
        wait_mode(conn, repo, "deleted")
        assert "repo1" not in host.sd_file() and '"lib1"' in host.sd_file()
        assert supervisor.restarts == restarts + 2


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        if probe.connect_ex(("127.0.0.1", port)) != 0:
            return False
    return True


def test_a_hostile_value_is_refused_and_the_sd_is_untouched(
        storage_slapd: Slapd, host: Host) -> None:
    conn = connect(storage_slapd)
    before = host.sd_file()
    with running(host.config):
        dn = add_library(conn, host.site, "evil", media_type='LTO-8"\n}\nDevice {\n  Name = "x')
        entry = wait_failed(conn, dn)
    assert entry[RETURN] == "40"
    assert "media_type" in entry[MESSAGE] and "provisiondMediaType" in entry[MESSAGE]
    assert host.sd_file() == before and host.supervisor.restarts == 0


def test_a_file_the_check_refuses_fails_with_50_and_is_not_installed(
        storage_slapd: Slapd, host: Host) -> None:
    conn = connect(storage_slapd)
    before = host.sd_file()
    missing = host.site.base / "disks" / "repo5"
    with running(host.config):
        dn = add_disk(conn, host.site, "repo5", reported=False, mounted=False)
        entry = wait_failed(conn, dn)
    assert entry[RETURN] == "50"
    assert "bacula-sd-check rejected bacula-sd.conf" in entry[MESSAGE]
    assert f"Archive Device of 'repo5:disk-0': {missing}: No such file or directory" in (
        entry[MESSAGE])
    assert host.sd_file() == before and host.supervisor.restarts == 0


def test_render_previews_the_sd_file_and_its_restart_without_the_password(
        storage_slapd: Slapd, host: Host) -> None:
    conn = connect(storage_slapd)
    dn = add_library(conn, host.site, "lib1")
    result = run_cli("--config", str(host.config), "render", dn)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"{host.site.config} from 0 active entries (sources: tape-library 1, " \
           "disk-repository 0): would change" in out
    assert '+  Name = "lib1:drive-1"' in out
    assert f"then runs {REPO}/scripts/bacula-sd-apply --port={host.port}" in out
    assert PASSWORD not in out and "Secret42" not in out + result.stderr
    assert host.sd_file() == render(host.site.vars(**host.sd_vars)) and host.supervisor.restarts == 0
