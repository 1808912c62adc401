"""What this daemon last provisioned per entry, kept across restarts for aggregate files.

A tenant whose later modify is rejected (a bad value) stays provisioned with its old values:
its backups must keep running, so it must stay in the schedule rendered from all entries. The
directory only holds the new, invalid values, so the last valid ones are kept here, one record
per entry (JSON of the LDAP attributes as they were when the entry was provisioned, a durable
line in `state_dir/provisioned/<service>/records.log`), and parsed again when needed, so a
change of the value declarations applies to them too. A record is written when an entry of a
service with aggregate files is provisioned and removed when it leaves the service's active
entries; one write per provisioned entry, nothing per render.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

from provisiond.directory.decode import UUID, checked_uuid
from provisiond.host.recordlog import shared
from provisiond.logfmt import kv

log = logging.getLogger("provisiond.provisioned")

Attributes = Mapping[str, tuple[str, ...]]


class ProvisionedStore:
    """The records of one service, in one append-only file (host/recordlog.py):
    `state_dir/provisioned/<service>/records.log`, each a durable line; files of the earlier
    layout (one per entryUUID in that directory) are taken over on first use."""

    def __init__(self, state_dir: Path, service: str) -> None:
        self.directory = state_dir / "provisioned" / service
        self._log = shared(self.directory / "records.log", legacy=UUID)

    def save(self, uuid: str, attributes: Attributes) -> None:
        data = {name: list(values) for name, values in sorted(attributes.items())}
        self._log.put(checked_uuid(uuid), json.dumps(data, sort_keys=True))

    def load(self, uuid: str) -> Attributes | None:
        text = self._log.get(checked_uuid(uuid))
        if text is None:
            return None
        try:
            data = json.loads(text)
            return {str(k): tuple(str(v) for v in values) for k, values in data.items()}
        except (ValueError, AttributeError, TypeError) as exc:
            log.warning(kv(event="provisioned-unreadable", uuid=uuid, reason=str(exc)))
            return None

    def forget(self, uuid: str) -> None:
        """Durable, as the save was: a record a crash brought back could put an entry's old
        values back into the files should it reappear with invalid ones."""
        self._log.delete(checked_uuid(uuid), durable=True)
