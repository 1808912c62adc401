"""The in-flight journal (core/journal.py), without slapd: records made durable before a claim
is sent, confirmations appended after, what survives a torn write, and the ownership rules a
resume follows."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from provisiond.core.journal import CONFIRMED, Claim, Journal, Ownership, new_token, ownership
from provisiond.model.lifecycle import claim_message

UUID_A = "0b6f2c1e-8d3a-4f5b-9c7d-1a2b3c4d5e6f"
UUID_B = "7e9a1c3d-2b4f-4a6c-8d0e-f1a2b3c4d5e6"
DN = "cn=a,ou=demo,dc=example,dc=org"
ME = "cn=provisiond,dc=example,dc=org"


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
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
    path = journal.directory / UUID_A
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.parent == journal.directory and journal.directory.name == "demo"


def test_forget_removes_the_record(journal: Journal) -> None:
    journal.record(claim(UUID_A))
    journal.record(claim(UUID_B))
    journal.forget(UUID_A)
    assert not journal.holds(UUID_A)
    assert journal.get(UUID_A) is None
    assert [c.uuid for c in journal.claims()] == [UUID_B]
    journal.forget(UUID_A)  # forgetting twice is harmless (a report after a resume)


def test_services_keep_separate_journals(tmp_path: Path) -> None:
    one, other = Journal(tmp_path, "one"), Journal(tmp_path, "other")
    one.record(claim())
    assert other.claims() == [] and not other.holds(UUID_A)


def test_an_empty_journal_has_no_claims(journal: Journal) -> None:
    assert not journal.directory.exists()
    assert journal.claims() == []


@pytest.mark.parametrize("bad", ["../../etc/passwd", "x", UUID_A.upper(), UUID_A + "\n", ""])
def test_only_entry_uuids_name_records(journal: Journal, bad: str) -> None:
    with pytest.raises(ValueError, match="not an entryUUID"):
        journal.record(claim(bad))
    with pytest.raises(ValueError, match="not an entryUUID"):
        journal.holds(bad)


# -- confirmation --------------------------------------------------------------------------------


def test_confirm_appends_a_line_the_claim_reads_as_confirmed(journal: Journal) -> None:
    made = claim()
    journal.record(made)
    assert journal.get(UUID_A).confirmed is False  # type: ignore[union-attr]
    journal.confirm(UUID_A)
    again = journal.get(UUID_A)
    assert again is not None and again.confirmed is True
    assert (again.uuid, again.dn, again.request, again.token) == (
        made.uuid, made.dn, made.request, made.token)
    text = (journal.directory / UUID_A).read_text()
    assert text.endswith(f"\n{CONFIRMED}\n") and text.count(CONFIRMED) == 1


def test_a_record_written_confirmed_reads_confirmed(journal: Journal) -> None:
    journal.record(claim(confirmed=True))
    assert journal.get(UUID_A).confirmed is True  # type: ignore[union-attr]


def test_confirm_without_a_record_raises(journal: Journal) -> None:
    journal.directory.mkdir(parents=True)
    with pytest.raises(FileNotFoundError):
        journal.confirm(UUID_A)


@pytest.mark.parametrize("torn", ["", "c", "confir", "confirme"])
def test_a_torn_confirmation_reads_as_unconfirmed(journal: Journal, torn: str) -> None:
    journal.record(claim())
    with open(journal.directory / UUID_A, "a", encoding="utf-8") as handle:
        handle.write(torn)  # the append cut short by a crash
    found = journal.get(UUID_A)
    assert found is not None and found.confirmed is False  # the safe side


# -- what a crash leaves behind ----------------------------------------------------------------------


def test_leftovers_of_an_interrupted_write_are_not_claims(journal: Journal) -> None:
    journal.record(claim(UUID_A))
    (journal.directory / f".{UUID_B}.tmp").write_text("add\ncn=b\n")  # temp of a rename
    (journal.directory / UUID_B).write_text("add")  # a record without its DN line
    assert [c.uuid for c in journal.claims()] == [UUID_A]
    assert journal.get(UUID_B) is None


def test_an_undecodable_record_is_skipped(journal: Journal) -> None:
    journal.record(claim(UUID_A))
    (journal.directory / UUID_B).write_bytes(b"add\n\xff\xfe\n")
    assert [c.uuid for c in journal.claims()] == [UUID_A]


def test_a_record_of_an_older_version_without_a_token_still_reads(journal: Journal) -> None:
    journal.directory.mkdir(parents=True)
    (journal.directory / UUID_A).write_text(f"delete\n{DN}\n")
    assert journal.get(UUID_A) == Claim(uuid=UUID_A, dn=DN, request="delete", token="")


def test_a_token_line_that_is_not_hex_is_no_token(journal: Journal) -> None:
    journal.directory.mkdir(parents=True)
    (journal.directory / UUID_A).write_text(f"add\n{DN}\nnot-a-token!\n")
    assert journal.get(UUID_A).token == ""  # type: ignore[union-attr]


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
