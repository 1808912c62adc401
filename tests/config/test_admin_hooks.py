"""Admin hook directories (issue 9 item 3): programs an admin drops into
`hooks.d/<service>/<mode>.pre.d/` and `.post.d/` run around the service's own steps, in
run-parts order, with the hook contract; unsafe files stop the daemon at start."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import psutil
import pytest

from provisiond.config import ConfigError, load_config, sample_config
from provisiond.core.engine import Engine
from provisiond.operate.check import run_checks
from provisiond.testing.slapd import Slapd
from tests.config.test_config import write
from tests.support import (
    REPO,
    add_item,
    connect,
    demo_service,
    mode_of,
    read,
    run_cli,
    runs,
    write_config,
)

LOGGER = "printf 'admin %s %s %s %s size=%s\\n' \"${0##*/}\" \"$1\" \"$2\" \"$3\" " \
         "\"$PROVISIOND_VALUE_SIZE\" >> \"$PROVISIOND_ADMIN_TEST_LOG\"\n"


def hook(directory: Path, name: str, body: str = "", mode: int = 0o755,
         log: Path | None = None) -> Path:
    """An admin hook script that appends `admin NAME ARGV... size=VALUE` to `log`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    lines = ["#!/bin/sh"]
    if log is not None:
        lines.append(LOGGER.replace("$PROVISIOND_ADMIN_TEST_LOG", str(log)).rstrip("\n"))
    lines.append(body)
    path.write_text("\n".join(lines) + "\n")
    path.chmod(mode)
    return path


def site(slapd: Slapd, tmp_path: Path, service: dict[str, Any] | None = None,
         **admin: Any) -> tuple[Path, Path, Path]:
    """(config, data root, hooks.d) for the demo service with an admin hook root."""
    root = tmp_path / "root"
    root.mkdir()
    hooks_d = tmp_path / "hooks.d"
    hooks_d.mkdir()
    config = write_config(tmp_path / "cfg", slapd, demo_service(root, **(service or {})),
                          admin_hooks={"dir": str(hooks_d), **admin})
    return config, root, hooks_d


def provision(slapd: Slapd, config: Path, status: int) -> tuple[str, dict[str, str]]:
    """Add an entry "alpha" (size 10M), run `once` (which must end with `status`), and
    return the entry's DN and attributes."""
    conn = connect(slapd)
    dn = add_item(conn, "alpha", size="10M")
    assert Engine(load_config(config)).once() == status
    return dn, read(conn, dn)


# -- running ----------------------------------------------------------------------------------

def test_admin_hooks_run_in_lexical_order_around_the_steps(slapd: Slapd, tmp_path: Path) -> None:
    config, root, hooks_d = site(slapd, tmp_path)
    log = root / "runs.log"  # the demo hook appends "UUID MODE NAME" to the same file
    pre, post = hooks_d / "demo" / "add.pre.d", hooks_d / "demo" / "add.post.d"
    hook(pre, "20-second", log=log)
    hook(pre, "10-first", log=log)
    hook(pre, "10-first~", "echo backup-ran >> " + str(log))  # editor backup: skipped
    hook(pre, "30-old.dpkg-old", "echo dpkg-ran >> " + str(log))  # skipped
    hook(pre, "40-script.sh", "echo dotted-ran >> " + str(log))  # a dot: skipped (run-parts)
    hook(post, "50-after", "test -f " + str(root / "index.conf") + " || exit 9", log=log)
    hook(hooks_d / "demo" / "delete.pre.d", "10-delete-only", log=log)
    dn, entry = provision(slapd, config, 0)

    assert entry["provisiondMode"] == "added", entry
    lines = runs(root)
    assert lines == [
        f"admin 10-first demo add {dn} size=10485760",
        f"admin 20-second demo add {dn} size=10485760",
        f"{entry['entryUUID']} add alpha",
        f"admin 50-after demo add {dn} size=10485760",
    ]


