"""The backup-account templates on their own: retain levels, TABs, the real configtest, and
the staggered schedule."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from provisiond import paths
from provisiond.aggregates.mirror import Member
from provisiond.config.load import kind_vars
from provisiond.host.jinja import make_environment

KIND_VARS = kind_vars("backup-account")  # typed, as a service of the kind gets them
ENV = make_environment(paths.templates_dirs())
LEVELS = ("hourly", "daily", "weekly", "monthly", "yearly")


def values(uid: str = "1234567", counts: tuple[int, ...] = (0, 7, 4, 6, 0),
           active: bool = True) -> dict[str, Any]:
    return {"uid": uid, "uid_number": int(uid), "gid_number": int(uid), "quota": 1 << 30,
            "active": active, **dict(zip(LEVELS, counts, strict=True))}


def render_config(tmp_path: Path, counts: tuple[int, ...]) -> str:
    vars_ = {**KIND_VARS, "backup_root": str(tmp_path / "backup"),
             "lock_dir": str(tmp_path)}
    context = {"service": "backup", "vars": vars_, "outputs": {},
               "entry": {"dn": "uid=1234567,ou=x", "uuid": "u-1", "mode": "add"},
               "values": values(counts=counts)}
    return ENV.get_template("backup-account/rsnapshot.conf.j2").render(context)


@pytest.mark.parametrize(("counts", "expected"), [
    ((0, 7, 4, 6, 0), [("daily", "7"), ("weekly", "4"), ("monthly", "6")]),
    ((24, 7, 4, 12, 3), [("hourly", "24"), ("daily", "7"), ("weekly", "4"),
                         ("monthly", "12"), ("yearly", "3")]),
    ((1, 0, 0, 0, 0), [("hourly", "1")]),  # a single level of 1 is fine
    ((0, 1, 1, 0, 1), [("daily", "2"), ("weekly", "1"), ("yearly", "1")]),
    ((0, 0, 0, 0, 99), [("yearly", "99")]),
])
def test_retain_levels_pass_the_real_configtest(
    tmp_path: Path, counts: tuple[int, ...], expected: list[tuple[str, str]]
) -> None:
    text = render_config(tmp_path, counts)
    assert [tuple(line.split("\t")[1:]) for line in text.splitlines()
            if line.startswith("retain")] == expected
    for line in text.splitlines():
        assert line == line.strip() and "  " not in line
        if line and not line.startswith("#"):
            assert " " not in line.split("\t")[0], line
    if not os.access("/usr/bin/rsnapshot", os.X_OK):
        pytest.skip("Debian's rsnapshot is not installed")
    chroot = tmp_path / "backup" / "7" / "567" / "234" / "1234567"
    (chroot / "home").mkdir(parents=True)
    (chroot / "snapshots").mkdir()
    config = tmp_path / "rsnapshot.conf"
    config.write_text(text)
    result = subprocess.run(["/usr/bin/rsnapshot", "-c", str(config), "configtest"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def schedule(entries: list[Member], **overrides: Any) -> list[list[str]]:
    vars_ = {**KIND_VARS, **overrides}
    text = ENV.get_template("backup-account/schedule.cron.j2").render(
        {"service": "backup", "vars": vars_, "entries": entries})
    assert text.endswith("\n")
    return [line.split() for line in text.splitlines()
            if line and not line.startswith("#") and "=" not in line]


def minute_of_day(fields: list[str]) -> int:
    return int(fields[1]) * 60 + int(fields[0])


def test_schedule_orders_levels_and_staggers_accounts() -> None:
    members = [Member(f"uid={uid}", f"u{uid}", values(uid, counts=(24, 7, 4, 12, 3)))
               for uid in ("1234567", "2345678")]
    members.append(Member("uid=3456789", "u3", values("3456789", active=False)))
    lines = schedule(members)
    assert not [f for f in lines if "rsnapshot.conf.3456789" in f[-2]]  # inactive: left out
    for uid in ("1234567", "2345678"):
        mine = [f for f in lines if f[-2].endswith(f"rsnapshot.conf.{uid}")]
        assert [f[-1] for f in mine] == ["yearly", "monthly", "weekly", "daily", "hourly"]
        assert [f[2:5] for f in mine[:4]] == [["1", "1", "*"], ["1", "*", "*"],
                                               ["*", "*", "0"], ["*", "*", "*"]]
        assert all(f[5] == "root" and f[6] == "/usr/bin/rsnapshot" for f in mine)
        hourly_minute = int(mine[4][0])
        assert mine[4][1] == "*"
        daily = minute_of_day(mine[3])
        # higher levels 10 minutes apart, before the daily run, never on the hourly minute
        assert [(daily - minute_of_day(f)) % 1440 for f in mine[:3]] == [30, 20, 10]
        assert all(int(f[0]) != hourly_minute for f in mine[:4])
        start = (daily + 10) % 1440  # the account's slot: hourly minute, daily 10 min before
        assert start % 60 == hourly_minute
        assert 20 * 60 <= start or start < 4 * 60  # inside the default window 20:00-04:00
    days = {minute_of_day(f) for f in lines if f[-1] == "daily"}
    assert len(days) == 2


def test_schedule_without_hourly_runs_the_lowest_level_in_the_slot() -> None:
    for uid in ("1234567", "2345678", "3456789", "4567890"):
        member = Member(f"uid={uid}", "u1", values(uid, counts=(0, 0, 4, 0, 2)))
        yearly, weekly = schedule([member], schedule_start_hour=2, schedule_window_hours=1,
                                  schedule_weekday=6)
        assert weekly[-1] == "weekly" and weekly[1] == "2" and weekly[4] == "6"
        assert yearly[-1] == "yearly"
        assert (minute_of_day(weekly) - minute_of_day(yearly)) % 1440 == 10


def test_empty_schedule_is_still_a_valid_cron_file() -> None:
    assert schedule([]) == []
