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
- A pass cannot be trusted to show this daemon's own reports: slapd's contextCSN can lag
  behind an entry's entryCSN when concurrent writes finish out of order, and the pass then
  says "nothing changed". So when a job reports, the mirror is *settled*: the entry itself is
  read (a base search, which no sync state delays) and put in or taken out. A file rendered
  from all entries never lacks an entry this daemon provisioned; changes made elsewhere
  arrive with the next pass (every render, and `refresh` periodically).
- An entry whose new values are invalid keeps its last valid ones (provisioned.py keeps them
  across restarts), so a rejected modify never drops a tenant from the files. With `unique:`
  so does a failed change, and an entry that lost a unique value to another (unique.py) is
  left out: one duplicate never makes the file invalid for every entry.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provisiond.aggregates.provisioned import Attributes, ProvisionedStore
from provisiond.aggregates.references import attach, named
from provisiond.aggregates.unique import IN_FLIGHT, NEW, SETTLED, Holder, losers
from provisiond.directory.access import Directory, Entry
from provisiond.directory.connection import ConnectionFactory
from provisiond.directory.decode import dn_key, same_dn
from provisiond.directory.stream import Change, ChangeStream
from provisiond.logfmt import kv
from provisiond.model import lifecycle
from provisiond.model.settings import RenderAction
from provisiond.model.values import InvalidValue, ValueSpec, parse_entry

if TYPE_CHECKING:
    from provisiond.model.settings import ServiceSpec
    from provisiond.model.work import Job

log = logging.getLogger("provisiond.aggregate")


@dataclass(frozen=True)
class Member:
    """One entry as an aggregate template sees it: `item.dn`, `item.uuid`, `item.values.x`,
    and `item.refs.<name>` for the entries it references (another Member, or a list of them
    for a multi-valued reference). As a referenced entry it also shows its declared outputs
    as the directory holds them (`outputs.x`; one that does not parse is absent), its
    service's `vars` and the name of its `service`."""

    dn: str
    uuid: str
    values: Mapping[str, Any]
    refs: Mapping[str, Any] = field(default_factory=dict)
    outputs: Mapping[str, Any] = field(default_factory=dict)
    vars: Mapping[str, Any] = field(default_factory=dict)
    service: str = ""


def known_outputs(specs: Sequence[ValueSpec], attributes: Attributes) -> dict[str, Any]:
    """The outputs an entry's attributes hold, parsed leniently: what a hook reported once may
    not parse under today's declaration, and such an output is absent rather than fatal."""
    known: dict[str, Any] = {}
    for spec in specs:
        if spec.report_to != "entry":  # written to the parent: not this entry's
            continue
        raw = attributes.get(spec.attribute.lower())
        if not raw:
            continue
        try:
            known[spec.name] = spec.parse_values(raw)
        except InvalidValue:
            continue
    return known


def member_of(service: ServiceSpec, uuid: str, dn: str, values: Mapping[str, Any],
              attributes: Attributes) -> Member:
    """An entry of `service` as templates see it, from its validated values and attributes."""
    return Member(dn, uuid, values, outputs=known_outputs(service.outputs, attributes),
                  vars=service.vars, service=service.name)


@dataclass
class _Run:
    """One run of a Coalescer: which requests it covers, and how it ended."""

    covers: int  # every request numbered up to this one was made before it started
    stamp: int  # the Coalescer's stamp when it started
    done: bool = False
    error: BaseException | None = None


class Coalescer:
    """Run a function at most once at a time; callers waiting meanwhile share the next run.

    A caller may also say from which `stamp` on a run covers it (`since`): a job's entry is
    laid over the aggregate at its begin (Aggregates.begin, stamped), so any render that
    started after that lists it. Such a caller shares the running render if it started late
    enough, and needs none if the last one did and succeeded: a burst of jobs that began
    together shares one render, not only the jobs that happened to wait for it."""

    def __init__(self, stamp: Callable[[], int] = lambda: 0) -> None:
        self._cond = threading.Condition()
        self._stamp = stamp
        self._requested = 0
        self._current: _Run | None = None
        self._last: _Run | None = None
        self.runs = 0

    @property
    def _running(self) -> bool:
        return self._current is not None

    def run(self, function: Callable[[], None], since: int | None = None) -> None:
        with self._cond:
            self._requested += 1
            ticket = self._requested
            while True:
                last = self._last
                if last is not None and last.covers >= ticket:  # started after we asked
                    if last.error is not None:
                        raise last.error
                    return
                if last is not None and since is not None and last.stamp >= since \
                        and last.error is None:
                    return  # it listed the job already
                current = self._current
                if current is None:
                    break
                if since is not None and current.stamp >= since:
                    while not current.done:  # it lists the job: its outcome is the job's
                        self._cond.wait()
                    if current.error is not None:
                        raise current.error
                    return
                self._cond.wait()
            run = self._current = _Run(covers=self._requested, stamp=self._stamp())
        try:
            function()
        except BaseException as exc:  # noqa: BLE001 - handed to every caller it covers
            run.error = exc
        with self._cond:
            run.done = True
            self._current = None
            self._last = run
            self.runs += 1
            self._cond.notify_all()
        if run.error is not None:
            raise run.error


