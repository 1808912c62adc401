"""scripts/disk-zfs with zvols, against tests/kinds/disk/fake_zfs: zfs-fuse cannot make
volumes (`zfs create -V` aborts: "Function not implemented"), so these run against the fake,
which keeps OpenZFS's argv, output, messages and exit codes (test_zfs_fake.py compares it with
the real zfs-fuse where both can answer) and makes a stand-in device node per zvol."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.kinds.disk.zfs_fuse import FakeZfs, calls, install_fake, killer, outputs, run_hook

UUID = "0f8c6d3e-1b2a-4c5d-9e8f-0a1b2c3d4e5f"
OTHER = "11111111-2222-3333-4444-555555555555"
MIB = 1 << 20
STAMP = "20261204T201500Z"


@pytest.fixture
def fake(tmp_path: Path) -> FakeZfs:
    return install_fake(tmp_path / "zfs", "tank")


def hook(fake: FakeZfs, action: str, *args: str, program: Path | None = None,
         wait: str = "2") -> subprocess.CompletedProcess[str]:
    extra = ["--volblocksize=16384"] if action == "create" else []
    return run_hook(action, "tank", *args, f"--zfs={program or fake.program}",
                    f"--device-dir={fake.device_dir}", f"--wait={wait}", *extra)


def create(fake: FakeZfs, size: int = 64 * MIB, uuid: str = UUID,
           name: str = "lun01") -> subprocess.CompletedProcess[str]:
    return hook(fake, "create", name, "block", str(size), uuid)


def volumes(fake: FakeZfs) -> dict[str, dict[str, object]]:
    found: dict[str, dict[str, object]] = fake.state()["datasets"]
    return found


def test_create_makes_a_zvol_and_waits_for_its_node(fake: FakeZfs) -> None:
    done = create(fake)
    assert done.returncode == 0, done.stderr
    node = fake.device_dir / "zvol" / "tank" / "lun01"
    assert outputs(done) == {"device": str(node), "allocated": str(64 * MIB)}
    assert os.path.getsize(node) == 64 * MIB  # the stand-in, resolved through the symlink
    assert volumes(fake)["tank/lun01"] == {
        "type": "volume", "volsize": 64 * MIB, "volblocksize": 16384,
        "props": {"provisiond:uuid": UUID, "provisiond:type": "block"}}


def test_a_size_is_rounded_up_to_the_volblocksize_and_adopted_again(fake: FakeZfs) -> None:
    done = create(fake, size=10000)
    assert done.returncode == 0, done.stderr
    assert outputs(done)["allocated"] == "16384"
    again = create(fake, size=10000)
    assert again.returncode == 0 and outputs(again) == outputs(done)


def test_create_refuses_another_entrys_zvol_and_another_size(fake: FakeZfs) -> None:
    create(fake, uuid=OTHER)
    other = create(fake)
    assert other.returncode == 65 and "belongs to another entry" in other.stderr
    create(fake, name="lun02")
    resized = create(fake, size=128 * MIB, name="lun02")
    assert resized.returncode == 65 and "exists with 67108864 bytes" in resized.stderr
    assert volumes(fake)["tank/lun02"]["volsize"] == 64 * MIB


def test_a_filesystem_entry_does_not_adopt_a_zvol(fake: FakeZfs) -> None:
    create(fake)
    done = run_hook("create", "tank", "lun01", "filesystem", str(64 * MIB), UUID,
                    f"--zfs={fake.program}", "--mount-root=/srv/disks")
    assert done.returncode == 65 and "is a ZFS volume, the entry says filesystem" in done.stderr


def test_a_device_node_that_does_not_come_is_tried_again_later(fake: FakeZfs) -> None:
    fake.update(no_node=True)
    done = hook(fake, "create", "lun01", "block", str(64 * MIB), UUID, wait="1")
    assert done.returncode == 75, done
    assert "did not appear within 1s" in done.stderr
    assert "tank/lun01" in volumes(fake)  # made: the retry adopts it once the node is there


def test_grow_and_shrink(fake: FakeZfs) -> None:
    create(fake)
    done = hook(fake, "grow", "lun01", "block", str(100 * MIB + 1), UUID, "false")
    assert done.returncode == 0, done.stderr
    assert outputs(done)["allocated"] == str(100 * MIB + 16384)  # rounded up, as set
    assert os.path.getsize(fake.device_dir / "zvol" / "tank" / "lun01") == 100 * MIB + 16384
    for allow in ("false", "true"):  # a zvol never shrinks, allow_shrink or not
        for action in ("check-grow", "grow"):
            refused = hook(fake, action, "lun01", "block", str(64 * MIB), UUID, allow)
            assert refused.returncode == 65 and "shrinking a ZFS volume" in refused.stderr
    assert volumes(fake)["tank/lun01"]["volsize"] == 100 * MIB + 16384


def test_delete_keep_moves_the_node_and_destroy_removes_it(fake: FakeZfs) -> None:
    create(fake)
    create(fake, name="lun02", uuid=OTHER)
    kept = hook(fake, "delete", "lun01", "block", UUID, "keep", STAMP)
    assert kept.returncode == 0, kept.stderr
    assert sorted(volumes(fake)) == [f"tank/lun01.deleted-{STAMP}", "tank/lun02"]
    assert (fake.device_dir / "zvol" / "tank" / f"lun01.deleted-{STAMP}").exists()
    assert not (fake.device_dir / "zvol" / "tank" / "lun01").exists()
    assert hook(fake, "list").stdout.splitlines() == [
        f"lun01.deleted-{STAMP} {64 * MIB} block {UUID}", f"lun02 {64 * MIB} block {OTHER}"]
    assert hook(fake, "delete", "lun01", "block", UUID, "keep", "-").returncode == 0
    destroyed = hook(fake, "delete", "lun02", "block", OTHER, "destroy", "-")
    assert destroyed.returncode == 0, destroyed.stderr
    assert sorted(volumes(fake)) == [f"tank/lun01.deleted-{STAMP}"]
    assert not (fake.device_dir / "zvol" / "tank" / "lun02").exists()


def test_a_second_keep_of_the_same_name_gets_its_own_name(fake: FakeZfs) -> None:
    for _ in range(2):
        create(fake)
        assert hook(fake, "delete", "lun01", "block", UUID, "keep", STAMP).returncode == 0
    assert sorted(volumes(fake)) == [f"tank/lun01.deleted-{STAMP}",
                                     f"tank/lun01.deleted-{STAMP}-2"]


def test_an_open_zvol_is_busy_then_deleted(fake: FakeZfs) -> None:
    create(fake)
    fake.update(busy=["tank/lun01"])
    done = hook(fake, "delete", "lun01", "block", UUID, "destroy", "-")
    assert done.returncode == 75 and "dataset is busy" in done.stderr
    fake.update(busy=[])
    assert hook(fake, "delete", "lun01", "block", UUID, "destroy", "-").returncode == 0
    assert volumes(fake) == {}


SCENARIOS = {
    "create": ([], ("create", "lun01", "block", str(64 * MIB), UUID)),
    "grow": ([("create", "lun01", "block", str(64 * MIB), UUID)],
             ("grow", "lun01", "block", str(96 * MIB), UUID, "false")),
    "keep": ([("create", "lun01", "block", str(64 * MIB), UUID)],
             ("delete", "lun01", "block", UUID, "keep", STAMP)),
    "destroy": ([("create", "lun01", "block", str(64 * MIB), UUID)],
                ("delete", "lun01", "block", UUID, "destroy", STAMP)),
}


@pytest.mark.slow
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_a_kill_after_any_zfs_command_then_a_rerun_converges(tmp_path: Path,
                                                             scenario: str) -> None:
    setup, run = SCENARIOS[scenario]

    def fresh(name: str) -> FakeZfs:
        fake = install_fake(tmp_path / name, "tank")
        for step in setup:
            assert hook(fake, *step).returncode == 0
        return fake

    def seen(fake: FakeZfs) -> object:
        nodes = sorted(p.name for p in (fake.device_dir / "zvol" / "tank").glob("*"))
        return volumes(fake), nodes

    clean = fresh("clean")
    done = hook(clean, *run)
    assert done.returncode == 0, done.stderr
    cut = 1
    while True:
        fake = fresh(f"cut{cut}")
        shim = killer(tmp_path / f"kill{cut}", str(fake.program), cut)
        if hook(fake, *run, program=shim).returncode != -9:
            assert calls(tmp_path / f"kill{cut}") < cut
            break
        rerun = hook(fake, *run)
        assert rerun.returncode == 0, (cut, rerun.stderr)
        assert seen(fake) == seen(clean), cut
        assert {k: v.replace(str(fake.device_dir), "") for k, v in outputs(rerun).items()} == {
            k: v.replace(str(clean.device_dir), "") for k, v in outputs(done).items()}
        cut += 1
    assert cut > 2
