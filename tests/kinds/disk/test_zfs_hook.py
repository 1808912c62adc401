"""scripts/disk-zfs's pure parts: the zfs argument lists it builds, how it reads `zfs get`,
and its decisions (adopt or refuse, grow or refuse a shrink, kept names); usage errors."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from typing import Any

import pytest

from tests.kinds.disk.zfs_fuse import load_hook, run_hook

hook: Any = load_hook()
UUID = "0f8c6d3e-1b2a-4c5d-9e8f-0a1b2c3d4e5f"
OTHER = "11111111-2222-3333-4444-555555555555"


def volume(**given: Any) -> Any:
    fields = {"name": "tank/repo01", "type": "filesystem", "uuid": UUID, "volsize": None,
              "volblocksize": None, "refquota": 8 << 20, "referenced": 1 << 20,
              "mountpoint": "/srv/disks/repo01", "mounted": True, "canmount": "on"}
    return hook.Volume(**{**fields, **given})


def zvol(**given: Any) -> Any:
    return volume(type="volume", volsize=64 << 20, volblocksize=8192, refquota=None,
                  mountpoint=None, mounted=False, canmount=None, **given)


def test_create_argv_sets_every_property_in_one_command() -> None:
    assert hook.create_argv("/usr/sbin/zfs", "tank/repo01", "filesystem", 8 << 20, UUID,
                            "/srv/disks/repo01") == [
        "/usr/sbin/zfs", "create", "-p", "-o", f"provisiond:uuid={UUID}",
        "-o", "provisiond:type=filesystem", "-o", "refquota=8388608",
        "-o", "mountpoint=/srv/disks/repo01", "tank/repo01"]
    assert hook.create_argv("/z", "tank/lun1", "block", 16384, UUID, None, 16384) == [
        "/z", "create", "-p", "-o", f"provisiond:uuid={UUID}", "-o", "provisiond:type=block",
        "-o", "volblocksize=16384", "-V", "16384", "tank/lun1"]
    assert hook.create_argv("/z", "tank/lun1", "block", 8192, UUID)[-3:] == [
        "-V", "8192", "tank/lun1"]  # no volblocksize: the pool's default


def test_other_argv() -> None:
    assert hook.get_argv("/z", "t/a") == [
        "/z", "get", "-Hp", "-o", "property,value,source",
        "type,provisiond:uuid,volsize,volblocksize,refquota,referenced,mountpoint,mounted,"
        "canmount", "t/a"]
    assert hook.scan_argv("/z", "t") == [
        "/z", "get", "-Hp", "-r", "-d", "1", "-o", "name,property,value,source",
        "type,volsize,refquota,provisiond:uuid", "t"]
    assert hook.scan_argv("/z")[-1] == "type,volsize,refquota,provisiond:uuid"  # every pool
    assert hook.set_argv("/z", "t/a", "refquota", 5) == ["/z", "set", "refquota=5", "t/a"]
    assert hook.rename_argv("/z", "t/a", "t/b") == ["/z", "rename", "t/a", "t/b"]
    assert hook.destroy_argv("/z", "t/a") == ["/z", "destroy", "-r", "t/a"]
    assert hook.unmount_argv("/z", "t/a") == ["/z", "unmount", "t/a"]


def test_parse_volume_reads_zfs_fuse_output() -> None:
    text = ("type\tfilesystem\t-\nprovisiond:uuid\tabc-def-0123\tlocal\nvolsize\t-\t-\n"
            "volblocksize\t-\t-\nrefquota\t10485760\tlocal\nreferenced\t114688\t-\n"
            "mountpoint\t/m/a\tlocal\nmounted\tyes\t-\ncanmount\ton\tdefault\n")
    got = hook.parse_volume("p/a", text)
    assert (got.type, got.uuid, got.volsize, got.refquota, got.referenced, got.mountpoint,
            got.mounted, got.canmount) == ("filesystem", "abc-def-0123", None, 10485760,
                                           114688, "/m/a", True, "on")
    assert got.size == 10485760
    inherited = text.replace("abc-def-0123\tlocal", "abc-def-0123\tinherited from p")
    assert hook.parse_volume("p/a/b", inherited).uuid is None  # a child's is not its own
    assert hook.parse_volume("p/a", text.replace("10485760", "0")).size is None  # no quota


def test_parse_scan_keeps_own_uuids_only() -> None:
    text = "\n".join("\t".join(row) for row in [
        ("p", "type", "filesystem", "-"), ("p", "provisiond:uuid", "-", "-"),
        ("p/a", "type", "filesystem", "-"), ("p/a", "volsize", "-", "-"),
        ("p/a", "refquota", "8388608", "local"), ("p/a", "provisiond:uuid", UUID, "local"),
        ("p/a@s", "type", "snapshot", "-"), ("p/a@s", "provisiond:uuid", UUID, "inherited"),
        ("p/a/c", "type", "filesystem", "-"),
        ("p/a/c", "provisiond:uuid", UUID, "inherited from p/a"),
        ("p/v.deleted-20261204T200000Z", "type", "volume", "-"),
        ("p/v.deleted-20261204T200000Z", "volsize", "65536", "local"),
        ("p/v.deleted-20261204T200000Z", "provisiond:uuid", OTHER, "local"),
        ("p/x", "type", "filesystem", "-"), ("p/x", "provisiond:uuid", "-", "-")])
    found = hook.parse_scan(text)
    assert [v.line() for v in found] == [
        f"a 8388608 filesystem {UUID}", f"v.deleted-20261204T200000Z 65536 block {OTHER}"]
    assert [v.kept for v in found] == [False, True]
    assert hook.carrying(found, OTHER) == []  # kept ones are not the entry's live volume
    assert hook.children(text) == {"a", "a@s", "c", "v.deleted-20261204T200000Z",
                                   "x"}


def test_rounded_like_zfs_create() -> None:
    assert hook.rounded(10000, 8192) == 16384
    assert hook.rounded(16384, 8192) == 16384
    assert hook.rounded(10000, None) == 10000


@pytest.mark.parametrize(("given", "kind", "size", "why"), [
    ({}, "filesystem", 8 << 20, None),
    ({"uuid": None}, "filesystem", 8 << 20, "carries no provisiond:uuid"),
    ({"uuid": OTHER}, "filesystem", 8 << 20, "belongs to another entry"),
    ({}, "block", 8 << 20, "is a ZFS filesystem, the entry says block"),
    ({}, "filesystem", 9 << 20, "exists with 8388608 bytes, the entry says 9437184 bytes"),
    ({"refquota": 0}, "filesystem", 8 << 20, "exists with no quota"),
])
def test_adoption(given: dict[str, Any], kind: str, size: int, why: str | None) -> None:
    got = hook.adoption_problem(volume(**given), kind, UUID, size)
    assert (got is None) if why is None else (why in got), got


def test_adoption_of_a_zvol_compares_the_rounded_size() -> None:
    assert hook.adoption_problem(zvol(), "block", UUID, (64 << 20) - 100) is None
    assert "exists with 67108864 bytes" in hook.adoption_problem(zvol(), "block", UUID, 1 << 20)


def test_placement() -> None:
    found = [hook.Listed("tank/repo01", "filesystem", 8 << 20, UUID)]
    assert hook.placement_problem(found, "tank", "repo01", "filesystem") is None
    assert "pool cannot change" in hook.placement_problem(found, "other", "repo01", "filesystem")
    assert "name cannot change" in hook.placement_problem(found, "tank", "repo02", "filesystem")
    assert "type cannot change" in hook.placement_problem(found, "tank", "repo01", "block")
    assert "another backend" in hook.placement_problem([], "tank", "repo01", "filesystem")


def test_resize_grows_and_leaves_an_equal_size() -> None:
    assert hook.resize(volume(), "filesystem", 16 << 20, False) == ("refquota", 16 << 20)
    assert hook.resize(volume(), "filesystem", 8 << 20, False) is None
    assert hook.resize(zvol(), "block", 128 << 20, False) == ("volsize", 128 << 20)
    assert hook.resize(zvol(), "block", (128 << 20) - 1, False) == ("volsize", 128 << 20)


@pytest.mark.parametrize(("subject", "kind", "size", "allow", "why"), [
    ("fs", "filesystem", 4 << 20, False, "refused (allow_shrink is false)"),
    ("fs", "filesystem", 512 << 10, True, "the dataset holds 1048576 bytes"),
    ("zvol", "block", 32 << 20, False, "shrinking a ZFS volume"),
    ("zvol", "block", 32 << 20, True, "allow_shrink covers quotas only"),
    ("noquota", "filesystem", 4 << 20, False, "from no quota"),
])
def test_resize_refuses_shrinks(subject: str, kind: str, size: int, allow: bool,
                                why: str) -> None:
    given = {"fs": volume(), "zvol": zvol(), "noquota": volume(refquota=0)}[subject]
    with pytest.raises(hook.Failed) as refused:
        hook.resize(given, kind, size, allow)
    assert refused.value.code == hook.EXIT_REFUSED
    assert why in str(refused.value)


def test_shrink_allowed_above_usage() -> None:
    assert hook.resize(volume(), "filesystem", 2 << 20, True) == ("refquota", 2 << 20)


def test_kept_names() -> None:
    stamp = "20261204T201500Z"
    assert hook.kept_name("repo01", stamp, set()) == f"repo01.deleted-{stamp}"
    assert hook.kept_name("repo01", stamp, {f"repo01.deleted-{stamp}"}) == (
        f"repo01.deleted-{stamp}-2")
    assert hook.kept_mountpoint(volume(), f"repo01.deleted-{stamp}") == (
        f"/srv/disks/repo01.deleted-{stamp}")
    assert hook.kept_mountpoint(zvol(), "x") is None
    assert hook.utc_stamp(0) == "19700101T000000Z"


class Recorder:
    """A zfs runner that answers from a script of results, recording the argv."""

    def __init__(self, *results: tuple[int, str, str]) -> None:
        self.results = list(results)
        self.argvs: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        self.argvs.append(list(argv))
        code, out, err = self.results.pop(0)
        return subprocess.CompletedProcess(list(argv), code, out, err)


def test_busy_is_retried_then_tempfail() -> None:
    busy = (1, "", "cannot destroy 'p/a': dataset is busy\n")
    runner = Recorder(busy, busy, busy)
    zfs = hook.Zfs("/z", runner, sleep=lambda _s: None)
    with pytest.raises(hook.Failed) as failed:
        zfs.run(["/z", "destroy", "-r", "p/a"])
    assert failed.value.code == 75 and len(runner.argvs) == hook.BUSY_TRIES
    assert "dataset is busy (trying again later)" in str(failed.value)
    assert hook.Zfs("/z", Recorder(busy, (0, "", "")), sleep=lambda _s: None).run(["/z"]) == ""


def test_a_busy_unmount_says_why() -> None:
    """umount's "target is busy" comes before zfs's last line, which does not say busy."""
    busy = (1, "", "umount: /m/a: target is busy.\ncannot unmount '/m/a': umount failed: "
                   "umount child process failed\n")
    with pytest.raises(hook.Failed) as failed:
        hook.Zfs("/z", Recorder(busy, busy, busy), sleep=lambda _s: None).run(
            ["/z", "unmount", "p/a"])
    assert failed.value.code == 75
    assert str(failed.value).startswith("zfs unmount p/a: umount: /m/a: target is busy. cannot")


@pytest.mark.parametrize(("err", "code"), [
    ("cannot create 'nopool/a': no such pool 'nopool'", 69),
    ("connect: No such file or directory\nPlease make sure that the zfs-fuse daemon is "
     "running.\ninternal error: failed to initialize ZFS library", 69),
    ("cannot set property for 'p/a': size is less than current used or reserved space", 1),
])
def test_failures_keep_zfs_words(err: str, code: int) -> None:
    with pytest.raises(hook.Failed) as failed:
        hook.Zfs("/z", Recorder((1, "", err))).run(["/z", "set", "x=1", "p/a"])
    assert failed.value.code == code
    assert str(failed.value).endswith(err.splitlines()[-1])


def test_missing_is_none_when_allowed() -> None:
    missing = (1, "", "cannot open 'p/a': dataset does not exist\n")
    assert hook.Zfs("/z", Recorder(missing)).read("p/a") is None


def test_wait_for_device_is_bounded(tmp_path: Any) -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with pytest.raises(hook.Failed) as failed:
        hook.wait_for_device(str(tmp_path / "zvol" / "p" / "a"), 2, sleep, lambda: now[0])
    assert failed.value.code == 75 and 2.0 <= now[0] < 2.2
    (tmp_path / "node").touch()
    hook.wait_for_device(str(tmp_path / "node"), 2, sleep, lambda: now[0])


@pytest.mark.parametrize("argv", [
    [], ["bogus", "p"], ["create", "p", "a", "filesystem", "1"],
    ["create", "p", "Bad", "filesystem", "1048576", UUID, "--mount-root=/m"],
    ["create", "p", "a", "disk", "1048576", UUID], ["create", "p", "a", "block", "0", UUID],
    ["create", "p", "a", "block", "1M", UUID], ["grow", "p", "a", "block", "1", UUID, "yes"],
    ["delete", "p", "a", "block", UUID, "archive", "-"],
    ["delete", "p", "a", "block", UUID, "keep", "yesterday"],
    ["create", "p", "a", "block", "1048576", UUID, "--volblocksize=1000"],
    ["create", "p", "a", "block", "1048576", UUID, "--zfs=zfs"],
    ["create", "p", "a", "block", "1048576", UUID, "--color=yes"],
    ["create", "p", "a", "filesystem", "1048576", UUID],  # no --mount-root
])
def test_usage_errors_exit_64(argv: list[str], tmp_path: Any) -> None:
    # --zfs points at nothing: a usage error must stop it before any zfs runs
    done = run_hook(*argv, *([] if any(a.startswith("--zfs") for a in argv)
                             else [f"--zfs={tmp_path}/none"]))
    assert done.returncode == 64, done
    assert done.stderr.strip()