class Mirror:
    """The active entries of one service, validated, kept current by refreshOnly passes.
    It is the change stream's listener; everything runs on the caller's thread."""

    def __init__(self, factory: ConnectionFactory, service: ServiceSpec,
                 store: ProvisionedStore | None = None) -> None:
        self.service = service
        self.store = store
        self.members: dict[str, Member] = {}
        self.unsettled: set[str] = set()  # members whose values are a change not provisioned
        self.lock = threading.Lock()
        self.stream = ChangeStream(
            factory, base=service.base, filter=service.aggregate_filter,
            attributes=service.mirrored_attributes(), mode="refresh", interval=60.0, cookie=None,
            listener=self,
        )

    def on_change(self, change: Change) -> None:
        if change.present:
            self.update(change.uuid, change.dn or "", change.attributes)
        else:
            self.remove(change.uuid)

    def update(self, uuid: str, dn: str, attributes: Attributes) -> bool:
        """The entry is active with `attributes`; the caller holds `lock` (or is the pass).
        False when the values are invalid (and the last valid ones, if known, stay)."""
        try:
            values = parse_entry(self.service.values, attributes)
        except InvalidValue as exc:
            # One tenant's bad value must not block the others' files, nor take the tenant
            # out of them (a rejected modify must not stop its backups): the last valid
            # values stay, from memory or from what this daemon last provisioned.
            kept = uuid in self.members or self._restore(uuid, dn)
            log.warning(kv(event="aggregate-keeps-previous" if kept else "aggregate-skip",
                           service=self.service.name, dn=dn, msg=str(exc)))
            return False
        if self.service.unique:
            state = lifecycle.read_state(self.service.attributes, attributes,
                                         self.service.lifecycle)
            if lifecycle.is_failed(state) and self._restore(uuid, dn):
                # A refused change (a value another entry keeps: aggregates/unique.py) must
                # not bring its duplicate into the files: what was provisioned stays.
                self.unsettled.discard(uuid)
                return False
            request = state.request or state.working_request
            if request is not None and self.service.lifecycle.request(request).effect == "change":
                self.unsettled.add(uuid)  # not provisioned with these values (yet)
            else:
                self.unsettled.discard(uuid)
        self.members[uuid] = member_of(self.service, uuid, dn, values, attributes)
        return True

    def remove(self, uuid: str) -> None:
        self.members.pop(uuid, None)
        self.unsettled.discard(uuid)
        if self.store is not None:
            self.store.forget(uuid)

    def _restore(self, uuid: str, dn: str) -> bool:
        saved = self.store.load(uuid) if self.store is not None else None
        if saved is None:
            return False
        try:
            values = parse_entry(self.service.values, saved)
        except InvalidValue:
            return False
        self.members[uuid] = member_of(self.service, uuid, dn, values, saved)
        return True

    def on_cookie(self, cookie: str, covers: int) -> None:
        del cookie, covers  # kept by the stream itself between passes

    def on_refresh_done(self) -> None:
        pass

    def on_connection(self, up: bool, reason: str) -> None:
        del up, reason

    def current(self) -> dict[str, Member]:
        """Bring the mirror up to date (raises DirectoryUnavailable) and return a copy."""
        return self.current_state()[0]

    def current_state(self) -> tuple[dict[str, Member], set[str]]:
        """`current`, and which of them are `unsettled` (known for services with `unique`)."""
        with self.lock:
            self.stream.run_once()
            return dict(self.members), set(self.unsettled)

    def close(self) -> None:
        """Close the connection the passes keep (the next pass opens one)."""
        with self.lock:
            self.stream.close()


