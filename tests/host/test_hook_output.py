"""Hook output is inspected line by line however much of it there is; a `provisiond-set` line
that cannot be taken (too long, or past the settings limit) fails the step, never silently.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from provisiond.config import load_config
from provisiond.core.engine import Engine
from provisiond.host.hook_output import MAX_SETTING_LINE
from provisiond.host.hooks import run_hook
from provisiond.testing.slapd import Slapd
from tests.core.test_engine import _hook, hook_service
from tests.host.test_hooks import ENV, sh
from tests.support import add_item, connect, read, write_config

BIG_LINE = "head -c 10000000 /dev/zero | tr '\\0' x; echo\n"  # one 10 MB line


def test_setting_after_a_huge_line_is_taken(tmp_path: Path) -> None:
    hook = sh(tmp_path, "echo 'provisiond-set early=1'\n" + BIG_LINE
              + "yes | head -c 10000000\n"  # and 5 million short lines
              + "printf 'provisiond-set late=2\\nprovisiond-set last=3'\n")
    result = run_hook([hook], env=ENV, timeout=120, settings_limit=1 << 20)
    assert result.returncode == 0
    assert dict(result.settings) == {"early": ("1",), "late": ("2",), "last": ("3",)}
    assert result.settings_lost == ""


def test_prefix_split_across_reads_is_found(tmp_path: Path) -> None:
    # a 64 KiB pipe read ends in the middle of "provisiond-set": the line still counts
    hook = sh(tmp_path, "head -c 65535 /dev/zero | tr '\\0' x; echo\n"
              "printf 'provisio'; sleep 0.3; printf 'nd-set split=yes\\n'\n"
              "printf 'x\\nprovisiond-'; sleep 0.3; printf 'set again=yes\\n'\n")
    result = run_hook([hook], env=ENV, timeout=20)
    assert dict(result.settings) == {"split": ("yes",), "again": ("yes",)}


def test_overlong_setting_line_is_reported(tmp_path: Path) -> None:
    hook = sh(tmp_path, "printf 'provisiond-set big='\n"
              f"head -c {MAX_SETTING_LINE + 10} /dev/zero | tr '\\0' x; echo\n"
              "echo 'provisiond-set small=1'\n")
    result = run_hook([hook], env=ENV, timeout=20)
    assert dict(result.settings) == {"small": ("1",)}
    assert "1 provisiond-set line" in result.settings_lost
    assert "longer than 64 KiB" in result.settings_lost


def test_settings_past_the_limit_are_reported(tmp_path: Path) -> None:
    hook = sh(tmp_path, "for i in 1 2 3 4 5 6; do echo \"provisiond-set v$i=0123456789\"; done\n"
              "echo 'provisiond-set v1=0123456789'\n")  # a value kept already costs nothing
    result = run_hook([hook], env=ENV, timeout=20, settings_limit=40)
    assert dict(result.settings) == {"v1": ("0123456789",), "v2": ("0123456789",),
                                     "v3": ("0123456789",)}
    assert "3 provisiond-set lines" in result.settings_lost
    assert "40 bytes" in result.settings_lost


def test_ordinary_flood_is_fine(tmp_path: Path) -> None:
    hook = sh(tmp_path, BIG_LINE + "yes | head -c 10000000\n")
    result = run_hook([hook], env=ENV, timeout=120)
    assert result.returncode == 0 and result.settings_lost == "" and not result.settings


def add_with_hook(slapd: Slapd, tmp_path: Path, body: str) -> tuple[Path, int, dict[str, str]]:
    """One entry added and processed by a service whose only step runs a hook printing its
    `path` output: the root, how many entries failed, and the entry."""
    root, hooks = tmp_path / "root", tmp_path / "hooks"
    root.mkdir()
    _hook(hooks, "out", body)
    services = hook_service(root, "out")
    services["custom"]["outputs"] = {"path": {"attribute": "provisiondPath", "type": "path"}}
    config = write_config(tmp_path / "cfg", slapd, services, hooks={"path": [str(hooks)]})
    conn = connect(slapd)
    dn = add_item(conn, "item")
    failed = Engine(load_config(config)).once()
    return root, failed, read(conn, dn)


def test_engine_takes_output_after_a_flood(slapd: Slapd, tmp_path: Path) -> None:
    root, failed, entry = add_with_hook(slapd, tmp_path,
                                        BIG_LINE + 'echo "provisiond-set path=$2/data/$1"\n')
    assert failed == 0 and entry["provisiondMode"] == "added"
    assert entry["provisiondPath"] == f"{root}/data/item"


def test_engine_fails_the_step_when_a_setting_is_lost(slapd: Slapd, tmp_path: Path) -> None:
    _root, failed, entry = add_with_hook(
        slapd, tmp_path,
        f'printf "provisiond-set path=$2/"\nhead -c {MAX_SETTING_LINE} /dev/zero | tr "\\0" x\n')
    assert failed == 1
    assert entry["provisiondMode"] == "adding" and entry["provisiondReturnValue"] == "5"
    assert "1 provisiond-set line not taken (1 longer than 64 KiB)" in entry["provisiondMessage"]
    assert "outputs may be lost" in entry["provisiondMessage"]
    assert "provisiondPath" not in entry


MEASURE = """
import resource, sys
from provisiond.host.hooks import run_hook
run_hook(["/bin/true"], env={}, timeout=5)  # imports and first use done
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = run_hook([sys.argv[1]], env={"PATH": "/usr/bin:/bin"}, timeout=600)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert result.returncode == 0, result
print(after - before, dict(result.settings), repr(result.settings_lost))
"""


@pytest.mark.slow
def test_memory_stays_bounded_for_gigabytes_of_output(tmp_path: Path) -> None:
    # 1 GiB: half one endless line, half short lines, a setting at the very end
    hook = sh(tmp_path, "head -c 536870912 /dev/zero | tr '\\0' x; echo\n"
              "yes | head -c 536870912\necho 'provisiond-set end=1'\n")
    done = subprocess.run([sys.executable, "-c", MEASURE, hook], capture_output=True,
                          text=True, timeout=900, check=True)
    grown_kib, taken = done.stdout.split(" ", 1)
    assert int(grown_kib) < 4096, done.stdout  # peak RSS added by the run, in KiB
    assert taken.strip() == "{'end': ('1',)} ''"
