"""The in-flight journal: which claims this daemon holds.

An entry at `adding` with no ReturnValue may be in the hands of another daemon, or may have
been stranded by this one's crash. The directory cannot tell the two apart (stoney's schema
has nowhere to record an owner), so each daemon remembers its own claims: a record is made
durable *before* the claim is sent and removed only after the outcome is reported. On start
and after every reconnect, the records left behind name exactly the entries to resume.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from provisiond.fsutil import atomic_write, remove_path

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass(frozen=True)
class Claim:
    uuid: str
    dn: str
    request: str


class Journal:
    def __init__(self, state_dir: Path, service: str) -> None:
        self.directory = state_dir / "inflight" / service

    def _path(self, uuid: str) -> Path:
        if not UUID.fullmatch(uuid):
            raise ValueError(f"not an entryUUID: {uuid!r}")
        return self.directory / uuid

    def record(self, claim: Claim) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write(self._path(claim.uuid), f"{claim.request}\n{claim.dn}\n".encode(), mode=0o600)

    def holds(self, uuid: str) -> bool:
        return self._path(uuid).exists()

    def forget(self, uuid: str) -> None:
        remove_path(self._path(uuid))

    def claims(self) -> list[Claim]:
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.iterdir()):
            if not UUID.fullmatch(path.name):
                continue  # temp files of an interrupted write
            try:
                request, dn = path.read_text(encoding="utf-8").split("\n")[:2]
            except (OSError, ValueError):
                continue
            found.append(Claim(uuid=path.name, dn=dn, request=request))
        return found