class Aggregates:
    def __init__(self, factory: ConnectionFactory, services: Sequence[ServiceSpec] = (),
                 state_dir: Path | None = None) -> None:
        self.services = {spec.name: spec for spec in services}
        self.state_dir = state_dir
        # Read from the provider, where this daemon's own reports land first.
        settings = factory.settings
        self.factory = ConnectionFactory(replace(settings, uri=settings.write_uri or settings.uri))
        self.directory = Directory(self.factory)
        self._lock = threading.Lock()
        self._coalescers: dict[Path, Coalescer] = {}
        self._mirrors: dict[str, Mirror] = {}
        self._mirrored: dict[str, bool] = {}
        # service name -> uuid -> (dn, values or None when the entry is being deleted)
        self._overlays: dict[str, dict[str, tuple[str, Mapping[str, Any] | None]]] = {}
        # (service name, uuid) -> the stamp of its overlay: a render started at or after it
        # lists the job as it will be (Coalescer `since`)
        self._begun: dict[tuple[str, str], int] = {}
        self._stamps = 0

    def begin(self, job: Job) -> None:
        """Lay the job's entry over the files of all entries, as it will be once done (the
        engine does so at the job's first render of such a file, after its earlier steps;
        again is a no-op: the first stamp stays)."""
        removing = job.service.lifecycle.request(job.request).effect == "remove"
        values = None if removing else job.values
        with self._lock:
            if (job.service.name, job.uuid) in self._begun:
                return
            self._overlays.setdefault(job.service.name, {})[job.uuid] = (job.dn, values)
            self._stamps += 1
            self._begun[(job.service.name, job.uuid)] = self._stamps

    def end(self, job: Job) -> None:
        with self._lock:
            self._overlays.get(job.service.name, {}).pop(job.uuid, None)
            self._begun.pop((job.service.name, job.uuid), None)

    def _stamp(self) -> int:
        with self._lock:
            return self._stamps

    def coalescer(self, path: Path) -> Coalescer:
        with self._lock:
            return self._coalescers.setdefault(path, Coalescer(self._stamp))

    def entries(self, service: ServiceSpec) -> list[Member]:
        """The active entries, sorted by DN so the output is stable; with `unique:`, without
        those that lost a value to another (aggregates/unique.py)."""
        found, unsettled = self.with_overlays(service)
        if service.unique:
            in_flight = set(self.overlays(service))
            for uuid in losers(service.unique, holders(found, unsettled, in_flight),
                               service.values):
                found.pop(uuid)
        if service.references:  # one refresh per referenced service, not one per member
            targets = {other: by_dn(self.mirror(self.services[other]).current().values())
                       for other in {reference.service for reference in service.references}}
            found = {uuid: with_refs(service, member, targets) for uuid, member in found.items()}
        return sorted(found.values(), key=lambda member: member.dn.lower())

    def with_overlays(self, service: ServiceSpec) -> tuple[dict[str, Member], set[str]]:
        """The active entries (uuid -> Member) with the jobs in flight laid over, and the
        uuids of those not provisioned with these values (in flight, or a change pending:
        known for services with `unique`)."""
        # The overlays are read before the directory: a job that leaves the overlays has
        # already reported, so the refresh that follows sees its outcome. The other order
        # could miss an entry that finishes in between.
        with self._lock:
            overlays = dict(self._overlays.get(service.name, {}))
        found, unsettled = self.mirror(service).current_state()
        for uuid, (dn, overlay) in overlays.items():
            if overlay is None:
                found.pop(uuid, None)
            elif uuid in found:  # being modified: its outputs are still the directory's
                found[uuid] = replace(found[uuid], dn=dn, values=overlay)
            else:
                found[uuid] = Member(dn, uuid, overlay, vars=service.vars, service=service.name)
        return found, unsettled | set(overlays)

    def close(self) -> None:
        """Close the mirrors' connections: the engine stops, or a reload replaces it (the
        garbage collector would close them only later, slapd holding them meanwhile)."""
        with self._lock:
            mirrors = list(self._mirrors.values())
        for mirror in mirrors:
            mirror.close()

    def mirror(self, service: ServiceSpec) -> Mirror:
        with self._lock:
            mirror = self._mirrors.get(service.name)
            if mirror is None:
                store = (ProvisionedStore(self.state_dir, service.name)
                         if self.state_dir is not None else None)
                mirror = self._mirrors[service.name] = Mirror(self.factory, service, store)
            return mirror

    def mirrored(self, service: ServiceSpec) -> bool:
        """Whether anything reads `service`'s mirror: its own files rendered from all
        entries, another service's references to its entries, or a file of all entries
        that lists them (`sources`) (decided once per service: `settle` asks for every job)."""
        known = self._mirrored.get(service.name)
        if known is None:
            known = self._mirrored[service.name] = any(
                step.action.scope == "all" for steps in service.steps.values()
                for step in steps if isinstance(step.action, RenderAction)) or any(
                service.name == reference.service for other in self.services.values()
                for reference in other.references) or any(
                service.name in sources_of(other) for other in self.services.values())
        return known

    def settle(self, job: Job, provisioned: Attributes | None = None) -> None:
        """After `job` reported: put its entry in the mirror as the directory has it now, or
        take it out, without waiting for a refresh pass to show it (see the module doc).
        `provisioned`: the entry's attributes as the job provisioned them (its outputs
        included); a service without an `active` filter takes them as they are, since
        nothing but the request decides whether its entry is in the files: no read. Raises
        DirectoryUnavailable."""
        service = job.service
        if not self.mirrored(service):
            return
        if provisioned is not None and not service.active:
            removed = service.lifecycle.request(job.request).effect == "remove"
            found = [] if removed else [Entry(job.dn, job.uuid, provisioned)]
        else:
            found = self.directory.search(job.dn, service.aggregate_filter,
                                          service.mirrored_attributes(), scope="base")
        mirror = self.mirror(service)
        with mirror.lock:
            entry = next((e for e in found if e.uuid == job.uuid), None)
            if entry is None:
                mirror.remove(job.uuid)
                return
            valid = mirror.update(entry.uuid, entry.dn, entry.attributes)
            if valid and mirror.store is not None and job.request != "delete":
                mirror.store.save(entry.uuid, entry.attributes)

    def overlays(self, service: ServiceSpec) -> dict[str, tuple[str, Mapping[str, Any] | None]]:
        """The service's jobs in flight: uuid -> (dn, values, or None when being removed)."""
        with self._lock:
            return dict(self._overlays.get(service.name, {}))

    def gather(self, service: ServiceSpec, sources: Sequence[str] = ()
               ) -> tuple[list[Member], dict[str, list[Member]]]:
        """What a file of all entries is made of: `service`'s active entries, and those of
        each service in `sources` by name (each as `entries` gives them: overlays laid over,
        references resolved)."""
        own = self.entries(service)
        return own, {name: own if name == service.name else
                     self.entries(self.services[name]) if name in self.services else []
                     for name in sources}  # not configured: an optional source (`NAME?`)

    def render(self, service: ServiceSpec, path: Path,
               render: Callable[[list[Member], dict[str, list[Member]]], None],
               sources: Sequence[str] = (), job: Job | None = None) -> None:
        """Run `render` with what the file at `path` is made of, coalesced per path: one
        writer, whichever service's job asks (the caller makes every request for one path
        alike: steps/render.py plans a file several services render as its writer does).
        `job`: the job that asks, covered by any render started since its begin."""
        with self._lock:
            since = self._begun.get((job.service.name, job.uuid)) if job is not None else None
        self.coalescer(path).run(lambda: render(*self.gather(service, sources)), since)