def test_a_failing_pre_hook_fails_the_entry_before_any_step(slapd: Slapd, tmp_path: Path) -> None:
    config, root, hooks_d = site(slapd, tmp_path, {"admin_hooks": {"pre_code": 42}})
    pre = hooks_d / "demo" / "add.pre.d"
    hook(pre, "10-quota-check", "echo 'tenant over its quota' >&2; exit 3")
    hook(pre, "20-never", "echo never-ran >> " + str(root / "runs.log"))
    hook(hooks_d / "demo" / "add.post.d", "50-never", "echo never-ran >> " + str(root / "runs.log"))
    dn, entry = provision(slapd, config, 1)

    assert entry["provisiondMode"] == "adding"
    assert entry["provisiondReturnValue"] == "42"
    assert "10-quota-check exited 3" in entry["provisiondMessage"]
    assert "tenant over its quota" in entry["provisiondMessage"]
    assert runs(root) == []  # neither the demo hook nor a later admin hook ran
    assert not (root / "items").exists()


def test_a_failing_post_hook_fails_the_entry_by_default(slapd: Slapd, tmp_path: Path) -> None:
    config, root, hooks_d = site(slapd, tmp_path, post_code=77)
    hook(hooks_d / "demo" / "add.post.d", "50-notify", "echo 'mail server down'; exit 1")
    dn, entry = provision(slapd, config, 1)

    assert entry["provisiondMode"] == "adding"
    assert entry["provisiondReturnValue"] == "77"
    assert "50-notify exited 1: mail server down" in entry["provisiondMessage"]
    assert (root / "items" / "alpha.conf").exists()  # the service's steps all ran


def test_a_failing_post_hook_is_only_logged_with_policy_log(
        slapd: Slapd, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config, root, hooks_d = site(slapd, tmp_path, {"admin_hooks": {"post_failure": "log"}})
    post = hooks_d / "demo" / "add.post.d"
    hook(post, "50-notify", "echo 'mail server down'; exit 1")
    hook(post, "60-after", log=root / "runs.log")  # later post hooks still run
    with caplog.at_level(logging.INFO, logger="provisiond"):
        dn, entry = provision(slapd, config, 0)

    assert entry["provisiondMode"] == "added"
    assert entry["provisiondReturnValue"] == "0"
    assert runs(root)[-1] == f"admin 60-after demo add {dn} size=10485760"
    failed = [r.getMessage() for r in caplog.records if "event=admin-hook-failed" in r.getMessage()]
    assert len(failed) == 1, caplog.text
    assert "policy=log" in failed[0] and "50-notify exited 1: mail server down" in failed[0]


@pytest.mark.slow
def test_an_admin_hook_gets_the_timeout_and_tree_kill(slapd: Slapd, tmp_path: Path) -> None:
    config, root, hooks_d = site(slapd, tmp_path, {"admin_hooks": {"pre_code": 43}})
    hook(hooks_d / "demo" / "add.pre.d", "10-hangs", "sleep 97.25 & sleep 97.25")
    text = config.read_text().replace("timeout: 20", "timeout: 1")
    config.write_text(text)
    dn, entry = provision(slapd, config, 1)

    assert entry["provisiondReturnValue"] == "43"
    assert "10-hangs timed out and was killed" in entry["provisiondMessage"]
    left = [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "97.25"]]
    assert left == []


def test_a_hook_that_became_unsafe_after_the_start_is_not_run(slapd: Slapd,
                                                              tmp_path: Path) -> None:
    config, root, hooks_d = site(slapd, tmp_path)
    script = hook(hooks_d / "demo" / "add.pre.d", "10-check", log=root / "runs.log")
    loaded = load_config(config)
    script.chmod(0o775)  # after the load: checked again before each run
    conn = connect(slapd)
    dn = add_item(conn, "alpha")

    assert Engine(loaded).once() == 1

    entry = read(conn, dn)
    assert entry["provisiondReturnValue"] == "90"  # the default pre_code
    assert "writable by group or others" in entry["provisiondMessage"]
    assert runs(root) == []


def test_a_pre_hook_may_ask_for_a_retry(slapd: Slapd, tmp_path: Path) -> None:
    config, root, hooks_d = site(slapd, tmp_path)
    marker = tmp_path / "asked"
    hook(hooks_d / "demo" / "add.pre.d", "10-busy",
         f"[ -e {marker} ] || {{ touch {marker}; echo busy; exit 75; }}", log=root / "runs.log")
    _, entry = provision(slapd, config, 0)

    assert entry["provisiondMode"] == "added"
    assert [line.split()[1] for line in runs(root)] == ["10-busy", "10-busy", "add"]


