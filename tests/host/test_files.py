"""Crash-safe writes, confinement to roots, idempotent directories and removal (real files)."""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

import pytest

from provisiond.host import files
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


# --- the kernel resolver behind confine (issue 12): exactly os.path.realpath, fewer syscalls ---


def build_tree(base: Path) -> list[str]:
    """A tree of directories, a file and symlinks of every awkward kind; the names in it."""
    (base / "d" / "e" / "f").mkdir(parents=True)
    (base / "other").mkdir()
    (base / "d" / "file").write_text("x")
    links = {
        "abs": f"{base}/other", "rel": "e/f", "up": "e/../..", "chain": "chain2",
        "chain2": "rel", "dangling": "nowhere/deeper", "dangling-abs": f"{base}/missing/x",
        "to-dangling": "dangling", "loop": "loop2", "loop2": "loop", "self": "self",
        "to-file": "file", "via-file": "file/x", "dotdot-missing": "missing/../e",
        "dotdot-file": "file/../e", "slash": "/", "usr-bin": "/bin", "etc": "/etc",
        "proc-self": "/proc/self", "odd": f"//{base}/./d/../d/e/", "long0": "e",
    }
    for number in range(1, 46):  # more than the kernel's 40 links per lookup (ELOOP)
        links[f"long{number}"] = f"long{number - 1}"
    for name, target in links.items():
        (base / "d" / name).symlink_to(target)
    return ["d", "e", "f", "file", "other", "missing", "x", *links]


def generated_paths(base: Path, names: list[str], count: int) -> list[str]:
    """Lexically normalized absolute paths (as confine passes them) 1-5 names below `base`."""
    rng = random.Random(12)
    paths = [f"{base}/d/{name}" for name in names]
    paths += ["/", "/etc", "/usr/bin", "/bin", "/proc/self", "/nonexistent/x", "/etc/passwd/x"]
    for _ in range(count):
        chosen = rng.choices(names, k=rng.randint(1, 5))
        paths.append("/".join([str(base), "d", *chosen]))
    return paths


def mismatches(paths: list[str]) -> list[tuple[str, str, str]]:
    return [(p, files._realpath(p), os.path.realpath(p)) for p in paths
            if files._realpath(p) != os.path.realpath(p)]


def test_resolver_matches_realpath_on_a_generated_tree(tmp_path: Path) -> None:
    paths = generated_paths(tmp_path, build_tree(tmp_path), 3000)
    assert mismatches(paths) == []


@pytest.mark.parametrize("kernel_says", [
    "raise",  # /proc not mounted
    "(unreachable)/d",  # not an absolute path
    "{base}/d/e (deleted)",  # removed since it was opened
    "{base}/other",  # absolute, but not the directory opened (another mount namespace)
])
def test_resolver_falls_back_to_realpath_when_the_kernel_name_is_unusable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel_says: str
) -> None:
    names = build_tree(tmp_path)

    def kernel_name(fd: int) -> str:
        if kernel_says == "raise":
            raise FileNotFoundError("/proc/self/fd")
        return kernel_says.format(base=tmp_path)

    monkeypatch.setattr(files, "_kernel_name", kernel_name)
    assert mismatches(generated_paths(tmp_path, names, 300)) == []


def test_resolver_asks_the_kernel_not_each_component(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = tmp_path / "a" / "b" / "c" / "d" / "e"
    deep.mkdir(parents=True)
    (tmp_path / "alias").symlink_to("a/b")
    lstats: list[object] = []
    real_lstat = os.lstat
    monkeypatch.setattr(os, "lstat", lambda *a, **k: lstats.append(a) or real_lstat(*a, **k))
    assert files._realpath(f"{tmp_path}/alias/c/d/e") == str(deep)
    assert lstats == []
    assert files._realpath(f"{tmp_path}/alias/c/new/newer") == f"{deep.parent.parent}/new/newer"
    assert len(lstats) == 1  # only the first missing name: is it a symlink realpath follows?


def outcome(path: str, roots: list[Path]) -> str:
    try:
        return str(confine(path, roots))
    except PathNotAllowed as error:
        return f"PathNotAllowed: {error}"


def test_confine_decides_as_with_realpath(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = build_tree(tmp_path)
    paths = generated_paths(tmp_path, names, 400)
    d = tmp_path / "d"
    root_sets = [[d], [d / "e", tmp_path / "other"], [d / "rel"], [d / "abs", d / "e"],
                 [d / "chain"], [d / "up"], [d / "dangling"], [d / "loop"], [d / "via-file"],
                 [d / "e", d / "slash"], [d / "usr-bin"], [d / "etc"], [d / "long45"]]
    kernel = {(p, i): outcome(p, roots) for p in paths for i, roots in enumerate(root_sets)}
    monkeypatch.setattr(files, "_realpath", os.path.realpath)
    expected = {(p, i): outcome(p, roots) for p in paths for i, roots in enumerate(root_sets)}
    assert {k: v for k, v in kernel.items() if v != expected[k]} == {}
    assert sum(not v.startswith("PathNotAllowed") for v in kernel.values()) > 300


def test_confine_follows_a_dangling_symlink_in_a_missing_parent(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "away").symlink_to(tmp_path / "outside" / "missing")
    with pytest.raises(PathNotAllowed, match="symlink"):
        confine(f"{root}/away/new/file", [root])
    (root / "file").write_text("x")
    assert confine(f"{root}/file/new/x", [root]) == root / "file" / "new" / "x"


def test_confine_refuses_roots_that_resolve_to_the_system_through_chains(tmp_path: Path) -> None:
    (tmp_path / "to-root").symlink_to("../" * len(tmp_path.parts))
    (tmp_path / "hop").symlink_to("to-root")
    with pytest.raises(PathNotAllowed, match="resolves to /"):
        confine(f"{tmp_path}/hop/etc/passwd", [tmp_path / "hop"])
    (tmp_path / "bin").symlink_to("hop/usr/bin")
    with pytest.raises(PathNotAllowed, match="system directory /usr/bin"):
        confine(f"{tmp_path}/bin/sh", [tmp_path / "elsewhere", tmp_path / "bin"])
