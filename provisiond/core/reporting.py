"""Writing an entry's outcome: added + timestamp, or the ReturnValue and a message (and the
outputs: all of them with a success, those declared `on_failure` with a failure).

The work is done when the outcome is written, so a report waits out an outage (the daemon
stopping meanwhile raises `Interrupted`: the journal resumes the entry on the next start).
A report the server refuses is the caller's to replace with a failure report; a failure
report that is refused too is logged, never taken for a success.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from provisiond.core.runtime import Counters
from provisiond.directory.access import Directory, Entry, WriteResult
from provisiond.directory.connection import DirectoryUnavailable
from provisiond.logfmt import kv
from provisiond.model import lifecycle
from provisiond.model.settings import RetrySettings

if TYPE_CHECKING:
    from provisiond.core.runtime import ServiceRuntime

log = logging.getLogger("provisiond.engine")


class Interrupted(Exception):
    """The daemon is stopping while the directory is unavailable: the work is done or
    half-done, and the journal resumes the entry on the next start."""


class Reporter:
    def __init__(self, directory: Directory, counters: Counters, stopping: threading.Event,
                 retry: RetrySettings) -> None:
        self.directory = directory
        self.counters = counters
        self.stopping = stopping
        self.retry = retry

    def failure(self, rt: ServiceRuntime, entry: Entry, request: str, code: int,
                message: str, started: float,
                outputs: Mapping[str, Sequence[str]] | None = None) -> None:
        """Report a failure, with `outputs` (attribute -> texts: the job's outputs declared
        `on_failure`, Outcome.written). Outputs the directory refuses (an attribute the entry
        may not have) must not cost the failure report: it is written again without them,
        saying so."""
        names = rt.spec.attributes
        result = self.report(rt, entry, lifecycle.failure_changes(names, code, message, outputs))
        if not result.ok and outputs:
            refused = ", ".join(o.name for o in rt.spec.outputs if o.attribute in outputs)
            message = (f"{message} (outputs {refused} not written: the directory refused them: "
                       f"{result.description})")
            result = self.report(rt, entry, lifecycle.failure_changes(names, code, message))
        rt.journal.forget(entry.uuid)
        self.counters.count(rt.spec.name, "failure")
        log.error(kv(event="failed", service=rt.spec.name, dn=entry.dn, uuid=entry.uuid,
                     mode=rt.spec.lifecycle.working[request], rc=code,
                     unreported=True if not result.ok else None,
                     ms=int((time.monotonic() - started) * 1000), msg=lifecycle.clip(message)))

    def report(self, rt: ServiceRuntime, entry: Entry, changes: lifecycle.Changes,
               dn: str | None = None) -> WriteResult:
        """Write the outcome (to `dn`, by default the entry's: core/parents.py writes to its
        parent); while the directory is down, keep trying (the work is done). Raises
        Interrupted when the daemon stops meanwhile."""
        target = dn or entry.dn
        delay = self.retry.initial or 0.5
        while True:
            try:
                result = self.directory.modify(target, changes)
            except DirectoryUnavailable as exc:
                if self.stopping.wait(delay):
                    raise Interrupted(f"stopping before the outcome could be reported "
                                      f"({exc}); the next start resumes it") from exc
                log.warning(kv(event="report-retry", service=rt.spec.name, dn=target,
                               reason=str(exc)))
                delay = min(delay * 2, self.retry.maximum)
                continue
            if not result.ok:
                log.error(kv(event="report-failed", service=rt.spec.name, dn=target,
                             uuid=entry.uuid, rc=result.code, msg=result.description))
            return result
