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

import contextlib
import enum
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from provisiond.directory.decode import UUID, same_dn
from provisiond.host.files import atomic_write
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
    def __init__(self, state_dir: Path, service: str) -> None:
        self.directory = state_dir / "inflight" / service

    def _path(self, uuid: str) -> Path:
        if not UUID.fullmatch(uuid):
            raise ValueError(f"not an entryUUID: {uuid!r}")
        return self.directory / uuid

    def record(self, claim: Claim) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        text = f"{claim.request}\n{claim.dn}\n{claim.token}\n"
        if claim.confirmed:
            text += f"{CONFIRMED}\n"
        atomic_write(self._path(claim.uuid), text.encode(), mode=0o600)

    def confirm(self, uuid: str) -> None:
        """The server acknowledged the claim: one appended, fsynced line (no rename needed,
        a torn append reads as unconfirmed, which is the safe side)."""
        fd = os.open(self._path(uuid), os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.write(fd, f"{CONFIRMED}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def holds(self, uuid: str) -> bool:
        return self._path(uuid).exists()

    def forget(self, uuid: str) -> None:
        """The claim's outcome is in the directory: the record goes. Not made durable (no
        directory fsync, one less per entry): a record a crash brings back names an entry
        that is no longer stranded, and a resume forgets it after one read."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(uuid))

    def get(self, uuid: str) -> Claim | None:
        return self._read(self._path(uuid))

    def claims(self) -> list[Claim]:
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.iterdir()):
            if not UUID.fullmatch(path.name):
                continue  # temp files of an interrupted write
            claim = self._read(path)
            if claim is not None:
                found.append(claim)
        return found

    @staticmethod
    def _read(path: Path) -> Claim | None:
        try:
            lines = path.read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError):
            return None
        if len(lines) < 2:
            return None
        token = lines[2] if len(lines) > 2 and re.fullmatch(r"[0-9a-f]*", lines[2]) else ""
        return Claim(uuid=path.name, dn=lines[1], request=lines[0], token=token,
                     confirmed=CONFIRMED in lines[2:])
