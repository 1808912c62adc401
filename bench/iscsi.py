"""The iSCSI scenario (`bench/run --storage iscsi`, root only): N targets with one LUN each
(1,000; 100 with --quick) queued at once as LDAP entries and served by a REAL private tgtd
through the shipped iscsi-target and iscsi-lun kinds (one file of all targets, applied by
iscsi-tgt-apply driving tgtadm); their disks are provisioned already (sparse files, as in
tests/kinds/iscsi/). Beside it, in the same run, the bound: the same targets made with
tgtadm in a tight loop (per target: the target, its initiator ACL and its LUN, as the hook
does), one call after the other.

tgtd takes its requests one at a time over its control socket, so the bound is what tgtd
itself allows; the daemon's figure adds the claims, renders, verification and reports, and
the number of apply runs says how well one apply serves many entries.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import ldap3

from bench.harness import BenchError, Cleanup, Daemon, SyslogCapture, connect
from bench.workload import daemon_config
from provisiond.testing.slapd import start_private_slapd
from tests.kinds.iscsi.site import DISKS, Site, add_lun, add_target, directory
from tests.kinds.iscsi.support import ALLOWED, IQN
from tests.kinds.iscsi.tgt import Tgtd, start_tgtd, tgt_available

SIZE = 1 << 20


def provisioned_disk(conn: ldap3.Connection, site: Site, name: str) -> str:
    """A disk repository entry already `added`, its device a sparse file."""
    device = site.disks / f"{name}.img"
    with device.open("wb") as f:
        f.truncate(SIZE)
    dn = f"cn={name},{DISKS}"
    assert conn.add(dn, ["provisiondDiskRepository", "provisiondProvisioning",
                         "provisiondStatus"], {
        "cn": name, "provisiondBackend": "lvm", "provisiondPool": "vg0",
        "provisiondVolumeType": "block", "provisiondSize": str(SIZE),
        "provisiondIsActive": "TRUE", "provisiondDevicePath": str(device),
        "provisiondMode": "added", "provisiondState": "20261204000000Z",
        "provisiondExecutionDate": "0", "provisiondReturnValue": "0"}), conn.result
    return dn


def bound(tgtd: Tgtd, devices: list[Path]) -> float:
    """Targets per second made with tgtadm one call after the other: target, ACL, LUN."""
    tgtd.clear()
    started = time.monotonic()
    for tid, device in enumerate(devices, 1):
        for args in (("--mode", "target", "--op", "new", "--tid", str(tid), "--targetname",
                      f"{IQN}:bound{tid:04d}"),
                     ("--mode", "target", "--op", "bind", "--tid", str(tid),
                      "--initiator-name", ALLOWED),
                     ("--mode", "logicalunit", "--op", "new", "--tid", str(tid), "--lun", "1",
                      "--backing-store", str(device))):
            tgtd.tgtadm(*args)
    rate = len(devices) / (time.monotonic() - started)
    tgtd.clear()
    return rate


def run(quick: bool, workdir: Path, cleanup: Cleanup) -> str:
    if os.geteuid() != 0:
        raise BenchError("the iscsi scenario needs root (tgtd)")
    if not tgt_available():
        raise BenchError("tgt and libiscsi-bin are not installed (scripts/dev/test does)")
    count = 100 if quick else 1000
    tgtd = start_tgtd()
    cleanup.add("tgtd", tgtd.stop)
    site = Site(workdir / "site", tgtd).create()
    server = start_private_slapd(workdir / "slapd")
    cleanup.add("slapd", server.stop)
    conn = directory(server)
    disks = [provisioned_disk(conn, site, f"d{i:04d}") for i in range(count)]
    capture = SyslogCapture(workdir / "syslog.sock")
    cleanup.add("syslog capture", capture.close)
    daemon = Daemon(daemon_config(workdir, server, capture.path, site.services()),
                    workdir / "daemon.log", capture, cleanup)
    capture.wait(daemon.pid, "connected", 3, 30, daemon.alive, "daemon start")

    conn = connect(server)
    started = time.monotonic()
    for i, disk in enumerate(disks):
        add_target(conn, f"t{i:04d}", initiators=(ALLOWED,))
        add_lun(conn, f"t{i:04d}", "lun1", 1, disk)
    queued = time.monotonic() - started
    capture.wait(daemon.pid, "added", 2 * count, 1800, daemon.alive, "targets and LUNs added")
    finished = max(record[0] for record in capture.events(daemon.pid, "added"))
    rate = 2 * count / (finished - started)
    applies = site.applies()
    daemon.stop()

    shown = tgtd.show()
    served = shown.count("Backing store path: /")
    if shown.count("\nTarget ") + shown.startswith("Target ") != count or served != count:
        raise BenchError(f"tgtd serves {served} LUNs, not the {count} added")
    limit = bound(tgtd, sorted(site.disks.glob("*.img")))
    return "\n".join([
        f"iscsi on a real tgtd: {count} targets with 1 LUN each queued at once (LDAP adds "
        f"took {queued:.2f} s; disks provisioned before), default workers",
        f"    daemon: {rate:.1f} entries/s ({finished - started:.2f} s from the first add to "
        f"the last `added`), {applies} apply runs; tgtd serves exactly them",
        f"    bound:  {limit:.1f} targets/s (tgtadm: target, ACL and LUN per target, in a "
        "tight loop, same run)",
        f"    ratio:  {rate / 2 / limit:.3f} (targets with their LUN per second over the bound)",
        "",
        f"METRIC iscsi_throughput {rate:.1f} entries/s",
        f"METRIC iscsi_time_to_last_added {finished - started:.2f} s",
        f"METRIC iscsi_apply_runs {applies} runs",
        f"METRIC iscsi_tgtadm_bound {limit:.1f} targets/s",
        f"METRIC iscsi_ratio {rate / 2 / limit:.3f} ratio",
    ])
