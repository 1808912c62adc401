"""Running a job's steps in order, each through its step type (provisiond/steps).

Each step either completes or raises `StepFailed` carrying the step's error code (which
becomes the entry's ReturnValue) and a one-line message. Steps are expected to be idempotent:
after a crash the whole list runs again from the first step, so a render of unchanged content
writes nothing and a hook must tolerate being re-run. A mode's steps include the admin's
hooks around the service's own (config/admin_hooks.py); a post hook under `post_failure: log`
is the one step whose failure is logged and passed over.

A step is planned just before it runs, with the outputs of the hooks before it: the plan is
what `provisiond render` shows, the run carries it out. A step whose `when:` does not hold
for the job is skipped (model/conditions.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2

from provisiond.aggregates.mirror import Aggregates, sources_of
from provisiond.core.serialize import StepKeys
from provisiond.directory.connection import DirectoryUnavailable
from provisiond.host.applied import PendingApplies
from provisiond.logfmt import kv
from provisiond.model.settings import HookSettings, RenderAction, ServiceSpec, Step
from provisiond.model.work import Job, Outcome
from provisiond.steps import render, step_type
from provisiond.steps.base import STEP_ERRORS, Context, StepError, StepType

log = logging.getLogger("provisiond.pipeline")


class StepFailed(Exception):
    """A step's failure. `transient`: worth trying again (a hook's exit 75, the directory
    away). `outage`: the directory was away: not the entry's doing, so the engine waits for
    the directory without counting it against the entry's retries."""

    def __init__(self, step: str, code: int, message: str, transient: bool = False,
                 outage: bool = False) -> None:
        super().__init__(message)
        self.step = step
        self.code = code
        self.message = message
        self.transient = transient or outage
        self.outage = outage
        self.outcome: Outcome | None = None


def failed(step: Step, exc: Exception) -> StepFailed:
    """The failure of `step` for one of the step errors (steps/base.py STEP_ERRORS)."""
    transient = isinstance(exc, StepError) and exc.transient
    return StepFailed(step.name, step.code, f"{step.name}: {exc}", transient=transient)


class Suspend(Exception):
    """The job reached a render of a file of all entries: the engine parks it for a batch
    render (core/batches.py) and runs it on from `outcome` afterwards."""

    def __init__(self, step: Step, plan: render.RenderPlan, outcome: Outcome) -> None:
        super().__init__(step.name)
        self.step = step
        self.plan = plan
        self.outcome = outcome


def batched(step: Step) -> bool:
    """Whether `step` is done by batch renders: a file of all entries without a
    serialization key of its own (that key is held in the job's worker, around the step)."""
    action = step.action
    return isinstance(action, RenderAction) and action.scope == "all" and not step.serialize


