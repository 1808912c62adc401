"""A real, private tgtd for the iSCSI tests, and the real libiscsi initiator (iscsi-ls,
iscsi-inq, iscsi-readcapacity16) logging into it over loopback TCP.

tgtd listens on 127.0.0.1 and a free port, with its control socket in a temp directory
(TGT_IPC_SOCKET); tgtadm must run as the same uid (root here). tgtd ignores SIGTERM: it is
stopped by deleting its targets and then the system (`tgtadm --op delete --mode system`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

TGTD = "/usr/sbin/tgtd"
TGTADM = "/usr/sbin/tgtadm"
ISCSI_LS = "/usr/bin/iscsi-ls"
ISCSI_INQ = "/usr/bin/iscsi-inq"
READCAPACITY = "/usr/bin/iscsi-readcapacity16"
ISCSI_PERF = "/usr/bin/iscsi-perf"


def tgt_available() -> bool:
    return all(os.access(p, os.X_OK) for p in (TGTD, TGTADM, ISCSI_LS, ISCSI_INQ, READCAPACITY,
                                                ISCSI_PERF))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Tgtd:
    directory: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def socket(self) -> str:
        return str(self.directory / "sock")

    @property
    def portal(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C",
                "TGT_IPC_SOCKET": self.socket}

    def tgtadm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([TGTADM, "--lld", "iscsi", *args], env=self.env(),
                                capture_output=True, text=True, timeout=30, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"tgtadm {args}: {result.returncode} {result.stderr}")
        return result

    def show(self) -> str:
        return self.tgtadm("--mode", "target", "--op", "show").stdout

    def tids(self) -> list[int]:
        return [int(line.split()[1].rstrip(":")) for line in self.show().splitlines()
                if line.startswith("Target ")]

    def clear(self) -> None:
        """Every target and account gone (between tests of a module)."""
        for tid in self.tids():
            self.tgtadm("--mode", "target", "--op", "delete", "--force", "--tid", str(tid))
        accounts = self.tgtadm("--mode", "account", "--op", "show").stdout.splitlines()[1:]
        for user in (a.strip() for a in accounts if a.strip()):
            self.tgtadm("--mode", "account", "--op", "delete", "--user", user)

    def stop(self) -> None:
        try:
            self.clear()
            self.tgtadm("--mode", "system", "--op", "delete", check=False)
            self.process.wait(timeout=10)
        except (AssertionError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- the initiator ------------------------------------------------------------------------

    def initiator(self, program: str, initiator: str, *args: str,
                  chap: tuple[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}
        if chap:  # through the environment, as libiscsi reads it: never on a command line
            env["LIBISCSI_CHAP_USERNAME"], env["LIBISCSI_CHAP_PASSWORD"] = chap
        return subprocess.run([program, "-i", initiator, *args], env=env, capture_output=True,
                              text=True, timeout=30, check=False)

    def discover(self, initiator: str, chap: tuple[str, str] | None = None) -> str:
        """iscsi-ls -s: the `Target:` and `Lun:` lines this initiator sees (exit 0 even when it
        sees nothing, so callers assert on the lines)."""
        return self.initiator(ISCSI_LS, initiator, "-s", f"iscsi://{self.portal}",
                              chap=chap).stdout

    def size(self, initiator: str, iqn: str, lun: int,
             chap: tuple[str, str] | None = None) -> int | None:
        """The LUN's size read by iscsi-readcapacity16, or None when the login is refused."""
        result = self.initiator(READCAPACITY, initiator, f"iscsi://{self.portal}/{iqn}/{lun}",
                                chap=chap)
        for line in result.stdout.splitlines():
            if line.startswith("Total size:"):
                return int(line.split(":")[1])
        return None

    def open_session(self, initiator: str, iqn: str, lun: int = 1,
                     chap: tuple[str, str] | None = None) -> subprocess.Popen[bytes]:
        """iscsi-perf: a session kept open (and logged in again if dropped) while it runs;
        returned once tgtd shows it. The caller kills it."""
        env = {"LIBISCSI_CHAP_USERNAME": chap[0], "LIBISCSI_CHAP_PASSWORD": chap[1]} \
            if chap else {}
        perf = subprocess.Popen([ISCSI_PERF, "-i", initiator, f"iscsi://{self.portal}/{iqn}/{lun}"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while f"Initiator: {initiator}" not in self.show():
            if time.monotonic() > deadline or perf.poll() is not None:
                perf.kill()
                perf.wait()
                raise AssertionError(f"{initiator} has no session to {iqn}")
            time.sleep(0.05)
        return perf

    def login(self, initiator: str, iqn: str, lun: int = 0,
              chap: tuple[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """iscsi-inq: exit 0 logged in; 10 refused ("Target not found(515)",
        "Authentication failure(513)")."""
        return self.initiator(ISCSI_INQ, initiator, f"iscsi://{self.portal}/{iqn}/{lun}",
                              chap=chap)


def start_tgtd() -> Tgtd:
    directory = Path(tempfile.mkdtemp(prefix="tgt-", dir="/tmp"))
    port = free_port()
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TGT_IPC_SOCKET": str(directory / "sock")}
    log = (directory / "tgtd.log").open("wb")
    process = subprocess.Popen([TGTD, "-f", "--iscsi", f"portal=127.0.0.1:{port}"], env=env,
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = Tgtd(directory, port, process)
    deadline = time.monotonic() + 10
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"tgtd exited: {(directory / 'tgtd.log').read_text()}")
        if server.tgtadm("--mode", "portal", "--op", "show", check=False).returncode == 0:
            return server
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError("tgtd did not answer within 10 s")
        time.sleep(0.05)
