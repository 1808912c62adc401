"""Jobs parked at a file of all entries until one render covers them all.

A file rendered from all entries (scst.conf, the Bacula SD's device file, a cron file) must
list a job's entry before the job reports, so each job waits for a render that includes it.
If the job waited in its worker, a burst of n entries could share a render only among as many
jobs as there are workers: n / workers renders (and applies: `tgt-admin --update`, an SD
restart) for one burst. So a job that reaches such a step is *parked* here instead: its worker
goes on with other entries, and the step is done for every parked job at once by one render:

- a path's parked jobs are rendered together as soon as the engine is quiet (nothing queued,
  no worker busy: no other job could join soon) or the oldest has waited `window` seconds; a
  single entry therefore waits for nothing, a burst of 1,000 is rendered a few times;
- the entries of the parked jobs are laid over the file (Aggregates.begin) only then, right
  before the render: a job is listed once its earlier steps (the hook that made the device)
  are done, never before, so an apply never names a device that does not exist yet;
- each job then continues where it stopped (engine: a Work of kind `continue`), with the
  render's outcome: success, or the render's error (a failed `on_change` fails them all,
  each with its own step's code).

A parked job is still in the engine's hands (claimed, journaled, its change unsettled): a stop
renders what is parked at once so the jobs can report within the grace period; a crash
leaves them to the journal, which resumes each from its first step (steps are idempotent).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisiond.logfmt import kv

log = logging.getLogger("provisiond.engine")

WINDOW_SECONDS = 2.0  # the longest a parked job waits for company (while others work)


@dataclass
class Parked:
    """One job waiting at a render step: what the engine needs to continue it, opaque here
    but for the render to run (`render(parked)` does it for all parked at one path)."""

    path: Path
    since: float  # monotonic time it was parked
    plan: Any  # what the render needs (the job's plan of the step: steps/render.RenderPlan)
    continuation: Any  # the engine's, given back to `resume`
    error: BaseException | None = field(default=None)  # the render's, when it failed


class RenderBatches:
    """Parks jobs per path, renders each path's parked jobs together, resumes them."""

    def __init__(self, render: Callable[[list[Parked]], BaseException | None],
                 resume: Callable[[Parked], None], quiet: Callable[[], bool],
                 window: float = WINDOW_SECONDS) -> None:
        self._render = render  # renders the file for them all; the error, or None
        self._resume = resume
        self._quiet = quiet
        self.window = window
        self._cond = threading.Condition()
        self._parked: dict[Path, list[Parked]] = {}
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.renders = 0  # batches rendered (tests and the bench count them)

    def start(self, wrap: Callable[[Callable[[], None]], Callable[[], None]] = lambda f: f
              ) -> None:
        """Start the thread; `wrap` wraps its body (the engine's closes the thread's
        directory connections when it ends)."""
        self._thread = threading.Thread(target=wrap(self._loop), name="render-batches",
                                        daemon=True)
        self._thread.start()

    def park(self, parked: Parked) -> None:
        with self._cond:
            late = self._stopping  # the thread may have ended: nobody else would render it
            if not late:
                self._parked.setdefault(parked.path, []).append(parked)
                self._cond.notify_all()
        if late:
            self._run([parked])  # at once, as a stop renders everything

    def poke(self) -> None:
        """The engine may have become quiet: look again now."""
        with self._cond:
            if self._parked:
                self._cond.notify_all()

    def stop(self) -> None:
        """Render what is parked now (the jobs may report within the grace period); the
        thread ends then. A job parked later (its worker was busy at the stop) is rendered
        at once, in its worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def join(self, timeout: float) -> bool:
        """Wait for the thread to end after `stop` (it renders what is parked first); True
        if it ended."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def count(self) -> int:
        with self._cond:
            return sum(len(jobs) for jobs in self._parked.values())

    def _due(self, now: float) -> tuple[list[Parked], float | None]:
        """The jobs of the first path to render now, or how long until one is due."""
        quiet = self._stopping or self._quiet()
        wait: float | None = None
        for path, jobs in self._parked.items():
            age = now - jobs[0].since
            if quiet or age >= self.window:
                return self._parked.pop(path), None
            wait = min(wait if wait is not None else self.window, self.window - age)
        return [], wait

    def _loop(self) -> None:
        # Ends once stopped with nothing left parked: a reload builds a new engine, and a
        # thread left waiting here would keep the old one alive (and one more thread) for ever.
        while True:
            with self._cond:
                while True:
                    jobs, wait = self._due(time.monotonic())
                    if jobs:
                        break
                    if self._stopping:
                        return
                    self._cond.wait(wait)  # None: until a job is parked
            self._run(jobs)

    def _run(self, jobs: list[Parked]) -> None:
        started = time.monotonic()
        try:
            error = self._render(jobs)
        except BaseException as exc:  # noqa: BLE001 - every parked job must go on
            error = exc
        self.renders += 1
        log.info(kv(event="batch-rendered", path=str(jobs[0].path), jobs=len(jobs),
                    ms=int((time.monotonic() - started) * 1000),
                    error=str(error) if error is not None else None))
        for parked in jobs:
            parked.error = error
            self._resume(parked)