def holders(members: Mapping[str, Member], unsettled: set[str],
            in_flight: set[str]) -> list[Holder]:
    """The members as aggregates/unique.py ranks them: in flight (a job's overlay), new (a
    change not provisioned yet) or settled."""
    return [Holder(uuid, member.dn, member.values,
                   IN_FLIGHT if uuid in in_flight else NEW if uuid in unsettled else SETTLED)
            for uuid, member in members.items()]


def sources_of(service: ServiceSpec) -> set[str]:
    """The services whose entries `service`'s files of all entries list (`sources`)."""
    return {name for steps in service.steps.values() for step in steps
            if isinstance(step.action, RenderAction) for name in step.action.sources}


def find_dn(members: Iterable[Member], dn: str) -> Member | None:
    return next((member for member in members if same_dn(member.dn, dn)), None)


def by_dn(members: Iterable[Member]) -> dict[tuple[tuple[str, str], ...], Member]:
    """Members by their DN as compared (decode.dn_key): one lookup per reference, not a scan."""
    found = {}
    for member in members:
        try:
            found[dn_key(member.dn)] = member
        except ValueError:
            continue
    return found


def with_refs(service: ServiceSpec, member: Member,
              targets: Mapping[str, Mapping[tuple[tuple[str, str], ...], Member]]) -> Member:
    """`member` with its references resolved from `targets` (service -> its active entries,
    by_dn); unresolved ones are absent (the entry itself was checked when it was provisioned),
    a multi-valued reference is the list of those found."""
    refs: dict[str, Any] = {}
    for reference in service.references:
        found = []
        for dn in named(reference, member.dn, member.values):
            try:
                target = targets[reference.service].get(dn_key(dn))
            except ValueError:
                target = None
            if target is not None:
                found.append(target)
        attach(refs, reference, found)
    return replace(member, refs=refs)
