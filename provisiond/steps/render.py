"""`render: {template, path, scope, validate, mode}`: a file written from a Jinja template.

`scope: entry` renders from the entry's values; `scope: all` renders one file from every active
entry of the service (aggregates/mirror.py), the job's own entry laid over as it will be. The
file is written crash-safely and only when its bytes change, so a re-run after a crash writes
nothing; with `validate`, a checker (`rsnapshot configtest`) sees the new file as a temp file
beside the target first, and a rejected file is never installed.
"""

from __future__ import annotations

import difflib
import logging
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jinja2

from provisiond.aggregates.mirror import Member
from provisiond.config import readers
from provisiond.config.schema import Where
from provisiond.host.files import (
    PathNotAllowed,
    atomic_write,
    confine,
    install_temp,
    write_temp_beside,
)
from provisiond.host.hooks import hook_environment, resolve_program
from provisiond.host.jinja import render_string, render_template
from provisiond.logfmt import kv
from provisiond.model.settings import Action, HookSettings, RenderAction, ServiceSpec, Step
from provisiond.model.work import Job, Outcome
from provisiond.steps.base import (
    Check,
    Context,
    Description,
    Plan,
    StepError,
    StepType,
    execute,
    tail,
    target_path,
)

log = logging.getLogger("provisiond.steps")

DIFF_CONTEXT = 3
DIFF_LIMIT = 4 * 1024 * 1024  # a larger file on disk is shown as replaced, not diffed


@dataclass(frozen=True, kw_only=True)
class RenderPlan(Plan):
    path: Path
    file_mode: int
    template: str
    context: Mapping[str, Any]  # what the template sees (scope all: besides `entries`)
    content: bytes | None  # None (scope all): rendered from the entries when it runs
    validate: tuple[str, ...]  # argv templates; `{{ file }}` is the temp file to check


def aggregate_context(service: ServiceSpec) -> dict[str, Any]:
    """What paths and templates of files rendered from all entries see besides `entries`."""
    return {"service": service.name, "vars": service.vars}


class RenderStep(StepType[RenderPlan]):
    name = "render"
    action = RenderAction

    def parse(self, data: Mapping[str, Any], where: Where, env: jinja2.Environment) -> Action:
        where = where.child(self.name)
        data = readers.options(data[self.name], where, ("template", "path", "scope", "validate",
                                                         "mode"))
        template = readers.template(env, readers.text(data, "template", where),
                                   where.child("template"))
        scope = data.get("scope", "entry")
        if scope not in ("entry", "all"):
            raise where.child("scope").error(f"must be entry or all, not {scope!r}")
        validate = data.get("validate")
        return RenderAction(
            template=template,
            path=readers.inline(env, readers.text(data, "path", where), where.child("path")),
            scope=scope,
            validate=readers.argv(env, validate, where.child("validate")) if validate else (),
            file_mode=readers.octal(data.get("mode"), where.child("mode"), 0o644),
        )

    def bind_programs(self, action: Action, program: Callable[[str, Where], str],
                      where: Where) -> Action:
        assert isinstance(action, RenderAction)
        if not action.validate:
            return action
        first = program(action.validate[0], where.child(self.name).child("validate").child(0))
        return replace(action, validate=(first, *action.validate[1:]))

    def plan(self, ctx: Context, job: Job, step: Step, outputs: Mapping[str, Any]) -> RenderPlan:
        action: RenderAction = self.action_of(step)
        if action.scope == "all":
            return self.plan_all(ctx, job.service, step, job)
        context = job.context(outputs)
        path = target_path(ctx, job.service, action.path, context)
        content = render_template(ctx.env, action.template, context).encode()
        return RenderPlan(step=step, service=job.service, job=job, path=path,
                          file_mode=action.file_mode, template=action.template, context=context,
                          content=content, validate=action.validate)

    def plan_all(self, ctx: Context, service: ServiceSpec, step: Step,
                 job: Job | None = None) -> RenderPlan:
        """The plan of a file rendered from all entries (`job`: the one that asks for it)."""
        action: RenderAction = self.action_of(step)
        context = aggregate_context(service)
        path = target_path(ctx, service, action.path, context)
        return RenderPlan(step=step, service=service, job=job, path=path,
                          file_mode=action.file_mode, template=action.template, context=context,
                          content=None, validate=action.validate)

    def run(self, ctx: Context, plan: RenderPlan, outcome: Outcome) -> None:
        if plan.content is None:
            ctx.aggregates.render(plan.service, plan.path, lambda entries: self._install_all(
                ctx, plan, entries))
        elif self.install(ctx, plan, plan.content):
            outcome.changed.append(str(plan.path))

    def _install_all(self, ctx: Context, plan: RenderPlan, entries: list[Member]) -> None:
        self.install(ctx, plan, content_for(ctx, plan, entries))

    def install(self, ctx: Context, plan: RenderPlan, content: bytes) -> bool:
        """Write `content` to the plan's path crash-safely, after the optional validator
        accepts it; False if the file already holds exactly these bytes."""
        path = plan.path
        try:
            if path.read_bytes() == content:
                return False
        except OSError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        if not plan.validate:
            changed = atomic_write(path, content, mode=plan.file_mode)
        else:
            temp = write_temp_beside(path, content, mode=plan.file_mode)
            try:
                argv = validate_argv(ctx, plan, str(temp))
                program = resolve_program(argv[0], ctx.hooks.path)
                environment = hook_environment(search_path=ctx.hooks.path,
                                               service=plan.service.name, mode="", dn="",
                                               uuid="", values={})
                result = execute(ctx, plan, [program, *argv[1:]], environment,
                                 ctx.hooks.timeout, uuid="")
                if result.returncode != 0:
                    raise StepError(f"{argv[0]} rejected {path.name}: {tail(result, 3)}")
                install_temp(temp, path)
                changed = True
            finally:
                temp.unlink(missing_ok=True)
        if changed:
            log.info(kv(event="wrote", service=plan.service.name, step=plan.step.name,
                        path=str(path)))
        return changed

    def describe(self, ctx: Context, plan: RenderPlan) -> Description:
        scope = ""
        content = plan.content
        if content is None:
            job = plan.job
            if job is not None:
                ctx.aggregates.begin(job)  # in memory only: how the daemon sees the set
            try:
                entries = ctx.aggregates.entries(plan.service)
            finally:
                if job is not None:
                    ctx.aggregates.end(job)
            content = content_for(ctx, plan, entries)
            scope = f" from {len(entries)} active entr{'y' if len(entries) == 1 else 'ies'}"
        path = plan.path
        changes, diff = _diff(path, content)
        verb = ("would be created" if not os.path.lexists(path) else "would change") \
            if changes else "unchanged"
        validate = None
        if plan.validate:
            placeholder = f"{path.parent}/.{path.name}.XXXX.tmp"
            validate = validate_argv(ctx, plan, placeholder)
        return Description(summary=f"{path}{scope}: {verb} (mode {plan.file_mode:04o})",
                           path=str(path), changes=changes, diff=diff, validate=validate)

    def check(self, hooks: HookSettings, service: ServiceSpec, mode: str,
              step: Step) -> list[Check]:
        action: RenderAction = self.action_of(step)
        if not action.validate:
            return []
        program = action.validate[0]
        return [Check(f"validate program {program} is executable",
                      lambda: resolve_program(program, hooks.path))]


