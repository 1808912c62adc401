"""scripts/iscsi-tgt-apply against a REAL tgtd, checked with a REAL initiator (libiscsi): the
ACL admits only the listed initiators, CHAP takes a new secret, LUNs come and go, a missing
backing store fails the apply, and a run killed at any point is finished by the next one."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.kinds.iscsi.support import (
    ALLOWED,
    CHECK_DEVICE,
    HOOK,
    IQN,
    OTHER,
    apply,
    backing,
    target_block,
)
from tests.kinds.iscsi.tgt import TGTADM, Tgtd

SECRET = "s3cret-Secret1"  # 14 characters
NEW_SECRET = "n3w.Secret-777"


def test_an_allowed_initiator_sees_the_target_and_its_lun_size(tgtd: Tgtd,
                                                               tmp_path: Path) -> None:
    disk = backing(tmp_path, "repo01", 24 << 20)
    result = apply(tgtd, tmp_path / "targets.conf", target_block("backup01", luns={1: disk}))
    assert result.returncode == 0, result.stderr
    assert "applied and verified 1 targets, 1 LUNs" in result.stdout
    seen = tgtd.discover(ALLOWED)
    assert f"Target:{IQN}:backup01" in seen
    assert "Lun:1" in seen
    assert tgtd.size(ALLOWED, f"{IQN}:backup01", 1) == 24 << 20


def test_an_initiator_not_listed_is_refused(tgtd: Tgtd, tmp_path: Path) -> None:
    disk = backing(tmp_path, "repo01")
    result = apply(tgtd, tmp_path / "targets.conf", target_block("backup01", luns={1: disk}))
    assert result.returncode == 0, result.stderr
    assert "Target:" not in tgtd.discover(OTHER)
    refused = tgtd.login(OTHER, f"{IQN}:backup01", 1)
    assert refused.returncode == 10
    assert "Target not found(515)" in refused.stderr
    assert tgtd.size(OTHER, f"{IQN}:backup01", 1) is None
    # tgtd has name rules only: no address rule (tgt-admin's ALL) that would let OTHER in.
    assert "ALL" not in tgtd.show()
    assert tgtd.login(ALLOWED, f"{IQN}:backup01", 1).returncode == 0


def test_a_target_without_initiators_lets_nobody_in(tgtd: Tgtd, tmp_path: Path) -> None:
    disk = backing(tmp_path, "repo01")
    result = apply(tgtd, tmp_path / "targets.conf",
                   target_block("backup01", initiators=(), luns={1: disk}))
    assert result.returncode == 0, result.stderr
    assert tgtd.login(ALLOWED, f"{IQN}:backup01", 1).returncode == 10


def test_chap_wrong_secret_refused_right_admitted_and_a_new_secret_replaces_the_old(
    tgtd: Tgtd, tmp_path: Path
) -> None:
    disk = backing(tmp_path, "repo01")
    config = tmp_path / "targets.conf"
    result = apply(tgtd, config, target_block("backup01", chap=("bsd01", SECRET),
                                              luns={1: disk}))
    assert result.returncode == 0, result.stderr
    iqn = f"{IQN}:backup01"
    assert tgtd.login(ALLOWED, iqn, 1).returncode == 10  # no CHAP at all
    wrong = tgtd.login(ALLOWED, iqn, 1, chap=("bsd01", "wrong-secret-1"))
    assert wrong.returncode == 10, wrong.stdout
    assert "Authentication failure" in wrong.stderr
    assert tgtd.login(ALLOWED, iqn, 1, chap=("bsd01", SECRET)).returncode == 0

    result = apply(tgtd, config, target_block("backup01", chap=("bsd01", NEW_SECRET),
                                              luns={1: disk}))
    assert result.returncode == 0, result.stderr
    assert tgtd.login(ALLOWED, iqn, 1, chap=("bsd01", SECRET)).returncode == 10
    assert tgtd.login(ALLOWED, iqn, 1, chap=("bsd01", NEW_SECRET)).returncode == 0
    # The secret is in no output, and the state file keeps only a salted hash of it.
    state = Path(f"{config}.state")
    for text in (result.stdout, result.stderr, state.read_text()):
        assert SECRET not in text and NEW_SECRET not in text
    assert state.stat().st_mode & 0o077 == 0

    result = apply(tgtd, config, target_block("backup01", luns={1: disk}))  # CHAP dropped
    assert result.returncode == 0, result.stderr
    assert tgtd.login(ALLOWED, iqn, 1).returncode == 0
    assert "bsd01" not in tgtd.tgtadm("--mode", "account", "--op", "show").stdout


def test_a_deleted_lun_is_gone_and_a_deleted_target_too(tgtd: Tgtd, tmp_path: Path) -> None:
    one, two = backing(tmp_path, "repo01"), backing(tmp_path, "repo02", 16 << 20)
    config = tmp_path / "targets.conf"
    assert apply(tgtd, config, target_block("backup01", luns={1: one, 2: two}),
                 target_block("backup02", luns={1: two})).returncode == 0
    assert "Lun:2" in tgtd.discover(ALLOWED)
    result = apply(tgtd, config, target_block("backup01", luns={1: one}))
    assert result.returncode == 0, result.stderr
    seen = tgtd.discover(ALLOWED)
    assert "Lun:1" in seen and "Lun:2" not in seen
    assert f"{IQN}:backup02" not in seen and f"{IQN}:backup02" not in tgtd.show()
    assert tgtd.size(ALLOWED, f"{IQN}:backup01", 2) is None


def test_a_missing_backing_store_fails_the_apply_and_names_it(tgtd: Tgtd,
                                                              tmp_path: Path) -> None:
    one = backing(tmp_path, "repo01")
    missing = tmp_path / "gone.img"
    result = apply(tgtd, tmp_path / "targets.conf",
                   target_block("backup01", luns={1: one, 2: missing}))
    assert result.returncode == 1
    assert f"LUN 2: backing store missing, expected {missing}" in result.stderr
    assert "NOT as the file says" in result.stderr.splitlines()[-1]
    # The rest was applied: LUN 1 is served.
    assert tgtd.size(ALLOWED, f"{IQN}:backup01", 1) == 8 << 20


def test_a_target_of_someone_else_is_left_alone(tgtd: Tgtd, tmp_path: Path) -> None:
    tgtd.tgtadm("--mode", "target", "--op", "new", "--tid", "1", "--targetname",
                f"{IQN}:manual")
    result = apply(tgtd, tmp_path / "targets.conf", target_block("backup01"))
    assert result.returncode == 0, result.stderr
    result = apply(tgtd, tmp_path / "targets.conf")  # ours deleted, the manual one stays
    assert result.returncode == 0, result.stderr
    assert f"{IQN}:manual" in tgtd.show() and f"{IQN}:backup01" not in tgtd.show()


def test_a_second_run_changes_nothing(tgtd: Tgtd, tmp_path: Path) -> None:
    disk = backing(tmp_path, "repo01")
    config = tmp_path / "targets.conf"
    block = target_block("backup01", chap=("bsd01", SECRET), luns={1: disk})
    assert apply(tgtd, config, block).returncode == 0
    before = tgtd.show()
    again = apply(tgtd, config, block)
    assert again.returncode == 0, again.stderr
    # Reads only: show, portals, accounts, then show and portals to verify; no change.
    assert "5 tgtadm calls" in again.stdout
    assert tgtd.show() == before


# Stands in for tgtadm: runs the real one, then, at the call numbered in `kill_at`, kills its
# whole process group (the hook and itself) with SIGKILL, as a power cut would.
KILLING_TGTADM = """#!/bin/sh
calls=$(( $(cat "{work}/calls") + 1 ))
echo "$calls" > "{work}/calls"
{tgtadm} "$@"
status=$?
[ "$calls" -eq "$(cat "{work}/kill_at")" ] && kill -KILL 0
exit $status
"""


@pytest.mark.slow
def test_a_run_killed_at_any_point_is_finished_by_the_next(tgtd: Tgtd, tmp_path: Path) -> None:
    """Killed right after each of its tgtadm calls in turn (not at guessed moments: a run's
    changes take a few milliseconds at the end of its start-up), the next run finishes it,
    and removes what the killed run made for a target the file no longer has."""
    disks = {i: backing(tmp_path, f"repo{i}") for i in range(1, 4)}
    config = tmp_path / "targets.conf"
    blocks = [target_block(f"t{i}", chap=(f"user{i}", SECRET), luns={1: disks[i]})
              for i in range(1, 4)]
    killing = tmp_path / "tgtadm"
    killing.write_text(KILLING_TGTADM.format(work=tmp_path, tgtadm=TGTADM))
    killing.chmod(0o755)
    cut_short = 0
    for kill_at in range(1, 200):
        tgtd.clear()
        Path(f"{config}.state").unlink(missing_ok=True)
        config.write_text("".join(blocks))
        (tmp_path / "calls").write_text("0\n")
        (tmp_path / "kill_at").write_text(f"{kill_at}\n")
        run = subprocess.run([str(HOOK), "apply", str(config), str(killing), tgtd.socket],
                             capture_output=True, text=True, timeout=60, check=False,
                             start_new_session=True)
        if run.returncode != -signal.SIGKILL:  # it made fewer calls: it ended on its own
            assert run.returncode == 0, run.stderr
            break
        cut_short += bool(tgtd.tids())  # killed with part of the work done
        # The next run's file drops t3: whatever the killed run made of it must go too.
        result = apply(tgtd, config, *blocks[:2])
        assert result.returncode == 0, (kill_at, result.stderr)
        for i in range(1, 3):
            assert tgtd.login(ALLOWED, f"{IQN}:t{i}", 1, chap=(f"user{i}", SECRET)).returncode == 0
        assert len(tgtd.tids()) == 2, (kill_at, tgtd.show())
    else:
        raise AssertionError("every run was killed: the counting tgtadm never stopped it")
    assert cut_short >= 10  # a run of three targets makes dozens of calls


@pytest.mark.parametrize("text, reason", [
    ("target iqn.2026-12.org.example:a\nlun 1 /tmp/x;reboot\nend\n", "not a normalized"),
    ("target iqn.2026-12.org.example:a\ninitiator ALL\nend\n", "not an iSCSI name"),
    ("target iqn.2026-12.org.example:a\nlun 0 /tmp/x\nend\n", "LUN must be 1-255"),
    ("target iqn.2026-12.org.example:a\nlun 256 /tmp/x\nend\n", "LUN must be 1-255"),
    ("target iqn.2026-12.org.example:a\nlun 1 /tmp/x\nlun 1 /tmp/y\nend\n", "LUN 1 twice"),
    ("target IQN.2026-12.org.example:a\nend\n", "not an iSCSI name"),
    ("target iqn.2026-12.org.example:a\nend\ntarget iqn.2026-12.org.example:a\nend\n",
     "listed twice"),
    ("target iqn.2026-12.org.example:a\nchap u short\nend\n", "not 12-16 characters"),
    ("target iqn.2026-12.org.example:a\nchap u has space 123456\nend\n", "unexpected 'chap'"),
    ("target iqn.2026-12.org.example:a\nchap u aaaaaaaaaaaa\nend\n"
     "target iqn.2026-12.org.example:b\nchap u bbbbbbbbbbbb\nend\n", "different secrets"),
    ("target iqn.2026-12.org.example:a\nportal 999.1.1.1\nend\n", "not an IP address"),
    ("target iqn.2026-12.org.example:a\nportal [::1\nend\n", "not a portal"),
    ("target iqn.2026-12.org.example:a\nportal ::1\nend\n", "not a portal"),
    ("target iqn.2026-12.org.example:a\ninitiator  iqn.2026-12.org.example:b\nend\n",
     "single spaces"),
    ("target iqn.2026-12.org.example:a\tx\nend\n", "single spaces"),
    ("lun 1 /tmp/x\n", "outside a target"),
    ("target iqn.2026-12.org.example:a\n", "no 'end' line"),
    ("target iqn.2026-12.org.example:" + "q" * 220 + "\nend\n", "at most 223 bytes"),
])
def test_a_hostile_file_is_refused_whole_and_changes_nothing(tgtd: Tgtd, tmp_path: Path,
                                                             text: str, reason: str) -> None:
    config = tmp_path / "targets.conf"
    config.write_text(text)
    result = subprocess.run([str(HOOK), "apply", str(config), TGTADM, tgtd.socket],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 65, result
    assert reason in result.stderr
    for secret in ("aaaaaaaaaaaa", "bbbbbbbbbbbb"):
        assert secret not in result.stderr
    assert tgtd.tids() == []


def test_tgtd_not_running_asks_for_a_retry(tmp_path: Path) -> None:
    config = tmp_path / "targets.conf"
    config.write_text(target_block("backup01"))
    result = subprocess.run([str(HOOK), "apply", str(config), TGTADM,
                             str(tmp_path / "no-such.sock")],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 75, result
    assert "tgtd is not reachable" in result.stderr


def test_sessions_lists_who_is_logged_in(tgtd: Tgtd, tmp_path: Path) -> None:
    disk = backing(tmp_path, "repo01")
    assert apply(tgtd, tmp_path / "targets.conf",
                 target_block("backup01", luns={1: disk})).returncode == 0
    perf = tgtd.open_session(ALLOWED, f"{IQN}:backup01")
    try:
        listed = subprocess.run([str(HOOK), "sessions", "tgt", TGTADM, tgtd.socket],
                                capture_output=True, text=True, check=True).stdout
        assert f"{IQN}:backup01: session from {ALLOWED} at 127.0.0.1" in listed
    finally:
        perf.kill()
        perf.wait()


@pytest.mark.parametrize("change", ["initiator removed", "secret changed"])
def test_a_session_the_new_acl_or_secret_would_refuse_is_closed(tgtd: Tgtd, tmp_path: Path,
                                                                 change: str) -> None:
    disk = backing(tmp_path, "repo01")
    config = tmp_path / "targets.conf"
    iqn = f"{IQN}:backup01"
    assert apply(tgtd, config, target_block("backup01", chap=("bsd01", SECRET),
                                            luns={1: disk})).returncode == 0
    perf = tgtd.open_session(ALLOWED, iqn, chap=("bsd01", SECRET))
    try:
        if change == "initiator removed":
            block = target_block("backup01", initiators=(OTHER,), chap=("bsd01", SECRET),
                                 luns={1: disk})
        else:
            block = target_block("backup01", chap=("bsd01", NEW_SECRET), luns={1: disk})
        result = apply(tgtd, config, block)
        assert result.returncode == 0, result.stderr
        time.sleep(1)  # iscsi-perf tries to log in again: refused now
        assert f"Initiator: {ALLOWED}" not in tgtd.show()
    finally:
        perf.kill()
        perf.wait()


@pytest.mark.parametrize("device, message", [
    ("", "has no device (provisiondDevicePath unset"),
    ("relative.img", "is not an absolute path"),
    ("/nonexistent/repo.img", "does not exist"),
    ("/tmp", "is neither a block device nor a file"),
])
def test_check_device_refuses_what_tgt_could_not_serve(device: str, message: str) -> None:
    result = subprocess.run([str(CHECK_DEVICE), device, "cn=repo01,ou=disks"],
                            capture_output=True, text=True, check=False, env={"PATH": "/bin"})
    assert result.returncode == 65
    assert message in result.stderr and "cn=repo01,ou=disks" in result.stderr


def test_check_device_accepts_a_file_or_a_block_device(tmp_path: Path) -> None:
    for device in (backing(tmp_path, "repo01"), Path("/dev/loop0")):
        if device.exists():
            result = subprocess.run([str(CHECK_DEVICE), str(device), "cn=repo01"],
                                    capture_output=True, text=True, check=False)
            assert result.returncode == 0, result.stderr
