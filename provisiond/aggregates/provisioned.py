"""What this daemon last provisioned per entry, kept across restarts for aggregate files.

A tenant whose later modify is rejected (a bad value) stays provisioned with its old values:
its backups must keep running, so it must stay in the schedule rendered from all entries. The
directory only holds the new, invalid values, so the last valid ones are kept here, one file
per entry (`state_dir/provisioned/<service>/<uuid>`, JSON of the LDAP attributes as they were
when the entry was provisioned, written crash-safely), and parsed again when needed, so a
change of the value declarations applies to them too. A record is written when an entry of a
service with aggregate files is provisioned and removed when it leaves the service's active
entries; one write per provisioned entry, nothing per render.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

from provisiond.directory.decode import UUID
from provisiond.host.files import atomic_write, remove_path
from provisiond.logfmt import kv

log = logging.getLogger("provisiond.provisioned")

Attributes = Mapping[str, tuple[str, ...]]


class ProvisionedStore:
    def __init__(self, state_dir: Path, service: str) -> None:
        self.directory = state_dir / "provisioned" / service
        self._known: set[str] | None = None  # uuids with a record, read once

    def _path(self, uuid: str) -> Path:
        if not UUID.fullmatch(uuid):
            raise ValueError(f"not an entryUUID: {uuid!r}")
        return self.directory / uuid

    def _uuids(self) -> set[str]:
        if self._known is None:
            try:
                self._known = {p.name for p in self.directory.iterdir() if UUID.fullmatch(p.name)}
            except OSError:
                self._known = set()
        return self._known

    def save(self, uuid: str, attributes: Attributes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        data = {name: list(values) for name, values in sorted(attributes.items())}
        atomic_write(self._path(uuid), json.dumps(data, sort_keys=True).encode(), mode=0o600)
        self._uuids().add(uuid)

    def load(self, uuid: str) -> Attributes | None:
        if uuid not in self._uuids():
            return None
        try:
            data = json.loads(self._path(uuid).read_text(encoding="utf-8"))
            return {str(k): tuple(str(v) for v in values) for k, values in data.items()}
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            log.warning(kv(event="provisioned-unreadable", uuid=uuid, reason=str(exc)))
            return None

    def forget(self, uuid: str) -> None:
        if uuid in self._uuids():
            remove_path(self._path(uuid))
            self._uuids().discard(uuid)