def content_for(ctx: Context, plan: RenderPlan, entries: list[Member]) -> bytes:
    """The content of a file rendered from all entries."""
    return render_template(ctx.env, plan.template, {**plan.context, "entries": entries}).encode()


def validate_argv(ctx: Context, plan: RenderPlan, file: str) -> list[str]:
    """The validate command for the new content in `file`."""
    return [render_string(ctx.env, arg, {**plan.context, "file": file}) for arg in plan.validate]


def _diff(path: Path, new: bytes) -> tuple[bool, str]:
    """(whether `new` differs from the file at `path`, a unified diff for a human)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        old: bytes | None = None
    else:
        if stat.S_ISLNK(info.st_mode):
            return True, f"{path} is a symlink; it would be replaced by a regular file\n"
        if not stat.S_ISREG(info.st_mode):
            return True, f"{path} exists and is not a regular file: the write would fail\n"
        old = path.read_bytes() if info.st_size <= DIFF_LIMIT else None
    if old == new:
        return False, ""
    old_text = (old or b"").decode("utf-8", "replace").splitlines(keepends=True)
    new_text = new.decode("utf-8", "replace").splitlines(keepends=True)
    lines = difflib.unified_diff(old_text, new_text, n=DIFF_CONTEXT,
                                 fromfile=str(path) if old is not None else "/dev/null",
                                 tofile=str(path))
    return True, "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
                         for line in lines)


# -- what a service writes, known before any entry ---------------------------------------------


def aggregate_steps(service: ServiceSpec) -> list[Step]:
    """The service's steps that render a file from all entries (and whose `when:`, which
    may read only vars here, holds)."""
    return [step for steps in service.steps.values() for step in steps
            if isinstance(step.action, RenderAction) and step.action.scope == "all"
            and step.applies({}, service.vars, "")]


class _Probe(str):
    """Stands for every entry-dependent name when the entry-independent part of a path is
    wanted: any attribute or item of it is the marker itself."""

    def __getattr__(self, name: str) -> _Probe:
        return self

    def __getitem__(self, key: Any) -> _Probe:
        return self


def written_directories(ctx: Context, service: ServiceSpec) -> list[Path]:
    """The directories the service's render steps write into, as far as they do not depend
    on an entry (for the start-up sweep of temp files)."""
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
                text = render_string(ctx.env, step.action.path, context)
            except Exception:  # noqa: BLE001 - a filter choked on the probe: skip the step
                continue
            static = text.split(marker)[0]  # the whole path when no marker is in it
            directory = Path(static) if static.endswith("/") else Path(static).parent
            try:
                directories.append(confine(directory / "x", service.roots).parent)
            except PathNotAllowed:
                continue
    return list(dict.fromkeys(directories))


RENDER = RenderStep()
