"""Running a service's steps for one entry: render, hook, mkdir, remove.

Each step either completes or raises `StepFailed` carrying the step's error code (which
becomes the entry's ReturnValue) and a one-line message. Steps are expected to be idempotent:
after a crash the whole list runs again from the first step, so a render of unchanged content
writes nothing and a hook must tolerate being re-run. A mode's steps include the admin's
hooks around the service's own (config/admin_hooks.py); a post hook under `post_failure: log`
is the one step whose failure is logged and passed over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jinja2

from provisiond.aggregates.mirror import Aggregates, Member
from provisiond.config.admin_hooks import unsafe_program
from provisiond.directory.connection import DirectoryUnavailable
from provisiond.host.files import (
    PathNotAllowed,
    atomic_write,
    confine,
    install_temp,
    make_directory,
    remove_path,
    write_temp_beside,
)
from provisiond.host.hooks import (
    EXIT_RETRY,
    HookError,
    HookResult,
    hook_environment,
    resolve_program,
    run_hook,
)
from provisiond.host.jinja import RenderError, render_string, render_template
from provisiond.logfmt import kv
from provisiond.model.settings import (
    HookAction,
    HookSettings,
    MkdirAction,
    RemoveAction,
    RenderAction,
    ServiceSpec,
    Step,
)
from provisiond.model.values import as_text
from provisiond.model.work import Job, Outcome

log = logging.getLogger("provisiond.pipeline")


class StepFailed(Exception):
    def __init__(self, step: str, code: int, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.step = step
        self.code = code
        self.message = message
        self.transient = transient
        self.outcome: Outcome | None = None


def aggregate_context(service: ServiceSpec) -> dict[str, Any]:
    """What paths and templates of files rendered from all entries see besides `entries`."""
    return {"service": service.name, "vars": service.vars}


class _Probe(str):
    """Stands for every entry-dependent name when the entry-independent part of a path is
    wanted: any attribute or item of it is the marker itself."""

    def __getattr__(self, name: str) -> _Probe:
        return self

    def __getitem__(self, key: Any) -> _Probe:
        return self


class Pipeline:
    # Called as observe(service, step, seconds, ok) after every step (metrics); None: nothing.
    observe: Callable[[str, str, float, bool], None] | None = None

    def __init__(
        self,
        env: jinja2.Environment,
        hooks: HookSettings,
        aggregates: Aggregates,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.env = env
        self.hooks = hooks
        self.aggregates = aggregates
        self.clock = clock

    def run(self, job: Job, outcome: Outcome | None = None) -> Outcome:
        """Run the steps from `outcome.next_step`; raises StepFailed, with `outcome` telling
        where it stopped."""
        outcome = outcome or Outcome()
        steps = job.service.steps_for(job.request)
        while outcome.next_step < len(steps):
            step = steps[outcome.next_step]
            started = self.clock()
            try:
                try:
                    self._run_step(job, step, outcome.values, outcome)
                except DirectoryUnavailable as exc:
                    raise StepFailed(step.name, step.code,
                                     f"{step.name}: directory unavailable: {exc}",
                                     transient=True) from exc
                except StepFailed:
                    raise
                except Exception as exc:  # noqa: BLE001 - a bug fails the entry, not the daemon
                    log.exception(kv(event="internal-error", service=job.service.name,
                                     uuid=job.uuid, step=step.name))
                    raise StepFailed(step.name, step.code, f"{step.name}: internal error: "
                                     f"{type(exc).__name__}: {exc}") from exc
            except StepFailed as failure:
                failure.outcome = outcome
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
                        mode=job.request, step=step.name, rc=0, ms=self._ms(started)))
            outcome.next_step += 1
        return outcome

    def _ms(self, started: float) -> int:
        return int((self.clock() - started) * 1000)

    def _run_step(self, job: Job, step: Step, outputs: dict[str, Any], outcome: Outcome) -> None:
        action = step.action
        context = job.context(outputs)
        if step.admin and isinstance(action, HookAction):  # the file may have changed since
            problem = unsafe_program(Path(action.argv[0]))
            if problem is not None:
                raise StepFailed(step.name, step.code, f"{step.name}: {action.argv[0]} {problem}")
        try:
            if isinstance(action, RenderAction):
                if action.scope == "all":
                    self.render_all(job.service, step, action)
                else:
                    self._render_entry(job, step, action, context, outcome)
            elif isinstance(action, HookAction):
                self._hook(job, step, action, context, outputs, outcome)
            elif isinstance(action, MkdirAction):
                self._mkdir(job, step, action, context, outcome)
            elif isinstance(action, RemoveAction):
                path = self._path(job, step, action.path, context)
                if remove_path(path):
                    outcome.changed.append(str(path))
                    log.info(kv(event="removed", service=job.service.name, uuid=job.uuid,
                                path=str(path)))
        except RenderError as exc:
            raise StepFailed(step.name, step.code, f"{step.name}: {exc}") from exc
        except OSError as exc:
            raise StepFailed(step.name, step.code, f"{step.name}: {exc}") from exc

    # -- paths -------------------------------------------------------------------------------

    def _path(self, job: Job, step: Step, source: str, context: Mapping[str, Any]) -> Path:
        return self._service_path(job.service, step, source, context)

    def _service_path(self, service: ServiceSpec, step: Step, source: str,
                      context: Mapping[str, Any]) -> Path:
        text = render_string(self.env, source, context)
        if not service.roots:
            raise StepFailed(step.name, step.code,
                             f"{step.name}: service {service.name} declares no roots")
        try:
            return confine(text, service.roots)
        except PathNotAllowed as exc:
            raise StepFailed(step.name, step.code, f"{step.name}: {exc}") from exc

    # -- what a service writes, known before any entry -------------------------------------------

    def aggregate_steps(self, service: ServiceSpec) -> list[tuple[Step, RenderAction, Path]]:
        """The distinct files rendered from all entries, with the first step writing each."""
        found: dict[Path, tuple[Step, RenderAction, Path]] = {}
        for steps in service.steps.values():
            for step in steps:
                action = step.action
                if isinstance(action, RenderAction) and action.scope == "all":
                    path = self._service_path(service, step, action.path,
                                              aggregate_context(service))
                    found.setdefault(path, (step, action, path))
        return list(found.values())

    def written_directories(self, service: ServiceSpec) -> list[Path]:
        """The directories the service's render steps write into, as far as they do not
        depend on an entry (for the start-up sweep of temp files)."""
        directories = []
        marker = "\x00entry\x00"
        probe = _Probe(marker)
        context = {**aggregate_context(service), "values": probe, "refs": probe,
                   "outputs": probe, "entry": probe}
        for steps in service.steps.values():
            for step in steps:
                if not isinstance(step.action, RenderAction):
                    continue
                try:
                    text = render_string(self.env, step.action.path, context)
                except Exception:  # noqa: BLE001 - a filter choked on the probe: skip the step
                    continue
                static = text.split(marker)[0]  # the whole path when no marker is in it
                directory = Path(static) if static.endswith("/") else Path(static).parent
                try:
                    directories.append(confine(directory / "x", service.roots).parent)
                except PathNotAllowed:
                    continue
        return list(dict.fromkeys(directories))

    def refresh_aggregates(self, service: ServiceSpec) -> None:
        """Render every file of all entries again from the directory's current state, so
        changes made elsewhere arrive without waiting for a change here. Raises StepFailed."""
        for step, action, _path in self.aggregate_steps(service):
            self.render_all(service, step, action)

    # -- render ------------------------------------------------------------------------------

    def _render_entry(self, job: Job, step: Step, action: RenderAction,
                      context: Mapping[str, Any], outcome: Outcome) -> None:
        path = self._path(job, step, action.path, context)
        content = render_template(self.env, action.template, context).encode()
        if self.install(job.service, step, action, path, content, context):
            outcome.changed.append(str(path))

    def render_all(self, service: ServiceSpec, step: Step, action: RenderAction) -> None:
        context = aggregate_context(service)
        path = self._service_path(service, step, action.path, context)

        def render(entries: list[Member]) -> None:
            content = render_template(self.env, action.template,
                                      {**context, "entries": entries}).encode()
            self.install(service, step, action, path, content, context)

        self.aggregates.render(service, path, render)

    def install(self, service: ServiceSpec, step: Step, action: RenderAction, path: Path,
                content: bytes, context: Mapping[str, Any]) -> bool:
        """Write `content` to `path` crash-safely, after the optional validator accepts it."""
        try:
            if path.read_bytes() == content:
                return False
        except OSError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        if not action.validate:
            changed = atomic_write(path, content, mode=action.file_mode)
        else:
            temp = write_temp_beside(path, content, mode=action.file_mode)
            try:
                argv = [render_string(self.env, a, {**context, "file": str(temp)})
                        for a in action.validate]
                result = self._execute(service, step, argv, {}, None, "", "")
                if result.returncode != 0:
                    tail = " | ".join(result.output_tail.strip().splitlines()[-3:])
                    raise StepFailed(step.name, step.code,
                                     f"{step.name}: {argv[0]} rejected {path.name}: {tail}")
                install_temp(temp, path)
                changed = True
            finally:
                temp.unlink(missing_ok=True)
        if changed:
            log.info(kv(event="wrote", service=service.name, step=step.name, path=str(path)))
        return changed

    # -- hooks and directories ------------------------------------------------------------------

    def _execute(self, service: ServiceSpec, step: Step, argv: list[str],
                 values: Mapping[str, str], timeout: float | None, dn: str, uuid: str,
                 mode: str = "") -> HookResult:
        try:
            program = resolve_program(argv[0], self.hooks.path)
        except HookError as exc:
            raise StepFailed(step.name, step.code, f"{step.name}: {exc}") from exc
        env = hook_environment(search_path=self.hooks.path, service=service.name, mode=mode,
                               dn=dn, uuid=uuid, values=values)
        result = run_hook([program, *argv[1:]], env=env, timeout=timeout or self.hooks.timeout,
                          kill_grace=self.hooks.kill_grace)
        log.info(kv(event="ran", service=service.name, uuid=uuid or None, step=step.name,
                    argv=" ".join(result.argv), rc=result.returncode, ms=result.duration_ms,
                    timed_out=result.timed_out or None))
        if result.returncode != 0 and result.output_tail.strip():
            log.info(kv(event="output", service=service.name, uuid=uuid or None, step=step.name,
                        tail=" | ".join(result.output_tail.strip().splitlines()[-5:])))
        return result

    def _hook(self, job: Job, step: Step, action: HookAction, context: Mapping[str, Any],
              outputs: dict[str, Any], outcome: Outcome) -> None:
        argv = [render_string(self.env, arg, context) for arg in action.argv]
        values = {name: as_text(value) for name, value in job.values.items() if value is not None}
        result = self._execute(job.service, step, argv, values, action.timeout, job.dn, job.uuid,
                               job.request)
        if result.timed_out:
            raise StepFailed(step.name, step.code,
                             f"{step.name}: {argv[0]} timed out and was killed")
        if result.returncode == EXIT_RETRY:
            raise StepFailed(step.name, step.code,
                             f"{step.name}: {argv[0]} asked to retry later (exit 75)",
                             transient=True)
        if result.returncode != 0:
            tail = " | ".join(result.output_tail.strip().splitlines()[-2:])
            raise StepFailed(step.name, step.code,
                             f"{step.name}: {argv[0]} exited {result.returncode}: {tail}")
        if result.settings_lost:  # an output the hook set would be missing
            raise StepFailed(step.name, step.code,
                             f"{step.name}: {argv[0]}: {result.settings_lost}")
        declared = {spec.name: spec for spec in job.service.outputs}
        for name, raw in result.settings.items():
            spec = declared.get(name)
            if spec is None:
                raise StepFailed(step.name, step.code,
                                 f"{step.name}: hook set undeclared output {name!r}")
            try:
                value = spec.type.parse(raw)
            except ValueError as exc:
                raise StepFailed(step.name, step.code,
                                 f"{step.name}: output {name}: {exc}") from exc
            outputs[name] = value
            outcome.outputs[spec.attribute] = as_text(value)

    def _mkdir(self, job: Job, step: Step, action: MkdirAction, context: Mapping[str, Any],
               outcome: Outcome) -> None:
        path = self._path(job, step, action.path, context)
        owner = None
        if action.owner is not None:
            uid = render_string(self.env, action.owner, context)
            gid = render_string(self.env, action.group, context) if action.group else uid
            if not (uid.isdigit() and gid.isdigit()):
                raise StepFailed(step.name, step.code,
                                 f"{step.name}: owner {uid!r}:{gid!r} is not numeric")
            owner = (int(uid), int(gid))
        if make_directory(path, mode=action.dir_mode, owner=owner):
            outcome.changed.append(str(path))
            log.info(kv(event="mkdir", service=job.service.name, uuid=job.uuid, path=str(path)))
