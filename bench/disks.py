"""The disk-repository scenario (`bench/run --storage disks`, root only): N logical volumes
(200; 50 with --quick) queued at once as LDAP entries, provisioned by the daemon with the
shipped kind and hooks on real LVM metadata (a VG on a loop device, private LVM_SYSTEM_DIR,
activation off: device nodes are stand-ins, as in tests/kinds/disk/), and beside it, in the
same run, the bound: the same lvcreate calls (the hook's own argument lists) in a tight loop,
on a second VG that starts empty as the daemon's did.

LVM takes a lock per VG and writes its metadata (and a backup) per change, so lvcreate calls
on one VG do not run in parallel: the bound is what LVM itself allows, and the ratio says
what provisiond's claims, hooks and reports add on top of it (per entry the daemon also runs
disk-pool and reads the VG twice: 3 lvm commands where the bound runs 1).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.harness import BenchError, Cleanup, Daemon, SyslogCapture, connect
from bench.workload import daemon_config
from provisiond.testing.slapd import start_private_slapd
from tests.kinds.disk.support import DISKS, OUS, Lvm, StandIns, add_disk, load_script

SIZE = "8M"
SIZE_BYTES = 8 * 1024 * 1024


def services(workdir: Path, group: Lvm, stand_ins: StandIns) -> dict[str, Any]:
    return {"disk-repository": {"kind": "disk-repository", "vars": {
        "base": DISKS, "pools": [f"{group.vg}=lvm"], "mount_root": str(workdir / "mnt"),
        "fstab": str(workdir / "fstab"), "device_dir": str(stand_ins.device_dir),
        "lvm_system_dir": str(group.system_dir)}}}


def bound(group: Lvm, names: list[str]) -> float:
    """lvcreate calls per second: the hook's argument lists, one after the other."""
    hook = load_script("disk-lvm")
    env = {**hook.environment(str(group.system_dir))}
    started = time.monotonic()
    for name in names:
        argv = hook.lvcreate_argv("/usr/sbin/lvm", group.vg, name, SIZE_BYTES,
                                  "00000000-0000-0000-0000-000000000000", "block")
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BenchError(f"bound: lvcreate {name} failed: {done.stderr.strip()}")
    return len(names) / (time.monotonic() - started)


def run(quick: bool, workdir: Path, cleanup: Cleanup) -> str:
    if os.geteuid() != 0:
        raise BenchError("the disks scenario needs root (loop devices, LVM)")
    count = 50 if quick else 200
    group = Lvm(workdir / "lvm", size="8G").start()
    cleanup.add("volume group", group.stop)
    stand_ins = StandIns(workdir / "dev", group.loop)
    names = [f"bench{i:03d}" for i in range(count)]
    stand_ins.block(group.vg, *names)
    server = start_private_slapd(workdir / "slapd", extra_ldif=OUS)
    cleanup.add("slapd", server.stop)
    capture = SyslogCapture(workdir / "syslog.sock")
    cleanup.add("syslog capture", capture.close)
    config = daemon_config(workdir, server, capture.path, services(workdir, group, stand_ins))
    daemon = Daemon(config, workdir / "daemon.log", capture, cleanup)
    capture.wait(daemon.pid, "connected", 1, 30, daemon.alive, "daemon start")

    conn = connect(server)
    started = time.monotonic()
    for name in names:
        add_disk(conn, name, pool=group.vg, size=SIZE)
    queued = time.monotonic() - started
    capture.wait(daemon.pid, "added", count, 600, daemon.alive, "disks added")
    finished = max(record[0] for record in capture.events(daemon.pid, "added"))
    rate = count / (finished - started)
    daemon.stop()

    listed = sorted(group.volumes())
    if listed != names:
        raise BenchError(f"lvs lists {len(listed)} volumes, not exactly the {count} added")
    # The bound starts as the daemon did, from an empty VG (LVM's metadata, written on every
    # change, grows with the volumes: on the daemon's VG the calls would be slower).
    empty = Lvm(workdir / "lvm-bound", vg="pvdbound", size="8G").start()
    cleanup.add("bound volume group", empty.stop)
    limit = bound(empty, names)
    return "\n".join([
        f"disk-repository on LVM (a VG on a loop device, activation off): {count} volumes of "
        f"{SIZE} queued at once (LDAP adds took {queued:.2f} s), default workers",
        f"    daemon: {rate:.1f} entries/s ({finished - started:.2f} s from the first add to "
        "the last `added`); `lvs` lists exactly them",
        f"    bound:  {limit:.1f} lvcreate/s (the same lvcreate calls in a tight loop, same run)",
        f"    ratio:  {rate / limit:.3f}",
        "",
        f"METRIC disks_throughput {rate:.1f} entries/s",
        f"METRIC disks_lvcreate_bound {limit:.1f} calls/s",
        f"METRIC disks_ratio {rate / limit:.3f} ratio",
    ])