class Pipeline:
    # Called as observe(service, step, seconds, ok) after every step (metrics); None: nothing.
    observe: Callable[[str, str, float, bool], None] | None = None

    def __init__(
        self,
        env: jinja2.Environment,
        hooks: HookSettings,
        aggregates: Aggregates,
        clock: Callable[[], float] = time.monotonic,
        types: Callable[[Step], StepType[Any]] = step_type,
    ) -> None:
        self.env = env
        self.hooks = hooks
        self.aggregates = aggregates
        self.clock = clock
        # pending applies are kept beside the mirror's provisioned values, across restarts
        self.context = Context(env, hooks, aggregates, PendingApplies(aggregates.state_dir))
        self.types = types  # the registry's; a test may run a step type of its own
        self.keys = StepKeys(env)  # one pipeline runs every service's jobs: keys daemon-wide

    def run(self, job: Job, outcome: Outcome | None = None, batching: bool = False) -> Outcome:
        """Run the steps from `outcome.next_step`; raises StepFailed, with `outcome` telling
        where it stopped. `batching`: a render of a file of all entries is not done here but
        raises Suspend, for a batch render to do it for many jobs at once (core/batches.py);
        the job then runs again with the batch's outcome in `outcome`."""
        outcome = outcome or Outcome()
        steps = job.service.steps_for(job.request)
        while outcome.next_step < len(steps):
            step = steps[outcome.next_step]
            if not step.applies(job.values, job.service.vars, job.request):
                log.info(kv(event="step-skipped", service=job.service.name, dn=job.dn,
                            uuid=job.uuid, mode=job.request, step=step.name, reason="when",
                            when=step.when.source if step.when else None))
                outcome.next_step += 1
                continue
            if batching and outcome.batched != outcome.next_step and batched(step):
                raise Suspend(step, self._batch_plan(job, step), outcome)
            started = self.clock()
            try:
                try:
                    if outcome.batched == outcome.next_step:  # done by a batch render
                        self._batch_outcome(step, outcome)
                    else:
                        self._run_step(job, step, outcome)
                except DirectoryUnavailable as exc:
                    raise StepFailed(step.name, step.code,
                                     f"{step.name}: directory unavailable: {exc}",
                                     outage=True) from exc
                except StepFailed:
                    raise
                except Exception as exc:  # noqa: BLE001 - a bug fails the entry, not the daemon
                    log.exception(kv(event="internal-error", service=job.service.name,
                                     uuid=job.uuid, step=step.name))
                    raise StepFailed(step.name, step.code, f"{step.name}: internal error: "
                                     f"{type(exc).__name__}: {exc}") from exc
            except StepFailed as failure:
                failure.outcome = outcome
                if outcome.batched == outcome.next_step:  # a retry renders again
                    outcome.batched, outcome.batch_error = -1, None
                if self.observe:
                    self.observe(job.service.name, step.name, self.clock() - started, False)
                if not step.fatal:  # an admin post hook with post_failure: log
                    log.warning(kv(event="admin-hook-failed", service=job.service.name,
                                   dn=job.dn, uuid=job.uuid, mode=job.request, step=step.name,
                                   ms=self._ms(started), policy="log", msg=failure.message))
                    outcome.next_step += 1
                    continue
                log.error(kv(event="step-failed", service=job.service.name, dn=job.dn,
                             uuid=job.uuid, mode=job.request, step=step.name, rc=failure.code,
                             ms=self._ms(started), transient=failure.transient or None,
                             msg=failure.message))
                raise
            if self.observe:
                self.observe(job.service.name, step.name, self.clock() - started, True)
            log.info(kv(event="step", service=job.service.name, dn=job.dn, uuid=job.uuid,
                        mode=job.request, step=step.name, rc=0, ms=self._ms(started),
                        batch=True if outcome.batched == outcome.next_step else None))
            outcome.next_step += 1
        return outcome

    def _batch_plan(self, job: Job, step: Step) -> render.RenderPlan:
        try:
            return render.RENDER.plan_all(self.context, job.service, step, job)
        except STEP_ERRORS as exc:
            raise failed(step, exc) from exc

    @staticmethod
    def _batch_outcome(step: Step, outcome: Outcome) -> None:
        error = outcome.batch_error
        if isinstance(error, STEP_ERRORS):
            raise failed(step, error) from error
        if error is not None:
            raise error

    def render_batch(self, plans: list[render.RenderPlan]) -> None:
        """Render the file of `plans` (jobs parked at one path) once for them all: their
        entries are laid over it now, after their earlier steps (core/batches.py)."""
        for plan in plans:
            if plan.job is not None:
                self.aggregates.begin(plan.job)
        render.RENDER.run(self.context, plans[0], Outcome())

    def _ms(self, started: float) -> int:
        return int((self.clock() - started) * 1000)

    def _run_step(self, job: Job, step: Step, outcome: Outcome) -> None:
        kind = self.types(step)
        try:
            with self.keys.hold(job, step, outcome.values):  # its `serialize:` key, if any
                kind.run(self.context, kind.plan(self.context, job, step, outcome.values),
                         outcome)
        except STEP_ERRORS as exc:
            raise failed(step, exc) from exc

    # -- files rendered from all entries -----------------------------------------------------------

    def _aggregate_plans(self, service: ServiceSpec) -> list[render.RenderPlan]:
        """The distinct files rendered from all entries, each planned by the first step
        writing it; raises StepFailed when a path is not allowed."""
        found: dict[Path, render.RenderPlan] = {}
        for step in render.aggregate_steps(service):
            try:
                plan = render.RENDER.plan_all(self.context, service, step)
            except STEP_ERRORS as exc:
                raise failed(step, exc) from exc
            found.setdefault(plan.path, plan)
        return list(found.values())

    def aggregate_steps(self, service: ServiceSpec) -> list[tuple[Step, RenderAction, Path]]:
        """The distinct files rendered from all entries, with the first step writing each."""
        return [(plan.step, render.RENDER.action_of(plan.step), plan.path)
                for plan in self._aggregate_plans(service)]

    def written_directories(self, service: ServiceSpec) -> list[Path]:
        """The directories the service's render steps write into, as far as they do not
        depend on an entry (for the start-up sweep of temp files)."""
        return render.written_directories(self.context, service)

    def _files_showing(self, service: ServiceSpec) -> list[render.RenderPlan]:
        """The distinct files that list `service`'s entries: its own files of all entries,
        and those of other services naming it in `sources` (each planned as its writer
        plans it); raises StepFailed when a path is not allowed."""
        plans = self._aggregate_plans(service)
        for other in self.aggregates.services.values():
            if other.name != service.name and service.name in sources_of(other):
                plans += [plan for plan in self._aggregate_plans(other)
                          if service.name in plan.sources]
        found: dict[Path, render.RenderPlan] = {}
        for plan in plans:
            found.setdefault(plan.path, plan)
        return list(found.values())

    def refresh_aggregates(self, service: ServiceSpec, done: set[Path] | None = None) -> None:
        """Render every file that lists the service's entries again from the directory's
        current state, so changes made elsewhere arrive without waiting for a change here.
        `done`: the files a pass over several services rendered already (a file several
        services show is rendered once per pass); those rendered here are added. Raises
        StepFailed."""
        for plan in self._files_showing(service):
            if done is not None:
                if plan.path in done:
                    continue
                done.add(plan.path)
            try:
                render.RENDER.run(self.context, plan, Outcome())
            except STEP_ERRORS as exc:
                raise failed(plan.step, exc) from exc
