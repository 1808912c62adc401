"""`provisiond check` checks every program a step may run: hooks and render `validate`
commands alike, including names that come from `vars` (issue 8 item 8)."""

from __future__ import annotations

import io
from pathlib import Path

from provisiond.config import load_config
from provisiond.operate.check import run_checks
from tests.config.test_config import write


def checked(tmp_path: Path, steps: list[dict[str, object]], **vars_: str) -> str:
    path = write(tmp_path, {"services": {"x": {
        "base": "dc=example,dc=org", "roots": ["/srv/provisiond-test"], "vars": vars_,
        "steps": {"add": steps}}}})
    out = io.StringIO()
    run_checks(load_config(path), out)  # the bind fails (nothing listens): not looked at
    return out.getvalue()


def render(validate: list[str]) -> dict[str, object]:
    return {"name": "r", "code": 1, "render": {"template": "demo/item.conf.j2",
                                               "path": "/srv/provisiond-test/a",
                                               "validate": validate}}


def test_validate_programs_are_checked_like_hooks(tmp_path: Path) -> None:
    out = checked(tmp_path, [render(["/nonexistent/checker", "{{ file }}"]),
                             render(["no-such-checker", "{{ file }}"])])
    assert "FAIL  validate program /nonexistent/checker is executable: hook program " \
           "/nonexistent/checker: No such file or directory" in out
    assert "FAIL  validate program no-such-checker is executable" in out


def test_programs_named_by_vars_are_checked(tmp_path: Path) -> None:
    out = checked(tmp_path, [{"name": "h", "code": 1, "hook": ["{{ vars.hook }}"]},
                             render(["{{ vars.checker }}", "{{ file }}"])],
                  hook="demo-hook", checker="/nonexistent/rsnapshot")
    assert "ok    hook demo-hook is executable" in out
    assert "FAIL  validate program /nonexistent/rsnapshot is executable" in out


def test_a_status_program_is_checked_like_a_hook(tmp_path: Path) -> None:
    """A service's `status:` command (operate/live.py): argv[0] named from vars at load and
    looked up in the hook directories by `check`, so a typo is found before `status` runs."""
    path = write(tmp_path, {"services": {
        name: {"base": "dc=example,dc=org", "roots": ["/srv/provisiond-test"],
               "vars": {"lister": lister}, "status": ["{{ vars.lister }}", "{{ service }}"],
               "steps": {"add": [{"name": "h", "code": 1, "hook": ["demo-hook"]}]}}
        for name, lister in (("x", "no-such-status-program"), ("y", "demo-hook"))}})
    out = io.StringIO()
    run_checks(load_config(path), out)
    assert "FAIL  status program no-such-status-program is executable: hook program " \
           "'no-such-status-program' not found in " in out.getvalue()
    assert "ok    status program demo-hook is executable" in out.getvalue()
