"""scripts/disk-zfs on a REAL ZFS: zfs-fuse, a pool per test on a file vdev (zfs_fuse.py).

Datasets only: zfs-fuse cannot make zvols (test_zfs_zvols.py uses the fake for those). The
quota is the real thing: writing past it fails with EDQUOT."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from tests.kinds.disk.zfs_fuse import (
    ZFS,
    Pool,
    calls,
    killer,
    outputs,
    prop,
    run_hook,
    state_of,
    zfs,
    zpool,
)

__all__ = ["zpool"]  # the fixture
UUID = "0f8c6d3e-1b2a-4c5d-9e8f-0a1b2c3d4e5f"
OTHER = "11111111-2222-3333-4444-555555555555"
MIB = 1 << 20
STAMP = "20261204T201500Z"
pytestmark = pytest.mark.slow  # a pool per test, the daemon's stop at the end (~4 s)


def hook(pool: Pool, action: str, *args: str, program: str = ZFS) -> subprocess.CompletedProcess[str]:
    extra = [f"--mount-root={pool.mount_root}"] if action == "create" else []
    return run_hook(action, pool.name, *args, f"--zfs={program}", *extra)


def create(pool: Pool, name: str = "repo01", size: int = 8 * MIB, uuid: str = UUID,
           program: str = ZFS) -> subprocess.CompletedProcess[str]:
    return hook(pool, "create", name, "filesystem", str(size), uuid, program=program)


def write(path: Path, size: int) -> None:
    """`size` bytes of incompressible data, synced: what a backup writes."""
    with open(path, "wb") as file:
        left = size
        while left:
            chunk = os.urandom(min(left, MIB))
            file.write(chunk)
            left -= len(chunk)
        file.flush()
        os.fsync(file.fileno())


def test_create_makes_a_mounted_dataset_with_its_quota(zpool: Pool) -> None:
    done = create(zpool)
    assert done.returncode == 0, done.stderr
    mount = zpool.mount_root / "repo01"
    assert outputs(done) == {"path": str(mount), "allocated": str(8 * MIB)}
    dataset = zpool.dataset("repo01")
    assert prop(dataset, "refquota") == str(8 * MIB)
    assert prop(dataset, "provisiond:uuid") == UUID
    assert prop(dataset, "provisiond:type") == "filesystem"
    assert prop(dataset, "mountpoint") == str(mount)
    assert prop(dataset, "mounted") == "yes" and os.path.ismount(mount)


def test_the_quota_is_enforced(zpool: Pool) -> None:
    assert create(zpool, size=4 * MIB).returncode == 0
    with pytest.raises(OSError) as full:
        write(zpool.mount_root / "repo01" / "data", 16 * MIB)
    assert full.value.errno == errno.EDQUOT
    used = int(prop(zpool.dataset("repo01"), "referenced"))
    assert 2 * MIB < used <= 5 * MIB  # it took what the quota allows, not more


def test_create_again_adopts_and_changes_nothing(zpool: Pool) -> None:
    first = create(zpool)
    (zpool.mount_root / "repo01" / "kept").write_text("data")
    again = create(zpool)
    assert again.returncode == 0, again.stderr
    assert outputs(again) == outputs(first)
    assert (zpool.mount_root / "repo01" / "kept").read_text() == "data"


def test_create_mounts_an_adopted_dataset_that_is_not_mounted(zpool: Pool) -> None:
    create(zpool)
    subprocess.run([ZFS, "unmount", zpool.dataset("repo01")], check=True)
    assert create(zpool).returncode == 0
    assert prop(zpool.dataset("repo01"), "mounted") == "yes"


@pytest.mark.parametrize(("setup", "why"), [
    (["-o", f"provisiond:uuid={OTHER}", "-o", "refquota=8M"], "belongs to another entry"),
    (["-o", "refquota=8M"], "carries no provisiond:uuid"),
    (["-o", f"provisiond:uuid={UUID}", "-o", "refquota=16M"], "exists with 16777216 bytes"),
])
def test_create_refuses_a_dataset_it_may_not_adopt(zpool: Pool, setup: list[str],
                                                   why: str) -> None:
    dataset = zpool.dataset("repo01")
    zfs("create", *setup, "-o", f"mountpoint={zpool.mount_root}/elsewhere", dataset)
    done = create(zpool)
    assert done.returncode == 65, done
    assert why in done.stderr.splitlines()[-1] and "not adopted" in done.stderr
    assert outputs(done) == {}
    # untouched: not resized, not moved, its owner kept
    assert prop(dataset, "mountpoint") == f"{zpool.mount_root}/elsewhere"
    assert prop(dataset, "refquota") in (str(8 * MIB), str(16 * MIB))


def test_create_refuses_when_the_entry_has_a_volume_under_another_name(zpool: Pool) -> None:
    assert create(zpool, "repo01").returncode == 0
    done = create(zpool, "repo02")
    assert done.returncode == 65
    assert f"this entry's volume is {zpool.dataset('repo01')}" in done.stderr
    assert not zpool.exists("repo02")


def test_check(zpool: Pool) -> None:
    create(zpool)
    done = hook(zpool, "check", "repo01", "filesystem", UUID)
    assert done.returncode == 0, done.stderr
    assert outputs(done) == {"path": str(zpool.mount_root / "repo01"), "allocated": str(8 * MIB)}
    for args, why in [(("repo01", "block", UUID), "type cannot change"),
                      (("repo02", "filesystem", UUID), "name cannot change"),
                      (("repo01", "filesystem", OTHER), "another backend")]:
        refused = hook(zpool, "check", *args)
        assert refused.returncode == 65 and why in refused.stderr, refused


def test_grow_raises_the_quota_for_real(zpool: Pool) -> None:
    create(zpool, size=4 * MIB)
    data = zpool.mount_root / "repo01" / "data"
    done = hook(zpool, "grow", "repo01", "filesystem", str(16 * MIB), UUID, "false")
    assert done.returncode == 0, done.stderr
    assert outputs(done)["allocated"] == str(16 * MIB)
    assert prop(zpool.dataset("repo01"), "refquota") == str(16 * MIB)
    write(data, 10 * MIB)  # past the old quota: fits now
    again = hook(zpool, "grow", "repo01", "filesystem", str(16 * MIB), UUID, "false")
    assert again.returncode == 0 and outputs(again) == outputs(done)


def test_shrink_is_refused(zpool: Pool) -> None:
    create(zpool, size=8 * MIB)
    for action in ("check-grow", "grow"):
        done = hook(zpool, action, "repo01", "filesystem", str(4 * MIB), UUID, "false")
        assert done.returncode == 65, done
        assert "refused (allow_shrink is false)" in done.stderr.splitlines()[-1]
    assert prop(zpool.dataset("repo01"), "refquota") == str(8 * MIB)


def test_allow_shrink_lowers_a_quota_only_above_usage(zpool: Pool) -> None:
    create(zpool, size=16 * MIB)
    write(zpool.mount_root / "repo01" / "data", 6 * MIB)
    below = hook(zpool, "grow", "repo01", "filesystem", str(4 * MIB), UUID, "true")
    assert below.returncode == 65 and "the dataset holds" in below.stderr
    assert prop(zpool.dataset("repo01"), "refquota") == str(16 * MIB)
    above = hook(zpool, "grow", "repo01", "filesystem", str(10 * MIB), UUID, "true")
    assert above.returncode == 0, above.stderr
    assert prop(zpool.dataset("repo01"), "refquota") == str(10 * MIB)


def test_delete_keep_renames_unmounted_with_the_data(zpool: Pool) -> None:
    create(zpool)
    (zpool.mount_root / "repo01" / "backup").write_text("precious")
    done = hook(zpool, "delete", "repo01", "filesystem", UUID, "keep", STAMP)
    assert done.returncode == 0, done.stderr
    kept = zpool.dataset(f"repo01.deleted-{STAMP}")
    assert zpool.children() == [f"repo01.deleted-{STAMP}"]
    assert prop(kept, "mounted") == "no" and prop(kept, "canmount") == "noauto"
    assert prop(kept, "mountpoint") == f"{zpool.mount_root}/repo01.deleted-{STAMP}"
    assert not (zpool.mount_root / "repo01").exists()  # the empty mount point went too
    listed = hook(zpool, "list")
    assert listed.stdout.splitlines() == [f"repo01.deleted-{STAMP} {8 * MIB} filesystem {UUID}"]
    again = hook(zpool, "delete", "repo01", "filesystem", UUID, "keep", "-")
    assert again.returncode == 0 and f"kept as {kept}" in again.stderr
    zfs("mount", kept)  # the data is still there
    assert (zpool.mount_root / f"repo01.deleted-{STAMP}" / "backup").read_text() == "precious"
    assert create(zpool).returncode == 0  # the name is free for a new entry (same one here)


def test_delete_destroy_removes_it(zpool: Pool) -> None:
    create(zpool)
    done = hook(zpool, "delete", "repo01", "filesystem", UUID, "destroy", "-")
    assert done.returncode == 0, done.stderr
    assert zpool.children() == []
    assert not (zpool.mount_root / "repo01").exists()
    again = hook(zpool, "delete", "repo01", "filesystem", UUID, "destroy", "-")
    assert again.returncode == 0 and "gone already" in again.stderr


def test_delete_leaves_another_entrys_dataset_alone(zpool: Pool) -> None:
    create(zpool, uuid=OTHER)
    for on_delete in ("keep", "destroy"):
        done = hook(zpool, "delete", "repo01", "filesystem", UUID, on_delete, "-")
        assert done.returncode == 65 and "belongs to another entry" in done.stderr
    assert zpool.children() == ["repo01"]


def test_delete_of_a_busy_dataset_is_tried_again_later(zpool: Pool) -> None:
    create(zpool)
    mount = zpool.mount_root / "repo01"
    holder = subprocess.Popen(["/bin/sleep", "60"], cwd=mount)  # a process inside: umount is busy
    try:
        done = hook(zpool, "delete", "repo01", "filesystem", UUID, "keep", STAMP)
        assert done.returncode == 75, done
        assert "busy" in done.stderr.splitlines()[-1]
        assert zpool.children() == ["repo01"]
    finally:
        holder.kill()
        holder.wait()
    assert hook(zpool, "delete", "repo01", "filesystem", UUID, "keep", STAMP).returncode == 0


def test_a_missing_pool_is_unavailable(zpool: Pool) -> None:
    done = run_hook("create", "nopool", "repo01", "filesystem", str(MIB), UUID,
                    f"--mount-root={zpool.mount_root}", f"--zfs={ZFS}")
    assert done.returncode == 69 and "no such pool" in done.stderr


SCENARIOS = {
    # name: (set-up runs before, the run that is killed, the properties compared)
    "create": ([], ("create", "repo01", "filesystem", str(8 * MIB), UUID),
               ["repo01"]),
    "grow": ([("create", "repo01", "filesystem", str(8 * MIB), UUID)],
             ("grow", "repo01", "filesystem", str(16 * MIB), UUID, "false"), ["repo01"]),
    "keep": ([("create", "repo01", "filesystem", str(8 * MIB), UUID)],
             ("delete", "repo01", "filesystem", UUID, "keep", STAMP),
             [f"repo01.deleted-{STAMP}"]),
    "destroy": ([("create", "repo01", "filesystem", str(8 * MIB), UUID)],
                ("delete", "repo01", "filesystem", UUID, "destroy", STAMP), []),
}
PROPS = ("refquota", "provisiond:uuid", "mountpoint", "mounted", "canmount")


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_a_kill_after_any_zfs_command_then_a_rerun_converges(zpool: Pool, tmp_path: Path,
                                                             scenario: str) -> None:
    """SIGKILL the hook right after each of its zfs commands in turn; the re-run must end
    where an uninterrupted run ends (same datasets, same properties, same outputs)."""
    setup, run, leaves = SCENARIOS[scenario]

    def fresh() -> None:
        zpool.clear()
        for step in setup:
            assert hook(zpool, *step).returncode == 0

    fresh()
    clean = hook(zpool, *run)
    assert clean.returncode == 0, clean.stderr
    expected = (zpool.children(), state_of(zpool, leaves, PROPS), outputs(clean))
    cut = 1
    while True:
        fresh()
        shim = killer(tmp_path / f"kill{cut}", ZFS, cut)
        killed = hook(zpool, *run, program=str(shim))
        if killed.returncode != -9:  # it ran to its end before its cut-th command
            assert calls(tmp_path / f"kill{cut}") < cut
            break
        rerun = hook(zpool, *run)
        assert rerun.returncode == 0, (cut, rerun.stderr)
        assert (zpool.children(), state_of(zpool, leaves, PROPS), outputs(rerun)) == expected, cut
        cut += 1
    assert cut >= 3  # each scenario runs at least a read and a change (busy retries add some)