def test_the_shipped_example_runs(slapd: Slapd, tmp_path: Path) -> None:
    config, root, hooks_d = site(slapd, tmp_path, post_failure="log")
    shutil.rmtree(hooks_d)
    shutil.copytree(REPO / "etc" / "examples" / "hooks.d", hooks_d)
    conn = connect(slapd)
    reserved, alpha = add_item(conn, "backup"), add_item(conn, "alpha")

    assert Engine(load_config(config)).once() == 1

    entry = read(conn, reserved)
    assert entry["provisiondReturnValue"] == "90"
    assert "the name backup is reserved" in entry["provisiondMessage"]
    assert read(conn, alpha)["provisiondMode"] == "added"


# -- refused at load --------------------------------------------------------------------------

def admin_config(tmp_path: Path, **service: Any) -> tuple[Path, Path]:
    hooks_d = tmp_path / "hooks.d"
    hooks_d.mkdir(exist_ok=True)
    demo: dict[str, Any] = {"kind": "demo", "vars": {"root": str(tmp_path / "root")}, **service}
    return write(tmp_path, {"admin_hooks": {"dir": str(hooks_d)},
                            "services": {"demo": demo}}), hooks_d


def refusal(config: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    return caught.value


@pytest.mark.parametrize(("mode", "demo_mode", "refused", "reason"), [
    (0o775, 0o755, "10-check", "is writable by group or others (mode 0775); chmod go-w it"),
    (0o644, 0o755, "10-check", "is not executable (chmod +x it to run it"),
    (0o755, 0o757, "demo", "is writable by group or others (mode 0757)"),
], ids=["group-writable hook", "hook not executable", "other-writable directory"])
def test_unsafe_hooks_are_refused_at_start(tmp_path: Path, mode: int, demo_mode: int,
                                           refused: str, reason: str) -> None:
    config, hooks_d = admin_config(tmp_path)
    script = hook(hooks_d / "demo" / "add.pre.d", "10-check", mode=mode)
    (hooks_d / "demo").chmod(demo_mode)
    error = refusal(config)
    assert error.file == str(script if refused == "10-check" else hooks_d / "demo")
    assert error.reason.startswith(f"admin hook {reason}")
    result = run_cli("--config", str(config), "check")
    assert result.returncode == 78
    assert f"{error.file}: admin hook {reason}" in result.stderr


def test_a_hook_owned_by_someone_else_is_refused_at_start(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file away")
    config, hooks_d = admin_config(tmp_path)
    script = hook(hooks_d / "demo" / "add.pre.d", "10-check")
    os.chown(script, 4321, 4321)
    error = refusal(config)
    assert error.file == str(script)
    assert "owned by uid 4321" in error.reason


def test_something_that_is_not_a_file_is_refused_at_start(tmp_path: Path) -> None:
    config, hooks_d = admin_config(tmp_path)
    (hooks_d / "demo" / "add.pre.d" / "10-dir").mkdir(parents=True)
    error = refusal(config)
    assert error.file == str(hooks_d / "demo" / "add.pre.d" / "10-dir")
    assert "not a regular file" in error.reason


def test_a_symlink_counts_as_its_target(tmp_path: Path) -> None:
    config, hooks_d = admin_config(tmp_path)
    shared = tmp_path / "shared"
    target = hook(shared, "check")
    link = hooks_d / "demo" / "add.pre.d" / "10-check"
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    (step,) = load_config(config).services[0].admin_hooks.pre["add"]
    assert step.action.argv[0] == str(link)  # type: ignore[union-attr]
    shared.chmod(0o777)
    error = refusal(config)
    assert error.file == str(link)
    assert f"points into {shared}, which is writable by group or others" in error.reason


def test_typos_in_directory_names_are_refused_at_start(tmp_path: Path) -> None:
    config, hooks_d = admin_config(tmp_path)
    (hooks_d / "demo" / "adds.pre.d").mkdir(parents=True)
    error = refusal(config)
    assert error.file == str(hooks_d / "demo" / "adds.pre.d")
    assert "add.pre.d" in error.reason
    (hooks_d / "demo" / "adds.pre.d").rmdir()
    (hooks_d / "dmeo").mkdir()
    error = refusal(config)
    assert error.file == str(hooks_d / "dmeo") and "no service 'dmeo'" in error.reason


def test_the_service_options_are_checked(tmp_path: Path) -> None:
    config, _ = admin_config(tmp_path, admin_hooks={"post_failure": "ignore"})
    error = refusal(config)
    assert error.key == "services.demo.admin_hooks.post_failure"
    config, _ = admin_config(tmp_path, admin_hooks={"pre_cod": 3})
    assert refusal(config).key == "services.demo.admin_hooks.pre_cod"


def test_hooks_are_found_at_each_load_and_names_follow_run_parts(tmp_path: Path) -> None:
    config, hooks_d = admin_config(tmp_path)
    assert load_config(config).services[0].steps_for("add")[0].name == "write item file"
    pre = hooks_d / "demo" / "modify.pre.d"
    hook(pre, "10-Check_it-2")
    for skipped in ("10-check~", "10-check.dpkg-old", ".hidden", "README.txt", "#10-check#"):
        hook(pre, skipped, mode=0o644)  # not even checked: run-parts would skip them too
    spec = load_config(config).services[0]  # what a reload (SIGHUP) does
    plan = spec.steps_for("modify")
    assert plan[0].name == "modify.pre.d/10-Check_it-2"
    assert plan[0].action.argv[0] == str(pre / "10-Check_it-2")
    assert plan[1:] == spec.steps["modify"]
    assert sorted(spec.admin_hooks.skipped) == sorted(
        str(pre / name) for name in ("10-check~", "10-check.dpkg-old", ".hidden", "README.txt",
                                     "#10-check#"))


def test_no_hooks_directory_means_no_admin_hooks(tmp_path: Path) -> None:
    config = write(tmp_path, {"admin_hooks": {"dir": str(tmp_path / "absent")}})
    assert load_config(config).services[0].admin_hooks.pre == {}


def test_sample_config_documents_admin_hooks() -> None:
    text = sample_config()
    assert "admin_hooks:\n" in text
    for option in ("dir: /etc/provisiond/hooks.d", "pre_code: 90", "post_code: 91",
                   "post_failure: fail"):
        assert f"  # {option}\n" in text


# -- check and render -------------------------------------------------------------------------

def test_check_lists_admin_hooks_and_skipped_files(tmp_path: Path) -> None:
    config, hooks_d = admin_config(tmp_path, admin_hooks={"post_failure": "log"})
    first = hook(hooks_d / "demo" / "add.pre.d", "10-first")
    after = hook(hooks_d / "demo" / "add.post.d", "50-after")
    backup = hook(hooks_d / "demo" / "add.pre.d", "10-first~", mode=0o600)
    out = io.StringIO()
    run_checks(load_config(config), out)  # the bind fails (nothing listens): not looked at
    text = out.getvalue()
    assert f"ok    admin hook {first} (service demo, before add; fails the entry with 90)" in text
    assert f"ok    admin hook {after} (service demo, after add; a failure is only logged)" in text
    assert f"skip  {backup}: not a run-parts name ([A-Za-z0-9_-]+), not run" in text


def test_render_shows_admin_hooks(slapd: Slapd, tmp_path: Path) -> None:
    config, root, hooks_d = site(slapd, tmp_path, {"admin_hooks": {"post_failure": "log"}})
    first = hook(hooks_d / "demo" / "add.pre.d", "10-first", log=root / "runs.log")
    after = hook(hooks_d / "demo" / "add.post.d", "50-after", log=root / "runs.log")
    conn = connect(slapd)
    dn = add_item(conn, "alpha")

    result = run_cli("--config", str(config), "render", dn)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert 'step 1/5 "add.pre.d/10-first" (admin hook, code 90): would run' in text
    assert f"  argv: {first} demo add {dn}\n" in text
    assert 'step 5/5 "add.post.d/50-after" (admin hook, code 91): would run (timeout 20s; ' \
           'a failure is only logged)' in text
    preview = json.loads(run_cli("--config", str(config), "render", dn, "--json").stdout)
    assert preview["steps"][4]["argv"] == [str(after), "demo", "add", dn]
    assert preview["steps"][0]["environment"]["PROVISIOND_VALUE_SIZE"] == "10485760"
    assert runs(root) == []  # nothing ran
    assert mode_of(conn, dn) == "add"
