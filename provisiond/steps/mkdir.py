"""`mkdir: {path, mode, owner, group}`: a directory with this mode (and numeric owner).

Missing parents are created 0755; an existing directory gets the mode and owner set, so a
re-run changes nothing. The owner and group are templates that must render to numbers (an
LDAP uidNumber, say): a name would be looked up in this host's passwd, which is not the
directory's.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from provisiond.config import readers
from provisiond.config.schema import Where
from provisiond.host.files import make_directory
from provisiond.host.jinja import render_string
from provisiond.logfmt import kv
from provisiond.model.settings import Action, HookSettings, MkdirAction, ServiceSpec, Step
from provisiond.model.work import Job, Outcome
from provisiond.steps.base import (
    Check,
    Context,
    Description,
    Plan,
    StepError,
    StepType,
    target_path,
)

log = logging.getLogger("provisiond.steps")


@dataclass(frozen=True, kw_only=True)
class MkdirPlan(Plan):
    path: Path
    dir_mode: int
    owner: tuple[int, int] | None  # (uid, gid); None: as created


class MkdirStep(StepType[MkdirPlan]):
    name = "mkdir"
    action = MkdirAction

    def parse(self, data: Mapping[str, Any], where: Where, env: jinja2.Environment) -> Action:
        where = where.child(self.name)
        given = readers.options(data[self.name], where, ("path", "mode", "owner", "group"),
                                shorthand="path")
        path = readers.inline(env, readers.text(given, "path", where), where.child("path"))
        owner, group = given.get("owner"), given.get("group")
        return MkdirAction(
            path=path,
            dir_mode=readers.octal(given.get("mode"), where.child("mode"), 0o755),
            owner=readers.inline(env, str(owner), where.child("owner")) if owner is not None else None,
            group=readers.inline(env, str(group), where.child("group")) if group is not None else None,
        )

    def bind_programs(self, action: Action, program: Callable[[str, Where], str],
                      where: Where) -> Action:
        return action  # runs no program

    def plan(self, ctx: Context, job: Job, step: Step, outputs: Mapping[str, Any]) -> MkdirPlan:
        action: MkdirAction = self.action_of(step)
        context = job.context(outputs)
        path = target_path(ctx, job.service, action.path, context)
        owner = None
        if action.owner is not None:
            uid = render_string(ctx.env, action.owner, context)
            gid = render_string(ctx.env, action.group, context) if action.group else uid
            if not (uid.isdigit() and gid.isdigit()):
                raise StepError(f"owner {uid!r}:{gid!r} is not numeric")
            owner = (int(uid), int(gid))
        return MkdirPlan(step=step, service=job.service, job=job, path=path,
                         dir_mode=action.dir_mode, owner=owner)

    def run(self, ctx: Context, plan: MkdirPlan, outcome: Outcome) -> None:
        if make_directory(plan.path, mode=plan.dir_mode, owner=plan.owner):
            outcome.changed.append(str(plan.path))
            log.info(kv(event="mkdir", service=plan.service.name, uuid=plan.uuid,
                        path=str(plan.path)))

    def describe(self, ctx: Context, plan: MkdirPlan) -> Description:
        path, mode = plan.path, plan.dir_mode
        owner = f", owner {plan.owner[0]}:{plan.owner[1]}" if plan.owner else ""
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return Description(summary=f"{path}: would be created (mode {mode:04o}{owner})",
                               path=str(path), changes=True)
        if not stat.S_ISDIR(info.st_mode):
            problem = f"{path}: exists and is not a directory"
            return Description(summary=problem, path=str(path), error=problem)
        current = stat.S_IMODE(info.st_mode)
        changes = current != mode
        summary = (f"{path}: exists (mode {current:04o} -> {mode:04o}{owner})" if changes
                   else f"{path}: exists, mode {current:04o}{owner}")
        return Description(summary=summary, path=str(path), changes=changes)

    def check(self, hooks: HookSettings, service: ServiceSpec, mode: str,
              step: Step) -> list[Check]:
        return []  # runs no program; its path depends on the entry


MKDIR = MkdirStep()
