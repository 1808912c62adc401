"""Crash-safe writes, confinement to roots, idempotent directories and removal (real files)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from provisiond.host.files import (
    PathNotAllowed,
    atomic_write,
    confine,
    install_temp,
    make_directory,
    remove_path,
    write_temp_beside,
)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_creates_with_mode(tmp_path: Path) -> None:
    target = tmp_path / "exports"
    old_umask = os.umask(0o077)
    try:
        assert atomic_write(target, b"hello\n", mode=0o644) is True
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"hello\n"
    assert mode_of(target) == 0o644
    assert leftovers(tmp_path) == []


def test_unchanged_file_is_not_rewritten(tmp_path: Path) -> None:
    target = tmp_path / "conf"
    atomic_write(target, b"same", mode=0o640)
    os.utime(target, ns=(1_000_000_000, 1_000_000_000))
    before = os.stat(target)
    assert atomic_write(target, b"same", mode=0o640) is False
    after = os.stat(target)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_changed_mode_or_content_rewrites(tmp_path: Path) -> None:
    target = tmp_path / "conf"
    atomic_write(target, b"same", mode=0o640)
    assert atomic_write(target, b"same", mode=0o600) is True
    assert mode_of(target) == 0o600
    inode = os.stat(target).st_ino
    assert atomic_write(target, b"other", mode=0o600) is True
    assert target.read_bytes() == b"other"
    assert os.stat(target).st_ino != inode  # replaced by rename, never rewritten in place


def test_symlink_at_target_is_replaced_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious")
    link = tmp_path / "link"
    link.symlink_to(outside)
    assert atomic_write(link, b"precious", mode=mode_of(outside)) is True
    assert not link.is_symlink() and link.read_bytes() == b"precious"
    assert outside.read_bytes() == b"precious"


def test_temp_file_is_cleaned_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "is-a-directory"
    (target / "inside").mkdir(parents=True)
    with pytest.raises(OSError):
        atomic_write(target, b"data")  # rename(file, non-empty directory) fails
    assert leftovers(tmp_path) == []
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "missing-dir" / "file", b"data")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_atomic_write_owner(tmp_path: Path) -> None:
    target = tmp_path / "owned"
    assert atomic_write(target, b"x", mode=0o2640, owner=(1234, 5678)) is True
    info = os.stat(target)
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (1234, 5678, 0o2640)
    assert atomic_write(target, b"x", mode=0o2640, owner=(1234, 5678)) is False
    assert atomic_write(target, b"x", mode=0o2640, owner=(1234, 1234)) is True


def test_write_temp_beside_then_install_or_discard(tmp_path: Path) -> None:
    target = tmp_path / "sshd_config"
    target.write_bytes(b"old")
    temp = write_temp_beside(target, b"new")
    assert temp.parent == tmp_path and temp.name.startswith(".sshd_config.")
    assert temp.read_bytes() == b"new" and mode_of(temp) == 0o600
    assert target.read_bytes() == b"old"
    install_temp(temp, target)
    assert target.read_bytes() == b"new" and not temp.exists()

    discarded = write_temp_beside(target, b"rejected", mode=0o644)
    assert mode_of(discarded) == 0o644
    discarded.unlink()
    assert leftovers(tmp_path) == []

    other = tmp_path / "sub"
    other.mkdir()
    with pytest.raises(ValueError, match="not beside"):
        install_temp(write_temp_beside(target, b"x"), other / "sshd_config")


@pytest.fixture
def roots(tmp_path: Path) -> list[Path]:
    (tmp_path / "srv" / "backup").mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    return [tmp_path / "srv" / "backup"]


def test_confine_accepts_paths_below_roots(tmp_path: Path, roots: list[Path]) -> None:
    root = roots[0]
    assert confine(f"{root}/alice/data", roots) == root / "alice" / "data"
    assert confine(f"{root}//alice/./x/../data/", roots) == root / "alice" / "data"
    assert confine(root / "a", [Path(str(root) + "/")]) == root / "a"


@pytest.mark.parametrize(
    "suffix, reason",
    [
        ("/../../etc/passwd", "outside"),
        ("/../backup2/x", "outside"),  # a sibling sharing the prefix is not below
        ("", "root itself"),
        ("/.", "root itself"),
        ("/alice/..", "root itself"),
    ],
)
def test_confine_rejects_escapes(roots: list[Path], suffix: str, reason: str) -> None:
    with pytest.raises(PathNotAllowed, match=reason):
        confine(f"{roots[0]}{suffix}", roots)


def test_confine_rejects_relative_and_unrooted(roots: list[Path]) -> None:
    with pytest.raises(PathNotAllowed, match="not an absolute path"):
        confine("alice/data", roots)
    with pytest.raises(PathNotAllowed, match="outside"):
        confine("/etc/passwd", roots)
    with pytest.raises(PathNotAllowed, match="NUL"):
        confine(f"{roots[0]}/a\0b", roots)
    with pytest.raises(PathNotAllowed):
        confine(f"{roots[0]}/a", [])


def test_confine_rejects_symlink_escape(tmp_path: Path, roots: list[Path]) -> None:
    root = roots[0]
    (root / "evil").symlink_to(tmp_path / "etc")
    (root / "up").symlink_to("..")
    with pytest.raises(PathNotAllowed, match="symlink"):
        confine(f"{root}/evil/passwd", roots)
    with pytest.raises(PathNotAllowed, match="symlink"):
        confine(f"{root}/evil/new-dir/file", roots)  # missing parts after the link too
    with pytest.raises(PathNotAllowed, match="symlink"):
        confine(f"{root}/up/x", roots)


def test_confine_resolves_links_inside_roots(tmp_path: Path, roots: list[Path]) -> None:
    root = roots[0]
    (root / "real").mkdir()
    (root / "alias").symlink_to("real")
    assert confine(f"{root}/alias/file", roots) == root / "real" / "file"
    # The last component is not followed: the link itself is what gets replaced or removed.
    (root / "link-out").symlink_to(tmp_path / "etc")
    assert confine(f"{root}/link-out", roots) == root / "link-out"
    # A root that is itself a symlink works through either spelling.
    (tmp_path / "data").symlink_to(root)
    assert confine(tmp_path / "data" / "x", [tmp_path / "data"]) == root / "x"
    assert confine(root / "x", [tmp_path / "data"]) == root / "x"


@pytest.mark.parametrize("root", ["/", "//", "/.", "/tmp/..", "/etc/../", "///"])
def test_confine_refuses_a_root_that_means_the_filesystem_root(root: str) -> None:
    # issue 8 item 5: these roots made confine allow any path
    with pytest.raises(PathNotAllowed, match="is /"):
        confine("/etc/passwd", [Path("/srv/ok"), Path(root)])


@pytest.mark.parametrize("root", ["/etc", "/usr/", "/usr/lib/../bin", "/var", "//boot"])
def test_confine_refuses_a_system_directory_as_root(root: str) -> None:
    with pytest.raises(PathNotAllowed, match="system directory"):
        confine("/etc/passwd", [Path(root)])


def test_confine_refuses_a_root_that_is_a_symlink_to_the_filesystem_root(tmp_path: Path) -> None:
    (tmp_path / "up").symlink_to("/")
    with pytest.raises(PathNotAllowed, match="resolves to /"):
        confine("/etc/passwd", [tmp_path / "up"])
    (tmp_path / "conf").symlink_to("/etc")
    with pytest.raises(PathNotAllowed, match="system directory"):
        confine(f"{tmp_path}/conf/passwd", [tmp_path / "conf"])


def test_check_root_normalises_and_keeps_ordinary_roots(tmp_path: Path) -> None:
    from provisiond.host.files import check_root

    assert check_root("//srv//backup/./x/..") == Path("/srv/backup")
    assert check_root("/etc/rsnapshot") == Path("/etc/rsnapshot")  # below /etc is fine
    with pytest.raises(PathNotAllowed, match="absolute"):
        check_root("srv/backup")
    with pytest.raises(PathNotAllowed, match="absolute"):
        check_root("")


def test_make_directory_is_idempotent(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c"
    old_umask = os.umask(0o077)
    try:
        assert make_directory(target, mode=0o2750, owner=None) is True
    finally:
        os.umask(old_umask)
    assert mode_of(target) == 0o2750
    assert mode_of(tmp_path / "a") == 0o755 and mode_of(tmp_path / "a" / "b") == 0o755
    assert make_directory(target, mode=0o2750, owner=None) is False
    assert make_directory(target, mode=0o700, owner=None) is True
    assert mode_of(target) == 0o700


def test_make_directory_refuses_non_directories(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to("real")
    for name in ("file", "link"):
        with pytest.raises(FileExistsError, match="not a directory"):
            make_directory(tmp_path / name, mode=0o755, owner=None)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_make_directory_owner(tmp_path: Path) -> None:
    target = tmp_path / "parent" / "home"
    assert make_directory(target, mode=0o700, owner=(1234, 5678)) is True
    info = os.stat(target)
    assert (info.st_uid, info.st_gid) == (1234, 5678)
    assert os.stat(target.parent).st_uid == 0
    assert make_directory(target, mode=0o700, owner=(1234, 5678)) is False
    assert make_directory(target, mode=0o700, owner=(4321, 5678)) is True
    assert os.stat(target).st_uid == 4321


def test_remove_path_is_idempotent(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    tree = tmp_path / "tree"
    (tree / "deep" / "er").mkdir(parents=True)
    (tree / "deep" / "f").write_text("x")
    (tree / "deep" / "er").chmod(0o500)
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "precious").write_text("x")
    link = tmp_path / "link"
    link.symlink_to(keep)
    (tree / "link-in-tree").symlink_to(keep)

    for path in (file, tree, link):
        assert remove_path(path) is True
        assert not os.path.lexists(path)
        assert remove_path(path) is False
    assert (keep / "precious").exists()  # links are removed, never followed
    assert remove_path(tmp_path / "never-existed") is False
