"""scripts/disk-lvm against real LVM metadata on a loop device (activation off: device nodes
are stand-ins, support.py says why): create, adopt or refuse, check, grow and refuse
shrinking, keep or destroy, a SIGKILL at any point followed by a re-run, and the pure parts
(argument lists, decisions) loaded as a module."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.kinds.disk.support import Lvm, StandIns, load_script
from tests.support import REPO

HOOK = REPO / "scripts" / "disk-lvm"
UUID = "0b4a6e2c-1d2e-4f00-9a11-3c5d7e9f0a12"
OTHER = "7f00aa11-2b3c-4d5e-8f90-112233445566"
MIB = 1024 * 1024
lvm_hook = load_script("disk-lvm")


def hook(lvm: Lvm, stand_ins: StandIns, *args: str, wait: float = 2,
         program: str | None = None) -> subprocess.CompletedProcess[str]:
    extra = [f"--lvm={program}"] if program else []
    return subprocess.run([sys.executable, str(HOOK), *args,
                           *lvm.options(stand_ins.device_dir, wait), *extra],
                          capture_output=True, text=True, check=False, timeout=60)


def outputs(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    return dict(line.removeprefix("provisiond-set ").split("=", 1)
                for line in done.stdout.splitlines() if line.startswith("provisiond-set "))


def create(lvm: Lvm, stand_ins: StandIns, name: str, size: int = 10 * MIB, uuid: str = UUID,
           kind: str = "block", **kwargs: object) -> subprocess.CompletedProcess[str]:
    return hook(lvm, stand_ins, "create", lvm.vg, name, kind, str(size), uuid,
                **kwargs)  # type: ignore[arg-type]


# -- pure parts --------------------------------------------------------------------------------


def test_argument_lists_never_prompt_and_tag_in_one_command() -> None:
    assert lvm_hook.lvcreate_argv("/usr/sbin/lvm", "vg0", "r1", 10 * MIB, UUID, "block") == [
        "/usr/sbin/lvm", "lvcreate", "--yes", "-Wy", "-n", "r1", "-L", f"{10 * MIB}b",
        "--addtag", f"provisiond-uuid:{UUID}", "--addtag", "provisiond-type:block", "vg0"]
    assert lvm_hook.lvextend_argv("lvm", "vg0", "r1", 12 * MIB)[-2:] == [f"{12 * MIB}b",
                                                                         "vg0/r1"]
    assert lvm_hook.lvrename_argv("lvm", "vg0", "r1", "r1.deleted-X")[-3:] == [
        "vg0", "r1", "r1.deleted-X"]
    assert lvm_hook.lvremove_argv("lvm", "vg0", "r1")[-1] == "vg0/r1"
    env = lvm_hook.environment("/tmp/x")
    assert env["LC_ALL"] == "C" and env["LVM_SYSTEM_DIR"] == "/tmp/x"
    assert "LVM_SYSTEM_DIR" not in lvm_hook.environment("")


def test_decisions() -> None:
    volume = lvm_hook.Volume(vg="vg0", name="r1", size=12 * MIB,
                             tags=(f"provisiond-uuid:{UUID}", "provisiond-type:block"),
                             attr="-wi-a-----", extent=4 * MIB)
    assert lvm_hook.round_up(10 * MIB, 4 * MIB) == 12 * MIB
    assert lvm_hook.adoption_refusal(volume, "block", 10 * MIB, UUID) is None
    assert "another entry" in lvm_hook.adoption_refusal(volume, "block", 10 * MIB, OTHER)
    assert "not 16777216" in lvm_hook.adoption_refusal(volume, "block", 16 * MIB, UUID)
    assert "filesystem" in lvm_hook.adoption_refusal(volume, "filesystem", 10 * MIB, UUID)
    assert lvm_hook.shrink_refusal(volume, 9 * MIB) is None  # rounds up to the same size
    assert "shrink refused" in lvm_hook.shrink_refusal(volume, 8 * MIB)
    assert lvm_hook.placement_refusal([volume], "vg0", "r1", "block") is None
    assert "pool" in lvm_hook.placement_refusal([volume], "vg1", "r1", "block")
    assert "name" in lvm_hook.placement_refusal([volume], "vg0", "r2", "block")
    assert "another backend" in lvm_hook.placement_refusal([], "vg0", "r1", "block")
    assert lvm_hook.kept_name("r1", "20260101T000000Z", {"r1.deleted-20260101T000000Z"}) == (
        "r1.deleted-20260101T000000Z-2")
    assert not volume.open and lvm_hook.Volume("v", "n", 1, (), "-wi-ao----", 1).open


def test_bad_arguments_are_usage_errors() -> None:
    for argv in (["create", "vg0", "BAD", "block", "1", UUID], ["create", "vg0", "r1", "disk",
                 "1", UUID], ["create", "vg0", "r1", "block", "1G", UUID],
                 ["delete", "vg0", "r1", "block", UUID, "shred", "-"], ["nope"],
                 ["list", "vg0", "--lvm=relative"], ["list", "vg0", "--unknown=1"]):
        done = subprocess.run([sys.executable, str(HOOK), *argv], capture_output=True,
                              text=True, check=False)
        assert done.returncode == 64, (argv, done.stderr)


# -- real LVM ----------------------------------------------------------------------------------


def test_create_makes_a_tagged_volume_and_reports_it(lvm: Lvm, stand_ins: StandIns) -> None:
    stand_ins.block(lvm.vg, "r1")
    done = create(lvm, stand_ins, "r1", 10 * MIB)
    assert done.returncode == 0, done.stderr
    assert outputs(done) == {"device": str(stand_ins.path(lvm.vg, "r1")),
                             "allocated": str(12 * MIB)}  # whole 4 MiB extents
    size, tags = lvm.volumes()["r1"]
    assert size == 12 * MIB
    assert set(tags) == {f"provisiond-uuid:{UUID}", "provisiond-type:block"}


def test_existing_volume_is_adopted_only_when_it_is_the_entrys(
        lvm: Lvm, stand_ins: StandIns) -> None:
    stand_ins.block(lvm.vg, "r1", "plain")
    assert create(lvm, stand_ins, "r1").returncode == 0
    again = create(lvm, stand_ins, "r1")  # a re-run after a crash before the report
    assert again.returncode == 0 and outputs(again)["allocated"] == str(12 * MIB)
    for done, why in ((create(lvm, stand_ins, "r1", uuid=OTHER), "belongs to another entry"),
                      (create(lvm, stand_ins, "r1", 64 * MIB), "refusing to adopt"),
                      (create(lvm, stand_ins, "r1", kind="filesystem"), "block volume")):
        assert done.returncode == 65 and why in done.stderr, done.stderr
        assert not outputs(done)
    lvm.run("lvcreate", "-q", "--yes", "-n", "plain", "-L", "8m", lvm.vg)
    done = create(lvm, stand_ins, "plain", 8 * MIB)
    assert done.returncode == 65 and "carries no provisiond-uuid tag" in done.stderr
    assert lvm.volumes()["r1"][0] == 12 * MIB and lvm.volumes()["plain"][1] == ()
    moved = create(lvm, stand_ins, "r2")  # the same entry under another name
    assert moved.returncode == 65 and "the name cannot change" in moved.stderr
    assert "r2" not in lvm.volumes()


def test_device_node_is_waited_for_and_bounded(lvm: Lvm, stand_ins: StandIns) -> None:
    started = time.monotonic()
    done = create(lvm, stand_ins, "late", wait=0.5)
    assert done.returncode == 75, done.stderr  # made, node missing: tried again later
    assert "did not appear within 0.5 s" in done.stderr
    assert 0.5 <= time.monotonic() - started < 10
    timer = threading.Timer(0.3, stand_ins.block, (lvm.vg, "late"))
    timer.start()
    again = create(lvm, stand_ins, "late", wait=5)
    timer.join()
    assert again.returncode == 0, again.stderr
    assert outputs(again)["device"] == str(stand_ins.path(lvm.vg, "late"))


def test_check_refuses_a_changed_pool_name_type_or_backend(
        lvm: Lvm, stand_ins: StandIns) -> None:
    stand_ins.block(lvm.vg, "r1")
    assert create(lvm, stand_ins, "r1").returncode == 0
    ok = hook(lvm, stand_ins, "check", lvm.vg, "r1", "block", UUID)
    assert ok.returncode == 0 and outputs(ok)["allocated"] == str(12 * MIB)
    for args, why in ((("othervg", "r1", "block", UUID), "the pool cannot change"),
                      ((lvm.vg, "r9", "block", UUID), "the name cannot change"),
                      ((lvm.vg, "r1", "filesystem", UUID), "the type cannot change"),
                      ((lvm.vg, "r1", "block", OTHER), "made with another backend")):
        done = hook(lvm, stand_ins, "check", *args)
        assert done.returncode == 65 and why in done.stderr, (args, done.stderr)


def test_grow_grows_and_a_shrink_is_refused(lvm: Lvm, stand_ins: StandIns) -> None:
    stand_ins.block(lvm.vg, "r1")
    assert create(lvm, stand_ins, "r1", 10 * MIB).returncode == 0
    small = hook(lvm, stand_ins, "check-grow", lvm.vg, "r1", "block", str(4 * MIB), UUID,
                 "true")
    assert small.returncode == 65 and "shrink refused" in small.stderr
    assert "never shrunk" in small.stderr.splitlines()[-1]
    assert hook(lvm, stand_ins, "grow", lvm.vg, "r1", "block", str(4 * MIB), UUID,
                "false").returncode == 65
    assert lvm.volumes()["r1"][0] == 12 * MIB
    same = hook(lvm, stand_ins, "check-grow", lvm.vg, "r1", "block", str(12 * MIB), UUID,
                "false")
    assert same.returncode == 0
    grown = hook(lvm, stand_ins, "grow", lvm.vg, "r1", "block", str(30 * MIB), UUID, "false")
    assert grown.returncode == 0, grown.stderr
    assert outputs(grown)["allocated"] == str(32 * MIB) == str(lvm.volumes()["r1"][0])
    again = hook(lvm, stand_ins, "grow", lvm.vg, "r1", "block", str(30 * MIB), UUID, "false")
    assert again.returncode == 0 and "grew" not in again.stderr  # nothing to do
    foreign = hook(lvm, stand_ins, "grow", lvm.vg, "r1", "block", str(40 * MIB), OTHER,
                   "false")
    assert foreign.returncode == 65 and lvm.volumes()["r1"][0] == 32 * MIB


def test_delete_keeps_or_destroys_and_gone_is_done(lvm: Lvm, stand_ins: StandIns) -> None:
    stand_ins.block(lvm.vg, "keep1", "gone1", "theirs")
    for name in ("keep1", "gone1"):
        assert create(lvm, stand_ins, name, uuid=UUID if name == "keep1" else OTHER
                      ).returncode == 0
    kept = hook(lvm, stand_ins, "delete", lvm.vg, "keep1", "block", UUID, "keep",
                "20261204T101500Z")
    assert kept.returncode == 0, kept.stderr
    names = set(lvm.volumes())
    assert "keep1.deleted-20261204T101500Z" in names and "keep1" not in names
    assert f"provisiond-uuid:{UUID}" in lvm.volumes()["keep1.deleted-20261204T101500Z"][1]
    again = hook(lvm, stand_ins, "delete", lvm.vg, "keep1", "block", UUID, "keep", "-")
    assert again.returncode == 0 and "kept as keep1.deleted-20261204T101500Z" in again.stderr
    refused = hook(lvm, stand_ins, "delete", lvm.vg, "gone1", "block", UUID, "destroy", "-")
    assert refused.returncode == 65 and "gone1" in lvm.volumes()  # another entry's
    destroyed = hook(lvm, stand_ins, "delete", lvm.vg, "gone1", "block", OTHER, "destroy", "-")
    assert destroyed.returncode == 0 and "gone1" not in lvm.volumes()
    assert hook(lvm, stand_ins, "delete", lvm.vg, "gone1", "block", OTHER, "destroy",
                "-").returncode == 0
    listed = hook(lvm, stand_ins, "list", lvm.vg)
    assert listed.stdout == f"keep1.deleted-20261204T101500Z {12 * MIB} block {UUID}\n"


def test_a_missing_volume_group_is_unavailable(lvm: Lvm, stand_ins: StandIns) -> None:
    done = hook(lvm, stand_ins, "create", "novg", "r1", "block", str(MIB), UUID)
    assert done.returncode == 69 and "novg" in done.stderr


def killer(directory: Path, command: str) -> Path:
    """An lvm that runs the real one, then SIGKILLs the hook that called it when the
    command is `command`: the hook dies after the change and before reporting it."""
    path = directory / f"lvm-kill-{command}"
    path.write_text(
        "#!/usr/bin/env python3\nimport os, signal, subprocess, sys\n"
        "status = subprocess.call(['/usr/sbin/lvm', *sys.argv[1:]])\n"
        f"if sys.argv[1] == {command!r}:\n"
        "    os.kill(os.getppid(), signal.SIGKILL)\n"
        "sys.exit(status)\n")
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("command", ["lvcreate", "lvextend", "lvrename", "lvremove"])
def test_a_rerun_after_sigkill_mid_hook_converges(
        lvm: Lvm, stand_ins: StandIns, tmp_path: Path, command: str) -> None:
    stand_ins.block(lvm.vg, "r1")
    program = str(killer(tmp_path, command))
    if command != "lvcreate":
        assert create(lvm, stand_ins, "r1").returncode == 0
    args = {"lvcreate": ("create", lvm.vg, "r1", "block", str(10 * MIB), UUID),
            "lvextend": ("grow", lvm.vg, "r1", "block", str(20 * MIB), UUID, "false"),
            "lvrename": ("delete", lvm.vg, "r1", "block", UUID, "keep", "-"),
            "lvremove": ("delete", lvm.vg, "r1", "block", UUID, "destroy", "-")}[command]
    killed = hook(lvm, stand_ins, *args, program=program)
    assert killed.returncode == -9 and not outputs(killed)
    rerun = hook(lvm, stand_ins, *args)
    assert rerun.returncode == 0, rerun.stderr
    volumes = lvm.volumes()
    if command == "lvcreate":
        assert outputs(rerun)["allocated"] == str(12 * MIB) and volumes["r1"][0] == 12 * MIB
    elif command == "lvextend":
        assert outputs(rerun)["allocated"] == str(20 * MIB) == str(volumes["r1"][0])
    elif command == "lvrename":
        assert [n for n in volumes if n.startswith("r1")] != ["r1"]
        assert "already gone (kept as r1.deleted-" in rerun.stderr
    else:
        assert not volumes and "already gone" in rerun.stderr


def test_a_missing_volume_group_is_unavailable_for_every_action(
        lvm: Lvm, stand_ins: StandIns) -> None:
    for args in (("grow", "novg", "r1", "block", str(MIB), UUID, "false"),
                 ("delete", "novg", "r1", "block", UUID, "keep", "-"), ("list", "novg")):
        done = hook(lvm, stand_ins, *args)
        assert done.returncode == 69 and "volume group novg not found" in done.stderr, (
            args, done.stderr)


def test_no_space_fails_with_lvms_reason(lvm: Lvm, stand_ins: StandIns) -> None:
    done = create(lvm, stand_ins, "huge", 64 * 1024 * MIB)
    assert done.returncode == 1 and not outputs(done)
    assert "insufficient free space" in done.stderr.splitlines()[-1], done.stderr
    assert "huge" not in lvm.volumes()


def test_busy_volume_is_tried_again_later(lvm: Lvm, stand_ins: StandIns,
                                          tmp_path: Path) -> None:
    """An open LV: lvremove and lvrename refuse it "in use" (activation is off here, so an
    lvm that answers as LVM does for an open volume stands in for them)."""
    stand_ins.block(lvm.vg, "r1")
    assert create(lvm, stand_ins, "r1").returncode == 0
    busy = tmp_path / "lvm-busy"
    busy.write_text(
        "#!/usr/bin/env python3\nimport os, sys\n"
        "if sys.argv[1] in ('lvremove', 'lvrename'):\n"
        f"    print('  Logical volume {lvm.vg}/r1 in use.', file=sys.stderr)\n"
        "    sys.exit(5)\n"
        "os.execv('/usr/sbin/lvm', ['/usr/sbin/lvm', *sys.argv[1:]])\n")
    busy.chmod(0o755)
    for on_delete in ("keep", "destroy"):
        done = hook(lvm, stand_ins, "delete", lvm.vg, "r1", "block", UUID, on_delete, "-",
                    program=str(busy))
        assert done.returncode == 75 and "in use" in done.stderr, done.stderr
    assert "r1" in lvm.volumes()
