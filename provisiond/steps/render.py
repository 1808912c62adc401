"""`render: {template, path, scope, validate, mode}`: a file written from a Jinja template.

`scope: entry` renders from the entry's values; `scope: all` renders one file from every active
entry of the service (aggregates/mirror.py), the job's own entry laid over as it will be. The
file is written crash-safely and only when its bytes change, so a re-run after a crash writes
nothing; with `validate`, a checker (`rsnapshot configtest`) sees the new file as a temp file
beside the target first, and a rejected file is never installed.

`on_change: [argv]` (batch apply, steps/on_change.py) runs once after a render that changed
the file, with `{{ path }}` the file: `on_change: [tgt-admin, --update, ALL]`. Never once per
entry (a coalesced render of a file of all entries applies once for all the jobs it covers,
and its failure fails each of them with its step's code), never for an unchanged file, except
that an apply which failed or was cut short by a crash stays pending and runs with the next
render. Before a changed file is installed, the last applied one is kept as FILE.prev; to
roll back by hand: `mv FILE.prev FILE`, then the apply command.
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
from provisiond.steps.on_change import run_apply

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
    sources: tuple[str, ...] = ()  # scope all: the services the template sees as `sources`

    @property
    def on_change(self) -> tuple[str, ...]:
        """The apply command's argv templates (`{{ path }}`: the file); () for none."""
        action: RenderAction = RENDER.action_of(self.step)
        return action.on_change


def aggregate_context(service: ServiceSpec) -> dict[str, Any]:
    """What paths and templates of files rendered from all entries see besides `entries`."""
    return {"service": service.name, "vars": service.vars}


class RenderStep(StepType[RenderPlan]):
    name = "render"
    action = RenderAction

    def parse(self, data: Mapping[str, Any], where: Where, env: jinja2.Environment) -> Action:
        where = where.child(self.name)
        data = readers.options(data[self.name], where, ("template", "path", "scope", "validate",
                                                         "mode", "sources", "on_change"))
        template = readers.template(env, readers.text(data, "template", where),
                                   where.child("template"))
        scope = data.get("scope", "entry")
        if scope not in ("entry", "all"):
            raise where.child("scope").error(f"must be entry or all, not {scope!r}")
        validate = data.get("validate")
        sources = _sources(data.get("sources"), scope, where.child("sources"))
        return RenderAction(
            template=template,
            path=readers.inline(env, readers.text(data, "path", where), where.child("path")),
            scope=scope,
            validate=readers.argv(env, validate, where.child("validate")) if validate else (),
            file_mode=readers.octal(data.get("mode"), where.child("mode"), 0o644),
            sources=tuple(name.rstrip("?") for name in sources),
            optional_sources=tuple(name[:-1] for name in sources if name.endswith("?")),
            on_change=readers.argv(env, data["on_change"], where.child("on_change"))
            if "on_change" in data else (),
        )

    def bind_programs(self, action: Action, program: Callable[[str, Where], str],
                      where: Where) -> Action:
        assert isinstance(action, RenderAction)
        at = where.child(self.name)

        def bound(argv: tuple[str, ...], option: str) -> tuple[str, ...]:
            return (program(argv[0], at.child(option).child(0)), *argv[1:]) if argv else ()

        return replace(action, validate=bound(action.validate, "validate"),
                       on_change=bound(action.on_change, "on_change"))

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
        """The plan of a file rendered from all entries (`job`: the one that asks for it).
        A file several services render is planned as its writer renders it (the action's
        `writer`), so one coalesced render serves the jobs of all of them alike."""
        action: RenderAction = self.action_of(step)
        service = ctx.aggregates.services.get(action.writer, service)
        context = aggregate_context(service)
        path = target_path(ctx, service, action.path, context)
        return RenderPlan(step=step, service=service, job=job, path=path,
                          file_mode=action.file_mode, template=action.template, context=context,
                          content=None, validate=action.validate, sources=action.sources)

    def run(self, ctx: Context, plan: RenderPlan, outcome: Outcome) -> None:
        if plan.content is None:
            if plan.job is not None:  # listed from now on (its earlier steps are done)
                ctx.aggregates.begin(plan.job)
            ctx.aggregates.render(plan.service, plan.path, lambda entries, sources: (
                self._install_all(ctx, plan, entries, sources)), plan.sources, plan.job)
        elif self.install(ctx, plan, plan.content):
            outcome.changed.append(str(plan.path))

    def _install_all(self, ctx: Context, plan: RenderPlan, entries: list[Member],
                     sources: Mapping[str, list[Member]]) -> None:
        self.install(ctx, plan, content_for(ctx, plan, entries, sources))

    def install(self, ctx: Context, plan: RenderPlan, content: bytes) -> bool:
        """Write `content` to the plan's path crash-safely, after the optional validator
        accepts it; False if the file already holds exactly these bytes. With `on_change`,
        its command runs after a change, and after no change while an earlier apply of the
        file is still pending (steps/on_change.py)."""
        path = plan.path
        changed = not _holds(path, content) and self._write(ctx, plan, content)
        if plan.on_change and (changed or ctx.applies.pending(path)):
            run_apply(ctx, plan, path, apply_argv(ctx, plan),
                      plan.job if plan.content is not None else None)
        return changed

    def _write(self, ctx: Context, plan: RenderPlan, content: bytes) -> bool:
        path = plan.path
        if not path.parent.is_dir():  # one stat where mkdir would fail and stat anyway
            path.parent.mkdir(parents=True, exist_ok=True)
        if not plan.validate and not plan.on_change:
            # `install` found the bytes differ (_holds): no second read of the file
            changed = atomic_write(path, content, mode=plan.file_mode, compare=False)
        else:
            temp = write_temp_beside(path, content, mode=plan.file_mode)
            try:
                if plan.validate:
                    argv = validate_argv(ctx, plan, str(temp))
                    program = resolve_program(argv[0], ctx.hooks.path)
                    environment = hook_environment(search_path=ctx.hooks.path,
                                                   service=plan.service.name, mode="", dn="",
                                                   uuid="", values={})
                    result = execute(ctx, plan, [program, *argv[1:]], environment,
                                     ctx.hooks.timeout, uuid="")
                    if result.returncode != 0:
                        raise StepError(f"{argv[0]} rejected {path.name}: {tail(result, 3)}")
                if plan.on_change:  # FILE.prev kept, the apply marked pending, durably
                    ctx.applies.before_install(path)
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
                entries, sources = ctx.aggregates.gather(plan.service, plan.sources)
            finally:
                if job is not None:
                    ctx.aggregates.end(job)
            content = content_for(ctx, plan, entries, sources)
            scope = f" from {len(entries)} active entr{'y' if len(entries) == 1 else 'ies'}"
            if sources:
                counts = ", ".join(f"{name} {len(members)}" for name, members in sources.items())
                scope += f" (sources: {counts})"
        path = plan.path
        changes, diff = _diff(path, content)
        verb = ("would be created" if not os.path.lexists(path) else "would change") \
            if changes else "unchanged"
        validate = None
        if plan.validate:
            placeholder = f"{path.parent}/.{path.name}.XXXX.tmp"
            validate = validate_argv(ctx, plan, placeholder)
        apply, then = _apply_shown(ctx, plan, changes)
        return Description(summary=f"{path}{scope}: {verb} (mode {plan.file_mode:04o}){then}",
                           path=str(path), changes=changes, diff=diff, validate=validate,
                           on_change=apply)

    def check(self, hooks: HookSettings, service: ServiceSpec, mode: str,
              step: Step) -> list[Check]:
        action: RenderAction = self.action_of(step)
        return [_program_check(option, argv[0], hooks)
                for option, argv in (("validate", action.validate),
                                     ("on_change", action.on_change)) if argv]


