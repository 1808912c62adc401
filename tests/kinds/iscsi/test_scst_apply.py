"""iscsi-scst-apply against the fake scstadmin (tests/kinds/iscsi/fake_scstadmin, written from
scstadmin's source: this machine has no SCST kernel modules). Each trap of `scstadmin -config`
is shown on the fake first, then that the hook gets past it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.kinds.iscsi.scst import (
    BSD01,
    BSD02,
    SCRIPTS,
    SECRET,
    FakeScst,
    disk,
    environment,
    load_script,
    lun,
    render,
    target,
    write_private,
)

APPLY = str(SCRIPTS / "iscsi-scst-apply")
IQN = "iqn.2026-12.org.example:backup01"
NEW_SECRET = "n3w.Secret-2026"


@pytest.fixture
def fake(tmp_path: Path) -> FakeScst:
    return FakeScst(tmp_path / "sbin")


def devices(tmp_path: Path, *names: str) -> dict[str, str]:
    """Backing stores that exist (vdisk refuses to open a missing one)."""
    paths = {}
    for name in names:
        path = tmp_path / f"{name}.img"
        path.write_bytes(b"")
        paths[name] = str(path)
    return paths


def conf(tmp_path: Path, text: str) -> Path:
    return write_private(tmp_path / "scst.conf", text)


def apply(fake: FakeScst, path: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([APPLY, str(fake.program), str(path)], capture_output=True, text=True,
                          env=environment(), check=False, timeout=60)
    assert SECRET not in done.stdout + done.stderr
    assert NEW_SECRET not in done.stdout + done.stderr
    return done


def scstadmin(fake: FakeScst, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(fake.program), *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, env=environment(), check=False, timeout=60)


def one_target(paths: dict[str, str], *, initiators: tuple[str, ...] = (BSD01, BSD02),
               secret: str = SECRET, luns: tuple[str, ...] = ("repo01", "repo02")) -> str:
    t = target("backup01", initiators=initiators, chap=("bsd01", secret))
    return render([t], [lun(t, n, disk(name, paths[name])) for n, name in enumerate(luns, 1)])


def test_a_first_apply_makes_the_targets_and_verifies_them(tmp_path: Path,
                                                           fake: FakeScst) -> None:
    paths = devices(tmp_path, "repo01", "repo02")
    done = apply(fake, conf(tmp_path, one_target(paths)))
    assert done.returncode == 0, done.stderr
    assert "1 targets (1 enabled), 2 LUNs, 2 devices" in done.stdout
    assert "live configuration verified" in done.stdout
    live = fake.targets()[IQN]
    assert live["enabled"] == 1
    assert live["attributes"]["IncomingUser"] == [f"bsd01 {SECRET}"]
    assert live["groups"]["provisiond"] == {"luns": {"1": "repo01", "2": "repo02"},
                                            "initiators": [BSD01, BSD02]}
    assert fake.calls() == [["-write_config", fake.calls()[0][1]],
                            ["-noprompt", "-force", "-config", str(tmp_path / "scst.conf")],
                            ["-write_config", fake.calls()[2][1]]]
    assert all(SECRET not in " ".join(call) for call in fake.calls())  # never on a command line
    again = apply(fake, conf(tmp_path, one_target(paths)))
    assert again.returncode == 0 and "0 change(s) by scstadmin" in again.stdout


def test_plain_config_only_adds_and_prints_the_secrets(tmp_path: Path, fake: FakeScst) -> None:
    """The traps the hook exists for, on the fake: without -force nothing is removed (exit 0),
    -force without -noprompt reads "no" from a closed stdin, and secrets are printed."""
    paths = devices(tmp_path, "repo01", "repo02")
    first = scstadmin(fake, "-noprompt", "-force", "-config",
                      str(conf(tmp_path, one_target(paths))))
    assert first.returncode == 0 and f"with value 'bsd01 {SECRET}'" in first.stdout
    smaller = conf(tmp_path, one_target(paths, initiators=(BSD01,), luns=("repo01",),
                                        secret=NEW_SECRET))
    plain = scstadmin(fake, "-config", str(smaller))
    assert plain.returncode == 0
    assert f"Initiator '{BSD02}' is not in configuration" in plain.stdout
    assert f"with value 'bsd01 {SECRET}' is not in configuration" in plain.stdout
    assert BSD02 in fake.targets()[IQN]["groups"]["provisiond"]["initiators"]  # still allowed
    prompted = scstadmin(fake, "-force", "-config", str(smaller))
    assert prompted.returncode == 0 and "Aborting action." in prompted.stdout
    assert BSD02 in fake.targets()[IQN]["groups"]["provisiond"]["initiators"]


def test_removed_initiators_luns_and_a_new_secret_take_effect(tmp_path: Path,
                                                              fake: FakeScst) -> None:
    paths = devices(tmp_path, "repo01", "repo02")
    assert apply(fake, conf(tmp_path, one_target(paths))).returncode == 0
    (tmp_path / "scst.conf.prev").write_text(one_target(paths))  # as the render step keeps it
    done = apply(fake, conf(tmp_path, one_target(paths, initiators=(BSD01,), luns=("repo01",),
                                                   secret=NEW_SECRET)))
    assert done.returncode == 0, done.stderr
    live = fake.targets()[IQN]
    assert live["groups"]["provisiond"] == {"luns": {"1": "repo01"}, "initiators": [BSD01]}
    assert live["attributes"]["IncomingUser"] == [f"bsd01 {NEW_SECRET}"]
    assert sorted(fake.state()["devices"]) == ["repo01"]


def test_a_target_that_left_the_file_is_removed(tmp_path: Path, fake: FakeScst) -> None:
    paths = devices(tmp_path, "repo01", "repo02")
    other = target("other", initiators=(BSD02,))
    assert apply(fake, conf(tmp_path, one_target(paths))).returncode == 0
    without = conf(tmp_path, render([other], [lun(other, 1, disk("repo02", paths["repo02"]))]))
    # scstadmin alone: the removal of the target's group aborts (it has initiators)
    trap = scstadmin(fake, "-noprompt", "-force", "-config", str(without))
    assert trap.returncode == 1
    assert "Group is still in use, aborting. Use -force to override." in trap.stdout
    done = apply(fake, without)
    assert done.returncode == 0, done.stderr
    assert sorted(fake.targets()) == ["iqn.2026-12.org.example:other"]
    assert ["-noprompt", "-rem_target", IQN, "-driver", "iscsi"] in fake.calls()


def test_the_last_target_leaving_is_removed_too(tmp_path: Path, fake: FakeScst) -> None:
    paths = devices(tmp_path, "repo01", "repo02")
    assert apply(fake, conf(tmp_path, one_target(paths, initiators=()))).returncode == 0
    empty = conf(tmp_path, render([], []))
    trap = scstadmin(fake, "-noprompt", "-force", "-config", str(empty))
    assert trap.returncode == 0 and IQN in fake.targets()  # no TARGET left: never removed
    done = apply(fake, empty)
    assert done.returncode == 0, done.stderr
    assert fake.targets() == {} and fake.state()["devices"] == {}


def test_a_failing_apply_shows_the_tail_without_secrets(tmp_path: Path, fake: FakeScst) -> None:
    paths = devices(tmp_path, "repo01")
    paths["repo02"] = str(tmp_path / "missing.img")
    done = apply(fake, conf(tmp_path, one_target(paths)))
    assert done.returncode == 1
    assert "Failed to open device" in done.stderr and "exited 1" in done.stderr


def test_a_missing_handler_is_caught_by_the_verification(tmp_path: Path,
                                                         fake: FakeScst) -> None:
    """vdisk_blockio not loaded: scstadmin warns, drops the LUNs and exits 0; the live
    configuration read back says what is missing."""
    state = fake.state()
    state["handlers"] = ["vdisk_fileio"]
    fake.set_state(state)
    paths = devices(tmp_path, "repo01", "repo02")
    done = apply(fake, conf(tmp_path, one_target(paths)))
    assert done.returncode == 1
    assert "live configuration differs" in done.stderr
    assert "HANDLER: missing" in done.stderr and "LUN: missing" in done.stderr


def test_scst_not_loaded_is_retried_later(tmp_path: Path) -> None:
    fake = FakeScst(tmp_path / "sbin", loaded=False)
    done = apply(fake, conf(tmp_path, one_target(devices(tmp_path, "repo01", "repo02"))))
    assert done.returncode == 75 and "SCST modules are not loaded" in done.stderr


def test_bad_input(tmp_path: Path, fake: FakeScst) -> None:
    path = conf(tmp_path, one_target(devices(tmp_path, "repo01", "repo02")))
    path.chmod(0o644)
    assert apply(fake, path).returncode == 65
    path.chmod(0o600)
    missing = subprocess.run([APPLY, str(tmp_path / "no-scstadmin"), str(path)],
                             capture_output=True, text=True, env=environment(), check=False)
    assert missing.returncode == 69
    assert subprocess.run([APPLY], capture_output=True, check=False).returncode == 64
    assert fake.calls() == []


def test_the_fake_refuses_what_it_does_not_emulate(fake: FakeScst) -> None:
    done = scstadmin(fake, "-list_sessions")
    assert done.returncode == 70 and "not emulated" in done.stderr
    assert scstadmin(fake, "-bogus").returncode == 1
    assert scstadmin(fake, "-config", "-write_config", "x").stdout.startswith("Please specify")


def test_scstadmin_output_loses_the_secrets(tmp_path: Path, fake: FakeScst) -> None:
    """What scstadmin prints when it adds a CHAP account and removes the old one holds both
    secrets; masked() leaves neither, even without knowing them."""
    paths = devices(tmp_path, "repo01", "repo02")
    first = scstadmin(fake, "-noprompt", "-force", "-config", str(conf(tmp_path, one_target(paths))))
    second = scstadmin(fake, "-noprompt", "-force", "-config",
                       str(conf(tmp_path, one_target(paths, secret=NEW_SECRET))))
    raw = first.stdout + second.stdout
    assert SECRET in raw and NEW_SECRET in raw
    shown = "\n".join(load_script("iscsi-scst-apply").masked(raw.splitlines(), []))
    assert SECRET not in shown and NEW_SECRET not in shown
    assert "Removing dynamic attribute 'IncomingUser' with value '***'" in shown


def test_a_run_cut_short_is_finished_by_the_next(tmp_path: Path, fake: FakeScst) -> None:
    """What a run killed half-way leaves (a device opened, the target made without its group,
    an old secret, a stale device): the next run converges, since it works from what SCST
    holds, not from what it did before."""
    paths = devices(tmp_path, "repo01", "repo02", "old")
    fake.set_state({"handlers": ["vdisk_blockio", "vdisk_fileio"],
                    "devices": {"repo01": {"handler": "vdisk_blockio",
                                           "filename": paths["repo01"]},
                                "old": {"handler": "vdisk_blockio", "filename": paths["old"]}},
                    "drivers": {"iscsi": {"enabled": 0, "targets": {IQN: {
                        "enabled": 0, "luns": {}, "groups": {},
                        "attributes": {"IncomingUser": ["bsd01 0ld.Secret-123"]}}}}}})
    done = apply(fake, conf(tmp_path, one_target(paths)))
    assert done.returncode == 0, done.stderr
    assert "0ld.Secret-123" not in done.stdout + done.stderr
    live = fake.targets()[IQN]
    assert live["attributes"]["IncomingUser"] == [f"bsd01 {SECRET}"] and live["enabled"] == 1
    assert sorted(fake.state()["devices"]) == ["repo01", "repo02"]
