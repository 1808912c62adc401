"""Files rendered from all active entries of a service (scst.conf, bacula-sd.conf, a cron file).

Two things make these different from per-entry files:
- Many entries changing together must not render the same file hundreds of times, and two
  workers must never write it at once. A `Coalescer` serialises the renders of one file and
  lets every request that arrived before a render started share that render's result.
- Entries being worked on are not yet `added` in the directory, and an entry being deleted
  still is. Each in-flight job registers an overlay (its validated values, or None for a
  delete) that is laid over the directory's view until the job reports its outcome.
- Reading all active entries for every render would cost O(entries) per render, O(n^2) for
  a burst. A `Mirror` per service keeps them in memory and brings itself up to date before
  each render with an RFC 4533 refreshOnly pass on the provider: the first pass reads every
  active entry, later ones only what changed (deletes included), in about a millisecond.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provisiond.directory.connection import ConnectionFactory
from provisiond.directory.stream import Change, ChangeStream
from provisiond.logs import kv
from provisiond.values import InvalidValue, parse_entry

if TYPE_CHECKING:
    from provisiond.config.model import ServiceSpec, Step
    from provisiond.pipeline import Job

log = logging.getLogger("provisiond.aggregate")


@dataclass(frozen=True)
class Member:
    """One entry as an aggregate template sees it: `item.dn`, `item.uuid`, `item.values.x`."""

    dn: str
    uuid: str
    values: Mapping[str, Any]


class Coalescer:
    """Run a function at most once at a time; callers waiting meanwhile share the next run."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._requested = 0
        self._completed = 0
        self._running = False
        self._error: BaseException | None = None
        self.runs = 0

    def run(self, function: Callable[[], None]) -> None:
        with self._cond:
            self._requested += 1
            ticket = self._requested
            while self._running:
                self._cond.wait()
                if self._completed >= ticket:  # a run that started after we asked is done
                    if self._error is not None:
                        raise self._error
                    return
            self._running = True
            covers = self._requested
        error: BaseException | None = None
        try:
            function()
        except BaseException as exc:  # noqa: BLE001 - handed to every caller it covers
            error = exc
        with self._cond:
            self._running = False
            self._completed = covers
            self._error = error
            self.runs += 1
            self._cond.notify_all()
        if error is not None:
            raise error


class Mirror:
    """The active entries of one service, validated, kept current by refreshOnly passes.
    It is the change stream's listener; everything runs on the caller's thread."""

    def __init__(self, factory: ConnectionFactory, service: ServiceSpec) -> None:
        self.service = service
        self.members: dict[str, Member] = {}
        self.lock = threading.Lock()
        self.stream = ChangeStream(
            factory, base=service.base, filter=service.aggregate_filter,
            attributes=service.ldap_attributes(), mode="refresh", interval=60.0, cookie=None,
            listener=self,
        )

    def on_change(self, change: Change) -> None:
        if not change.present:
            self.members.pop(change.uuid, None)
            return
        try:
            values = parse_entry(self.service.values, change.attributes)
        except InvalidValue as exc:
            # One tenant's bad value must not block the others' files, nor take the tenant
            # out of them (a rejected modify must not stop its backups): the last valid
            # values stay while this process knows them; otherwise the entry is left out.
            kept = change.uuid in self.members
            log.warning(kv(event="aggregate-keeps-previous" if kept else "aggregate-skip",
                           service=self.service.name, dn=change.dn, msg=str(exc)))
            return
        self.members[change.uuid] = Member(change.dn or "", change.uuid, values)

    def on_cookie(self, cookie: str, covers: int) -> None:
        del cookie, covers  # kept by the stream itself between passes

    def on_refresh_done(self) -> None:
        pass

    def on_connection(self, up: bool, reason: str) -> None:
        del up, reason

    def current(self) -> dict[str, Member]:
        """Bring the mirror up to date (raises DirectoryUnavailable) and return a copy."""
        with self.lock:
            self.stream.run_once()
            return dict(self.members)


class Aggregates:
    def __init__(self, factory: ConnectionFactory) -> None:
        # Read from the provider, where this daemon's own reports land first.
        settings = factory.settings
        self.factory = ConnectionFactory(replace(settings, uri=settings.write_uri or settings.uri))
        self._lock = threading.Lock()
        self._coalescers: dict[Path, Coalescer] = {}
        self._mirrors: dict[str, Mirror] = {}
        # service name -> uuid -> (dn, values or None when the entry is being deleted)
        self._overlays: dict[str, dict[str, tuple[str, Mapping[str, Any] | None]]] = {}

    def begin(self, job: Job) -> None:
        values = None if job.request == "delete" else job.values
        with self._lock:
            self._overlays.setdefault(job.service.name, {})[job.uuid] = (job.dn, values)

    def end(self, job: Job) -> None:
        with self._lock:
            self._overlays.get(job.service.name, {}).pop(job.uuid, None)

    def coalescer(self, path: Path) -> Coalescer:
        with self._lock:
            return self._coalescers.setdefault(path, Coalescer())

    def entries(self, service: ServiceSpec) -> list[Member]:
        """The active entries, sorted by DN so the output is stable."""
        # The overlays are read before the directory: a job that leaves the overlays has
        # already reported, so the refresh that follows sees its outcome. The other order
        # could miss an entry that finishes in between.
        with self._lock:
            overlays = dict(self._overlays.get(service.name, {}))
            mirror = self._mirrors.get(service.name)
            if mirror is None:
                mirror = self._mirrors[service.name] = Mirror(self.factory, service)
        found = mirror.current()
        for uuid, (dn, overlay) in overlays.items():
            if overlay is None:
                found.pop(uuid, None)
            else:
                found[uuid] = Member(dn, uuid, overlay)
        return sorted(found.values(), key=lambda member: member.dn.lower())

    def render(self, job: Job, step: Step, path: Path,
               render: Callable[[list[Member]], None]) -> None:
        del step  # the path identifies the file; the step is the caller's concern
        self.coalescer(path).run(lambda: render(self.entries(job.service)))
