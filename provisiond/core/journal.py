"""The in-flight journal: which claims this daemon holds, and the proof that they are its own.

An entry at `adding` with no ReturnValue may be in the hands of another daemon, or may have
been stranded by this one's crash. The directory alone cannot tell the two apart, so each
daemon remembers its own claims: a record is made durable *before* the claim is sent and
removed only after the outcome is reported. On start and after every reconnect, the records
left behind name the entries to resume.

A record alone is not proof: a daemon killed between sending its claim and reading the answer
leaves a record for a claim it may have lost to another daemon. Resuming that would run every
hook a second time beside the winner. So a record is resumed only when ownership is proven:

1. the claim token: each claim writes a random token into the entry's message attribute
   ("in progress: claim <token>") in the same modify that takes the entry; a record whose
   token is in the entry's message is ours, one whose token is not is somebody else's;
2. without a message attribute (stoney cloud's schema has none), the record's confirmation:
   a line appended once the server acknowledged the claim;
3. neither (killed inside the claim's round trip, or the answer lost with the connection):
   the server's own record of who wrote last, `modifiersName`, against this daemon's
   identity (RFC 4532 Who am I?). Nothing but a claim turns `add` into `adding`, so the entry's
   last writer is the claim's winner. This needs daemons that share a subtree to bind as
   distinct identities (the README says so); `recover: all` (one daemon per subtree) adopts
   every stranded entry anyway.
"""

from __future__ import annotations

import enum
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from provisiond.directory.decode import UUID, checked_uuid, same_dn
from provisiond.host.recordlog import shared
from provisiond.model.lifecycle import claim_message

CONFIRMED = "confirmed"


def new_token() -> str:
    return secrets.token_hex(10)


@dataclass(frozen=True)
class Claim:
    uuid: str
    dn: str
    request: str
    token: str = ""  # written into the entry's message with the claim (if it has one)
    confirmed: bool = False  # the server acknowledged the claim


class Ownership(enum.Enum):
    OURS = "ours"
    THEIRS = "theirs"


def ownership(claim: Claim, *, message: str | None, has_message: bool,
              last_writer: str | None, identity: str) -> Ownership:
    """Whether a stranded entry (its `message`, its `modifiersName`) is `claim`'s, for a
    daemon writing as `identity` (see the module doc)."""
    if has_message and claim.token:
        return Ownership.OURS if message == claim_message(claim.token) else Ownership.THEIRS
    if claim.confirmed:
        return Ownership.OURS
    if last_writer is not None and same_dn(last_writer, identity):
        return Ownership.OURS
    return Ownership.THEIRS


class Journal:
    """The claims of one service, in one append-only file (host/recordlog.py):
    `state_dir/inflight/<service>/claims.log`. Recording a claim is one appended line and one
    fdatasync before the claim is sent; confirming it, one more; forgetting it, a line that
    is not synced (see `forget`). Records of the earlier layout, one file per entryUUID in the
    same directory, are taken over on first use."""

    def __init__(self, state_dir: Path, service: str) -> None:
        self.directory = state_dir / "inflight" / service
        self._log = shared(self.directory / "claims.log", legacy=UUID)

    def record(self, claim: Claim) -> None:
        """Durable when this returns: the claim may be sent."""
        text = f"{claim.request}\n{claim.dn}\n{claim.token}\n"
        if claim.confirmed:
            text += f"{CONFIRMED}\n"
        self._log.put(checked_uuid(claim.uuid), text)

    def confirm(self, uuid: str) -> None:
        """The server acknowledged the claim (durable when this returns; a crash before it
        leaves the claim unconfirmed, which is the safe side)."""
        text = self._log.get(checked_uuid(uuid))
        if text is None:
            raise LookupError(f"no claim recorded for {uuid}")
        if CONFIRMED not in text.split("\n")[2:]:
            self._log.put(uuid, text + f"{CONFIRMED}\n")

    def holds(self, uuid: str) -> bool:
        return checked_uuid(uuid) in self._log

    def forget(self, uuid: str) -> None:
        """The claim's outcome is in the directory: the record goes. Not made durable (no
        fdatasync, one less per entry): a record a crash brings back names an entry that is
        no longer stranded, and a resume forgets it after one read. The next durable record
        syncs this line with it."""
        self._log.delete(checked_uuid(uuid), durable=False)

    def get(self, uuid: str) -> Claim | None:
        text = self._log.get(checked_uuid(uuid))
        return None if text is None else self._parse(uuid, text)

    def claims(self) -> list[Claim]:
        found = (self._parse(uuid, text) for uuid, text in self._log.items())
        return [claim for claim in found if claim is not None]

    @staticmethod
    def _parse(uuid: str, text: str) -> Claim | None:
        lines = text.split("\n")
        if len(lines) < 2:
            return None
        token = lines[2] if len(lines) > 2 and re.fullmatch(r"[0-9a-f]*", lines[2]) else ""
        return Claim(uuid=uuid, dn=lines[1], request=lines[0], token=token,
                     confirmed=CONFIRMED in lines[2:])
