"""The in-flight journal (core/journal.py), without slapd: records made durable before a claim
is sent, confirmations appended after, what survives a torn write, and the ownership rules a
resume follows."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from provisiond.core.journal import CONFIRMED, Claim, Journal, Ownership, new_token, ownership
from provisiond.host.recordlog import forget_shared
from provisiond.model.lifecycle import claim_message

UUID_A = "0b6f2c1e-8d3a-4f5b-9c7d-1a2b3c4d5e6f"
UUID_B = "7e9a1c3d-2b4f-4a6c-8d0e-f1a2b3c4d5e6"
DN = "cn=a,ou=demo,dc=example,dc=org"
ME = "cn=provisiond,dc=example,dc=org"


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "state", "demo")


def restarted(tmp_path: Path) -> Journal:
    """The journal as the next start of the daemon reads it: from the file."""
    forget_shared()
    return Journal(tmp_path / "state", "demo")


def claim(uuid: str = UUID_A, **fields: object) -> Claim:
    return Claim(**{"uuid": uuid, "dn": DN, "request": "add", "token": new_token(),
                    **fields})  # type: ignore[arg-type]


# -- records -----------------------------------------------------------------------------------


def test_a_record_reads_back_as_the_claim_and_is_private(journal: Journal) -> None:
    made = claim()
    journal.record(made)
    assert journal.holds(UUID_A)
    assert journal.get(UUID_A) == made
    assert journal.claims() == [made]
    path = journal.directory / "claims.log"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert journal.directory == journal.directory.parent / "demo"


def test_records_are_on_disk_when_record_returns(journal: Journal, tmp_path: Path) -> None:
    """What a daemon killed right after `record` finds on its next start (a fresh Journal
    reads the file; nothing is closed or flushed in between)."""
    made = claim()
    journal.record(made)
    assert restarted(tmp_path).claims() == [made]


def test_forget_removes_the_record(journal: Journal, tmp_path: Path) -> None:
    journal.record(claim(UUID_A))
    journal.record(claim(UUID_B))
    journal.forget(UUID_A)
    assert not journal.holds(UUID_A)
    assert journal.get(UUID_A) is None
    assert [c.uuid for c in journal.claims()] == [UUID_B]
    journal.forget(UUID_A)  # forgetting twice is harmless (a report after a resume)
    assert [c.uuid for c in restarted(tmp_path).claims()] == [UUID_B]


def test_services_keep_separate_journals(tmp_path: Path) -> None:
    one, other = Journal(tmp_path, "one"), Journal(tmp_path, "other")
    one.record(claim())
    assert other.claims() == [] and not other.holds(UUID_A)


def test_an_empty_journal_has_no_claims(journal: Journal) -> None:
    assert journal.claims() == []
    assert not journal.directory.exists()  # nothing is written until a claim is


@pytest.mark.parametrize("bad", ["../../etc/passwd", "x", UUID_A.upper(), UUID_A + "\n", ""])
def test_only_entry_uuids_name_records(journal: Journal, bad: str) -> None:
    with pytest.raises(ValueError, match="not an entryUUID"):
        journal.record(claim(bad))
    with pytest.raises(ValueError, match="not an entryUUID"):
        journal.holds(bad)


def test_journals_of_one_service_in_one_process_share_their_records(tmp_path: Path) -> None:
    """A reload's new engine and the old one's workers still finishing: one view of the
    records and one file, whichever journal object records, forgets or compacts."""
    old, new = Journal(tmp_path / "state", "demo"), Journal(tmp_path / "state", "demo")
    old.record(claim(UUID_A))
    new.record(claim(UUID_B))
    old.forget(UUID_A)
    assert [c.uuid for c in new.claims()] == [c.uuid for c in old.claims()] == [UUID_B]
    assert [c.uuid for c in restarted(tmp_path).claims()] == [UUID_B]


# -- confirmation --------------------------------------------------------------------------------


def test_confirm_makes_the_claim_read_as_confirmed(journal: Journal, tmp_path: Path) -> None:
    made = claim()
    journal.record(made)
    assert journal.get(UUID_A).confirmed is False  # type: ignore[union-attr]
    journal.confirm(UUID_A)
    journal.confirm(UUID_A)  # again: still one confirmation
    for reader in (journal, restarted(tmp_path)):
        again = reader.get(UUID_A)
        assert again is not None and again.confirmed is True
        assert (again.uuid, again.dn, again.request, again.token) == (
            made.uuid, made.dn, made.request, made.token)


def test_a_record_written_confirmed_reads_confirmed(journal: Journal) -> None:
    journal.record(claim(confirmed=True))
    assert journal.get(UUID_A).confirmed is True  # type: ignore[union-attr]


def test_confirm_without_a_record_raises(journal: Journal) -> None:
    with pytest.raises(LookupError, match="no claim"):
        journal.confirm(UUID_A)


@pytest.mark.parametrize("cut", [1, 10, 30, -2])
def test_a_torn_confirmation_reads_as_unconfirmed(journal: Journal, tmp_path: Path,
                                                  cut: int) -> None:
    """The confirmation's line cut short by a crash: the claim is still there, unconfirmed
    (the safe side), and records made after the restart are read back whole."""
    journal.record(claim())
    log = journal.directory / "claims.log"
    whole = log.read_bytes()
    journal.confirm(UUID_A)
    line = log.read_bytes()[len(whole):]
    log.write_bytes(whole + line[:cut])
    after = restarted(tmp_path)
    found = after.get(UUID_A)
    assert found is not None and found.confirmed is False
    after.record(claim(UUID_B))
    assert [c.uuid for c in restarted(tmp_path).claims()] == [UUID_A, UUID_B]


# -- what a crash or an earlier version leaves behind ------------------------------------------------


def test_records_of_the_one_file_per_claim_layout_are_taken_over(tmp_path: Path) -> None:
    """An upgrade with claims in flight: the earlier layout's files (one per entryUUID) become
    records of the log and are removed; a temp file of an interrupted write, a file without
    its DN line and an undecodable one are not claims."""
    directory = tmp_path / "state" / "inflight" / "demo"
    directory.mkdir(parents=True)
    (directory / UUID_A).write_text(f"add\n{DN}\n{'ab' * 10}\n{CONFIRMED}\n")
    (directory / f".{UUID_B}.tmp").write_text("add\ncn=b\n")  # temp of a rename
    (directory / UUID_B).write_text("add")  # a record without its DN line
    (directory / "0b6f2c1e-8d3a-4f5b-9c7d-1a2b3c4d5e60").write_bytes(b"add\n\xff\xfe\n")
    journal = Journal(tmp_path / "state", "demo")
    assert journal.claims() == [Claim(UUID_A, DN, "add", token="ab" * 10, confirmed=True)]
    assert not (directory / UUID_A).exists()
    assert restarted(tmp_path).claims() == journal.claims()


def test_a_record_of_an_older_version_without_a_token_still_reads(tmp_path: Path) -> None:
    directory = tmp_path / "state" / "inflight" / "demo"
    directory.mkdir(parents=True)
    (directory / UUID_A).write_text(f"delete\n{DN}\n")
    journal = Journal(tmp_path / "state", "demo")
    assert journal.get(UUID_A) == Claim(uuid=UUID_A, dn=DN, request="delete", token="")


def test_a_token_line_that_is_not_hex_is_no_token(tmp_path: Path) -> None:
    directory = tmp_path / "state" / "inflight" / "demo"
    directory.mkdir(parents=True)
    (directory / UUID_A).write_text(f"add\n{DN}\nnot-a-token!\n")
    assert Journal(tmp_path / "state", "demo").get(UUID_A).token == ""  # type: ignore[union-attr]


# -- ownership --------------------------------------------------------------------------------------


def test_the_token_in_the_message_decides_when_the_entry_has_one() -> None:
    made = claim(confirmed=True)
    assert ownership(made, message=claim_message(made.token), has_message=True,
                     last_writer="cn=someone else", identity=ME) is Ownership.OURS
    # Another daemon's claim replaced the message: not ours, confirmed or written by us.
    assert ownership(made, message=claim_message(new_token()), has_message=True,
                     last_writer=ME, identity=ME) is Ownership.THEIRS
    assert ownership(made, message=None, has_message=True, last_writer=ME,
                     identity=ME) is Ownership.THEIRS


def test_without_a_message_attribute_the_confirmation_decides() -> None:
    assert ownership(claim(confirmed=True), message=None, has_message=False,
                     last_writer="cn=other", identity=ME) is Ownership.OURS


def test_a_record_without_a_token_falls_back_to_the_confirmation() -> None:
    assert ownership(claim(token="", confirmed=True), message="anything", has_message=True,
                     last_writer=None, identity=ME) is Ownership.OURS


@pytest.mark.parametrize(("last_writer", "expected"), [
    (ME, Ownership.OURS),
    ("CN=Provisiond, DC=Example,dc=ORG", Ownership.OURS),  # the same DN as the server spells it
    ("cn=provisiond-2,dc=example,dc=org", Ownership.THEIRS),
    (None, Ownership.THEIRS),  # unknown: never resume what may be another daemon's
])
def test_unconfirmed_without_a_message_the_last_writer_decides(
        last_writer: str | None, expected: Ownership) -> None:
    assert ownership(claim(confirmed=False), message=None, has_message=False,
                     last_writer=last_writer, identity=ME) is expected


def test_tokens_are_fresh_hex() -> None:
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(len(t) == 20 and int(t, 16) >= 0 for t in tokens)
