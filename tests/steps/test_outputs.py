"""Hook outputs (issue 11.5): `multi: true` collects every `provisiond-set NAME=VALUE` line
into a multi-valued attribute replaced as a whole; `on_failure: true` outputs are written with
a failure report too; every value is checked with its declared type, and an undeclared,
malformed, hostile or (single-valued) conflicting line fails the step naming the output.
On a real slapd with a small hook written by the test, and HookOutput's bookkeeping directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ldap3
import pytest

from provisiond.config import ConfigError, load_config
from provisiond.core.engine import Engine
from provisiond.host.hook_output import HookOutput
from provisiond.testing.slapd import Slapd
from tests.support import DEMO_BASE, add_item, connect, read, request, write_config

# Step N of the test service runs `emit ROOT N OUTPUTS`: it logs its argv, prints what
# ROOT/out.N holds and exits with what ROOT/exit.N holds (0 when there is none).
EMIT = """#!/bin/sh
root=$1 n=$2
printf '%s\\n' "$*" >> "$root/args.$n"
[ -f "$root/out.$n" ] && cat "$root/out.$n"
exit "$(cat "$root/exit.$n" 2>/dev/null || echo 0)"
"""
ITEM = f"cn=item,{DEMO_BASE}"  # the entry add_item(conn, "item") adds
OUTPUTS: dict[str, Any] = {
    "slots": {"attribute": "description", "type": "integer", "multi": True, "on_failure": True},
    "path": {"attribute": "provisiondPath", "type": "path"},
    "owner": {"attribute": "provisiondOwner", "type": "posix_name", "on_failure": True},
}


class Outputs:
    """A service of `steps` hook steps (codes 41, 42, ...) whose hooks the test steers."""

    def __init__(self, slapd: Slapd, tmp_path: Path, steps: int = 1,
                 outputs: dict[str, Any] | None = None, **service: Any) -> None:
        self.root = tmp_path / "root"
        self.root.mkdir()
        hooks = tmp_path / "hooks"
        hooks.mkdir()
        (hooks / "emit").write_text(EMIT)
        (hooks / "emit").chmod(0o755)
        definition = {
            "base": DEMO_BASE, "filter": "(objectClass=provisiondDemoItem)",
            "attributes": {"mode": "provisiondMode", "state": "provisiondState",
                           "execution_date": "provisiondExecutionDate",
                           "return_value": "provisiondReturnValue",
                           "message": "provisiondMessage"},
            "values": {"name": {"attribute": "cn", "type": "posix_name"}},
            "outputs": OUTPUTS if outputs is None else outputs,
            "steps": {"add": [
                {"name": f"step {n}", "code": 40 + n,
                 "hook": ["emit", str(self.root), str(n), "{{ outputs.slots | default([]) | join('+') }}"]}
                for n in range(1, steps + 1)], "modify": "add"},
            **service,
        }
        self.path = write_config(tmp_path / "cfg", slapd, {"custom": definition},
                                 hooks={"path": [str(hooks)]})
        self.conn = connect(slapd)

    def say(self, step: int, *lines: str, exit: int = 0) -> None:
        text = "".join(f"{line}\n" for line in lines)  # latin-1: "\xff" stays one byte
        (self.root / f"out.{step}").write_bytes(text.encode("latin-1"))
        (self.root / f"exit.{step}").write_text(f"{exit}\n")

    def args(self, step: int) -> list[str]:
        return (self.root / f"args.{step}").read_text().splitlines()

    def once(self) -> int:
        return Engine(load_config(self.path)).once()

    def values(self, dn: str, attribute: str) -> list[str]:
        self.conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE,
                         attributes=[attribute])
        raw = self.conn.response[0]["raw_attributes"].get(attribute, [])
        return [value.decode() for value in raw]


def test_a_multi_output_collects_every_line_and_a_later_run_replaces_them(
        slapd: Slapd, tmp_path: Path) -> None:
    unit = Outputs(slapd, tmp_path, steps=2)
    unit.say(1, "provisiond-set slots=3", "provisiond-set slots=1", "provisiond-set slots=2",
             "provisiond-set slots=1", "provisiond-set path=/srv/a")  # a duplicate is dropped
    dn = add_item(unit.conn, "item")
    assert unit.once() == 0
    entry = read(unit.conn, dn)
    assert entry["provisiondMode"] == "added" and entry["provisiondPath"] == "/srv/a"
    assert unit.values(dn, "description") == ["3", "1", "2"]  # in the order printed
    assert unit.args(2)[-1].endswith(" 2 3+1+2")  # later steps see the list

    unit.say(1, "provisiond-set slots=5", "provisiond-set slots=4")
    request(unit.conn, dn, "modify")
    assert unit.once() == 0
    assert unit.values(dn, "description") == ["5", "4"]  # replaced as a whole
    assert read(unit.conn, dn)["provisiondPath"] == "/srv/a"


def test_a_multi_output_no_line_leaves_it_and_an_empty_value_clears_it(
        slapd: Slapd, tmp_path: Path) -> None:
    unit = Outputs(slapd, tmp_path)
    unit.say(1, "provisiond-set slots=7", "provisiond-set slots=8")
    dn = add_item(unit.conn, "item")
    assert unit.once() == 0 and unit.values(dn, "description") == ["7", "8"]
    unit.say(1, "nothing to report")
    request(unit.conn, dn, "modify")
    assert unit.once() == 0
    assert unit.values(dn, "description") == ["7", "8"]  # not printed: untouched
    unit.say(1, "provisiond-set slots=")
    request(unit.conn, dn, "modify")
    assert unit.once() == 0
    entry = read(unit.conn, dn)
    assert entry["provisiondMode"] == "modified" and "description" not in entry  # cleared


def failed_with(unit: Outputs, *lines: str, exit: int = 0, step: int = 1) -> dict[str, str]:
    """The entry `item` after step `step` printed `lines` and exited `exit`, failing it."""
    unit.say(step, *lines, exit=exit)
    add_item(unit.conn, "item")
    assert unit.once() == 1
    entry = read(unit.conn, ITEM)
    assert entry["provisiondMode"] == "adding", entry
    assert entry["provisiondReturnValue"] == str(40 + step), entry
    return entry


def test_on_failure_outputs_are_written_with_the_failure_report_and_the_others_not(
        slapd: Slapd, tmp_path: Path) -> None:
    unit = Outputs(slapd, tmp_path, steps=2)
    unit.say(1, "provisiond-set owner=tape", "provisiond-set path=/srv/done")  # succeeds
    entry = failed_with(unit, "provisiond-set slots=4", "provisiond-set slots=2",
                        "provisiond-set path=/srv/half", "the changer says no", exit=3, step=2)
    assert "emit exited 3" in entry["provisiondMessage"]
    assert "the changer says no" in entry["provisiondMessage"]
    assert unit.values(ITEM, "description") == ["4", "2"]  # the failed step's inventory
    assert entry["provisiondOwner"] == "tape"  # an earlier step's on_failure output
    assert "provisiondPath" not in entry  # not on_failure: neither step 1's nor step 2's


def test_a_failure_report_the_directory_refuses_for_its_outputs_is_written_without_them(
        slapd: Slapd, tmp_path: Path) -> None:
    # provisiondQuota is not allowed on a demo item: the report with it is refused
    unit = Outputs(slapd, tmp_path, outputs={
        "quota": {"attribute": "provisiondQuota", "type": "bytes", "on_failure": True}})
    entry = failed_with(unit, "provisiond-set quota=1G", exit=3)
    assert "emit exited 3" in entry["provisiondMessage"]
    assert "outputs quota not written" in entry["provisiondMessage"]
    assert "provisiondQuota" not in entry


def test_an_undeclared_output_fails_the_step_naming_it(slapd: Slapd, tmp_path: Path) -> None:
    entry = failed_with(Outputs(slapd, tmp_path), "provisiond-set path=/srv/a",
                        "provisiond-set secret=x")
    assert "undeclared output 'secret'" in entry["provisiondMessage"]
    assert "provisiondPath" not in entry  # a hook's outputs are taken all or none


@pytest.mark.parametrize(("line", "name", "reason"), [
    ("provisiond-set owner=a\tb", "owner", "control character"),
    ("provisiond-set owner=o'neil", "owner", "not a POSIX name"),
    ('provisiond-set path=/srv/"x"', "path", "bad component"),
    ("provisiond-set path=/srv/a ", "path", "whitespace"),
    ("provisiond-set owner=\xff", "owner", "control character"),  # a byte that is not UTF-8
    ("provisiond-set slots=1\nprovisiond-set slots=two", "slots", "not an integer"),
    ("provisiond-set path=", "path", "empty value"),
])
def test_a_hostile_or_invalid_value_fails_the_step_naming_the_output(
        slapd: Slapd, tmp_path: Path, line: str, name: str, reason: str) -> None:
    entry = failed_with(Outputs(slapd, tmp_path), line)
    assert f"output {name}: " in entry["provisiondMessage"], entry["provisiondMessage"]
    assert reason in entry["provisiondMessage"], entry["provisiondMessage"]
    assert "description" not in entry  # nothing of this hook's is written


def test_a_failing_hook_with_an_invalid_output_says_both(slapd: Slapd, tmp_path: Path) -> None:
    entry = failed_with(Outputs(slapd, tmp_path), "provisiond-set slots=4",
                        "provisiond-set owner=Bad Name", exit=3)
    assert "emit exited 3" in entry["provisiondMessage"]
    assert "output owner: " in entry["provisiondMessage"]
    assert "description" not in entry  # its on_failure outputs are not taken either


def test_a_single_valued_output_set_to_different_values_fails_the_step(
        slapd: Slapd, tmp_path: Path) -> None:
    entry = failed_with(Outputs(slapd, tmp_path), "provisiond-set path=/srv/a",
                        "provisiond-set path=/srv/b")
    assert "output path: " in entry["provisiondMessage"]
    assert "2 different values" in entry["provisiondMessage"]
    assert "provisiondPath" not in entry


def test_a_single_valued_output_set_twice_to_the_same_value_is_fine(
        slapd: Slapd, tmp_path: Path) -> None:
    unit = Outputs(slapd, tmp_path)
    unit.say(1, "provisiond-set path=/srv/a", "provisiond-set path=/srv/a")
    dn = add_item(unit.conn, "item")
    assert unit.once() == 0
    assert read(unit.conn, dn)["provisiondPath"] == "/srv/a"


def test_a_setting_line_that_is_not_name_equals_value_fails_the_step(
        slapd: Slapd, tmp_path: Path) -> None:
    entry = failed_with(Outputs(slapd, tmp_path), "provisiond-set Path=/srv/a")
    assert "not NAME=VALUE" in entry["provisiondMessage"], entry["provisiondMessage"]
    assert "'Path=/srv/a'" in entry["provisiondMessage"]


# -- configuration -------------------------------------------------------------------------------


def refused(slapd: Slapd, tmp_path: Path, **service: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        Outputs(slapd, tmp_path, **service).once()
    return str(caught.value)


def test_on_failure_is_an_output_key(slapd: Slapd, tmp_path: Path) -> None:
    text = refused(slapd, tmp_path, values={"name": {
        "attribute": "cn", "type": "posix_name", "on_failure": True}})
    assert "services.custom.values.name.on_failure: only outputs" in text, text
    assert "services.custom.outputs" not in text, text  # where it belongs, it loads


def test_on_failure_is_true_or_false(slapd: Slapd, tmp_path: Path) -> None:
    text = refused(slapd, tmp_path, outputs={"path": {
        "attribute": "provisiondPath", "type": "path", "on_failure": "yes"}})
    assert "services.custom.outputs.path.on_failure: must be true or false" in text, text


# -- HookOutput: every value kept, in order, bounded ---------------------------------------------


def fed(*chunks: bytes, limit: int = 1 << 20) -> HookOutput:
    output = HookOutput(limit)
    for chunk in chunks:
        output.feed(chunk, from_stdout=True)
    return output


def test_hook_output_keeps_every_value_of_a_name_in_order_without_duplicates() -> None:
    output = fed(b"provisiond-set slots=3\nprovisiond-set name=a\nprovisiond-set slots=1\n"
                 b"provisiond-set slots=3\nprovisiond-set slots=\nprovisiond-set slots=2")
    tail, settings = output.finish()
    assert dict(settings) == {"slots": ("3", "1", "", "2"), "name": ("a",)}
    assert output.lost() == ""


def test_hook_output_bounds_the_values_together_and_a_duplicate_costs_nothing() -> None:
    # each distinct value costs its name and value: 1 + 10 bytes, so 3 fit in 40
    lines = b"".join(b"provisiond-set v=%d123456789\n" % i for i in range(5))
    output = fed(lines + b"provisiond-set v=0123456789\n", limit=40)
    _, settings = output.finish()
    assert settings["v"] == ("0123456789", "1123456789", "2123456789")
    assert output.lost() == ("2 provisiond-set lines not taken (2 past 40 bytes of settings): "
                             "outputs may be lost")


def test_hook_output_counts_a_line_that_is_not_name_equals_value() -> None:
    output = fed(b"provisiond-set Bad=1\nprovisiond-set noequals\nprovisiond-set ok=1\n")
    _, settings = output.finish()
    assert dict(settings) == {"ok": ("1",)}
    assert output.lost() == ("2 provisiond-set lines not taken (2 not NAME=VALUE, the first "
                             "'Bad=1'): outputs may be lost")


def test_hook_output_keeps_bytes_that_are_not_utf8_recognisable() -> None:
    # decoded with surrogateescape: every value type rejects the surrogate as a control
    # character, where U+FFFD would pass a printable string
    _, settings = fed(b"provisiond-set v=a\xffb\n").finish()
    assert settings["v"] == ("a\udcffb",)
