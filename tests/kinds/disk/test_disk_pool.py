"""scripts/disk-pool: the allowed-pools check every disk entry passes first (27 otherwise), and
`list`, the kind's `status:` command, across backends."""

from __future__ import annotations

import subprocess
import sys

from tests.kinds.disk.support import Lvm, StandIns, load_script
from tests.support import REPO

HOOK = REPO / "scripts" / "disk-pool"
pool_hook = load_script("disk-pool")


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(HOOK), *argv], capture_output=True, text=True,
                          check=False, timeout=60)


def test_only_listed_pools_with_their_backend_are_allowed() -> None:
    allowed = pool_hook.allowed_pools("vg0=lvm tank=zfs junk =lvm")
    assert allowed == {"vg0": "lvm", "tank": "zfs"}
    assert pool_hook.refusal("lvm", "vg0", allowed) is None
    assert "not allowed on this host" in pool_hook.refusal("lvm", "vg9", allowed)
    assert "allowed with backend zfs, not lvm" in pool_hook.refusal("lvm", "tank", allowed)
    assert "allowed pools: none" in pool_hook.refusal("lvm", "vg0", {})
    assert run("lvm", "vg0", "vg0=lvm").returncode == 0
    refused = run("lvm", "vg0", "")
    assert refused.returncode == 65 and "pool vg0 is not allowed" in refused.stderr
    assert run("lvm", "vg0").returncode == 64


def test_list_argv_passes_each_hook_its_own_options() -> None:
    options = {"lvm": "/sbin/lvm", "lvm-system-dir": "", "zfs": "/sbin/zfs"}
    assert pool_hook.list_argv("/x", "lvm", "vg0", options) == [
        "/x/disk-lvm", "list", "vg0", "--lvm=/sbin/lvm"]
    assert pool_hook.list_argv("/x", "zfs", "tank", options) == [
        "/x/disk-zfs", "list", "tank", "--zfs=/sbin/zfs"]
    assert run("list", "vg0=lvm", "--bogus=1").returncode == 64


def test_list_shows_every_pools_volumes_and_says_which_cannot_be_listed(
        lvm: Lvm, stand_ins: StandIns) -> None:
    stand_ins.block(lvm.vg, "r1")
    lvm.run("lvcreate", "-q", "--yes", "-n", "r1", "-L", "8m", "--addtag",
            "provisiond-uuid:0b4a6e2c-1d2e-4f00-9a11-3c5d7e9f0a12", "--addtag",
            "provisiond-type:block", lvm.vg)
    lvm.run("lvcreate", "-q", "--yes", "-n", "foreign", "-L", "4m", lvm.vg)
    done = run("list", f"{lvm.vg}=lvm novg=lvm", f"--lvm-system-dir={lvm.system_dir}")
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "lvm novg: cannot list: disk-lvm: volume group novg not found: Cannot process volume "
        "group novg",
        f"lvm {lvm.vg}/r1 8388608 block 0b4a6e2c-1d2e-4f00-9a11-3c5d7e9f0a12"]