def _sources(data: Any, scope: str, where: Where) -> tuple[str, ...]:
    """The services a file of all entries lists besides the service's own, as written (that
    each names a configured service, unless it ends in `?`, is checked once all are known:
    config/shared_files.py)."""
    if data is None:
        return ()
    if scope != "all":
        raise where.error("only with scope: all (a file rendered from all entries)")
    if not isinstance(data, list) or not data or not all(
            isinstance(name, str) and name for name in data):
        raise where.error("must be a non-empty list of service names")
    if len({name.rstrip("?") for name in data}) < len(data):
        raise where.error("names a service twice")
    return tuple(data)


def content_for(ctx: Context, plan: RenderPlan, entries: list[Member],
                sources: Mapping[str, list[Member]] | None = None) -> bytes:
    """The content of a file rendered from all entries (and those of its `sources`)."""
    return render_template(ctx.env, plan.template, {
        **plan.context, "entries": entries, "sources": dict(sources or {})}).encode()


def validate_argv(ctx: Context, plan: RenderPlan, file: str) -> list[str]:
    """The validate command for the new content in `file`."""
    return [render_string(ctx.env, arg, {**plan.context, "file": file}) for arg in plan.validate]


def apply_argv(ctx: Context, plan: RenderPlan) -> list[str]:
    """The apply command (`on_change`) of the plan's file, `path` in its templates."""
    context = {**plan.context, "path": str(plan.path)}
    return [render_string(ctx.env, arg, context) for arg in plan.on_change]


def _program_check(option: str, program: str, hooks: HookSettings) -> Check:
    return Check(f"{option} program {program} is executable",
                 lambda: resolve_program(program, hooks.path))


def _apply_shown(ctx: Context, plan: RenderPlan, changes: bool) -> tuple[list[str] | None, str]:
    """The apply command as a preview shows it (the program resolved), and what the summary
    says of it: it runs after a change, or without one while an apply is pending."""
    if not plan.on_change:
        return None, ""
    program, *rest = apply_argv(ctx, plan)
    argv = [resolve_program(program, ctx.hooks.path), *rest]
    if changes:
        return argv, f"; then runs {' '.join(argv)}"
    if ctx.applies.pending(plan.path):
        return argv, f"; its apply is pending, so it runs {' '.join(argv)}"
    return argv, ""


def _holds(path: Path, content: bytes) -> bool:
    """Whether the file at `path` has exactly these bytes (False when it cannot be read)."""
    try:
        return path.read_bytes() == content
    except OSError:
        return False


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
