"""`unique:` in the engine on a real slapd: an entry with a value another active entry has
fails alone (the value's code, a message naming the value and the other entry), and the file
of all entries keeps serving the others (the demo kind's index, `unique: [size]`)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import ldap3
import pytest

from provisiond.testing.slapd import Slapd
from tests.core import test_engine
from tests.support import (
    DEMO_BASE,
    add_item,
    connect,
    demo_service,
    mode_of,
    read,
    request,
    run_cli,
    running,
    wait_for,
    write_config,
)

root = test_engine.root  # the fixture


def unique_size(slapd: Slapd, tmp_path: Path, root: Path) -> tuple[ldap3.Connection, Path]:
    """A connection, and the config of the demo kind with `unique: [size]`."""
    return connect(slapd), write_config(tmp_path / "cfg", slapd,
                                        demo_service(root, unique=["size"]))


def index_lines(root: Path) -> list[str]:
    return [line.split("\t")[0] + "\t" + line.split("\t")[1]
            for line in (root / "index.conf").read_text().splitlines()[1:] if line.strip()]


def failed(conn: ldap3.Connection, dn: str) -> dict[str, str]:
    def done() -> dict[str, str] | None:
        entry = read(conn, dn)
        return entry if entry.get("provisiondReturnValue", "0") != "0" else None
    return wait_for(done, what=f"{dn} failed")


def test_the_second_entry_with_a_value_fails_alone_and_the_first_is_added(
        slapd: Slapd, tmp_path: Path, root: Path) -> None:
    conn, config = unique_size(slapd, tmp_path, root)
    with running(config):
        first = add_item(conn, "zulu", size="10M")
        wait_for(lambda: mode_of(conn, first) == "added", what="zulu added")
        other = add_item(conn, "other", size="20M")
        second = add_item(conn, "alpha", size="10M")  # sorts first, but zulu is provisioned
        entry = failed(conn, second)
        wait_for(lambda: mode_of(conn, other) == "added", what="other added")
        assert entry["provisiondReturnValue"] == "2"  # size has no code: invalid_code
        assert entry["provisiondMode"] == "adding"
        assert (f'value "size": 10485760 is already used by cn=zulu,{DEMO_BASE}, and it is '
                "provisioned with it") in entry["provisiondMessage"]
        assert index_lines(root) == ["other\t20971520", "zulu\t10485760"]
        assert not (root / "items" / "alpha.conf").exists()  # no step of it ran

        # a modify to another's value fails, and the index keeps its provisioned values
        request(conn, other, "modify", provisiondSize="10M")
        entry = failed(conn, other)
        assert entry["provisiondReturnValue"] == "2"
        assert f"already used by cn=zulu,{DEMO_BASE}" in entry["provisiondMessage"]
        add_item(conn, "later", size="30M")  # renders the index again
        wait_for(lambda: mode_of(conn, f"cn=later,{DEMO_BASE}") == "added", what="later added")
        assert index_lines(root) == ["later\t31457280", "other\t20971520", "zulu\t10485760"]


def test_two_new_entries_with_one_value_the_dn_sorting_first_keeps_it(
        slapd: Slapd, tmp_path: Path, root: Path) -> None:
    conn, config = unique_size(slapd, tmp_path, root)
    with running(config):
        later = add_item(conn, "bravo", size="10M")
        first = add_item(conn, "alpha", size="10M")  # written after, sorts first
        wait_for(lambda: mode_of(conn, first) == "added", what="alpha added")
        entry = failed(conn, later)
        # whichever is examined first, the other is in the directory already: new, requested
        assert entry["provisiondReturnValue"] == "2", entry
        assert f"already used by cn=alpha,{DEMO_BASE}" in entry["provisiondMessage"]
        assert index_lines(root) == ["alpha\t10485760"]


def test_render_shows_the_refusal(slapd: Slapd, tmp_path: Path, root: Path) -> None:
    conn, config = unique_size(slapd, tmp_path, root)
    with running(config):
        first = add_item(conn, "zulu", size="10M")
        wait_for(lambda: mode_of(conn, first) == "added", what="zulu added")
    second = add_item(conn, "alpha", size="10M")
    shown = run_cli("render", "--config", str(config), second)
    assert shown.returncode != 0 or "INVALID" in shown.stdout, shown
    assert (f'validate: value "size": 10485760 is already used by cn=zulu,{DEMO_BASE}'
            in shown.stdout), shown.stdout
    assert "(the daemon would report ReturnValue 2)" in shown.stdout
    assert "zulu" in run_cli("render", "--config", str(config), first).stdout
    assert "INVALID" not in run_cli("render", "--config", str(config), first).stdout


def test_an_entry_found_invalid_reads_as_failed_from_its_claim_on(
        slapd: Slapd, tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry that lost a value at its examination is claimed to report that. Between the
    claim and the report, another entry's examination must not take it for one being
    provisioned (then both would fail): it reads as failed, its ReturnValue and its message
    set, from the claim on; a reader that sees the code also sees why (not "in progress").
    Seen here as the directory holds it when the failure is about to be reported."""
    from provisiond.core.reporting import Reporter

    seen: dict[str, dict[str, str]] = {}
    report = Reporter.failure

    def failure(self: Reporter, rt: object, entry: object, *args: object, **kwargs: object):
        seen[entry.dn] = read(conn, entry.dn)  # type: ignore[attr-defined]
        return report(self, rt, entry, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Reporter, "failure", failure)
    conn, config = unique_size(slapd, tmp_path, root)
    with running(config):
        first = add_item(conn, "alpha", size="10M")
        wait_for(lambda: mode_of(conn, first) == "added", what="alpha added")
        second = add_item(conn, "bravo", size="10M")
        failed(conn, second)
    assert seen[second]["provisiondMode"] == "adding"
    assert seen[second].get("provisiondReturnValue") == "2", seen[second]
    assert seen[second].get("provisiondMessage", "").startswith("validate: "), seen[second]
    assert seen[second]["provisiondMessage"] == read(conn, second)["provisiondMessage"]


def test_a_new_entry_examined_while_another_is_being_claimed_waits_for_that_claim(
        slapd: Slapd, tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two new entries with one value, the second added while the first, examined and found
    first with it, is about to be claimed. The second's examination must see the first as
    claimed (then it fails alone), not as merely requested: a requested entry loses to a new
    one whose DN sorts first, and then both passed and both were reported added, though the
    file of all entries can serve only one of them. Seen here by holding the first one's
    claim back for a moment, with four workers."""
    from provisiond.core.claims import Claimer

    examined = threading.Event()
    claim = Claimer.claim

    def slow_claim(self: Claimer, rt: object, entry: object, *args: object, **kwargs: object):
        if entry.dn.startswith("cn=zulu"):  # type: ignore[attr-defined]
            examined.set()
            time.sleep(1.0)
        return claim(self, rt, entry, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Claimer, "claim", slow_claim)
    conn, config = unique_size(slapd, tmp_path, root)
    with running(config):
        later_in_order = add_item(conn, "zulu", size="10M")
        assert examined.wait(30), "zulu was never claimed"
        first_in_order = add_item(conn, "alpha", size="10M")
        wait_for(lambda: mode_of(conn, later_in_order) == "added", what="zulu added")
        entry = failed(conn, first_in_order)
    assert entry["provisiondMode"] == "adding", entry
    assert "cn=zulu" in entry["provisiondMessage"], entry
    assert "being provisioned" in entry["provisiondMessage"], entry
