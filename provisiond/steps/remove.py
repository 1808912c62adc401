"""`remove: path`: a file, a symlink (not its target) or a directory tree removed; nothing
there is fine, so a re-run after a crash changes nothing."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from provisiond.config import readers
from provisiond.config.schema import Where
from provisiond.host.files import remove_path
from provisiond.logfmt import kv
from provisiond.model.settings import Action, HookSettings, RemoveAction, ServiceSpec, Step
from provisiond.model.work import Job, Outcome
from provisiond.steps.base import Check, Context, Description, Plan, StepType, target_path

log = logging.getLogger("provisiond.steps")


@dataclass(frozen=True, kw_only=True)
class RemovePlan(Plan):
    path: Path


class RemoveStep(StepType[RemovePlan]):
    name = "remove"
    action = RemoveAction

    def parse(self, data: Mapping[str, Any], where: Where, env: jinja2.Environment) -> Action:
        where = where.child(self.name)
        given = readers.options(data[self.name], where, ("path",), shorthand="path")
        return RemoveAction(path=readers.inline(env, readers.text(given, "path", where),
                                               where.child("path")))

    def bind_programs(self, action: Action, program: Callable[[str, Where], str],
                      where: Where) -> Action:
        return action  # runs no program

    def plan(self, ctx: Context, job: Job, step: Step, outputs: Mapping[str, Any]) -> RemovePlan:
        action: RemoveAction = self.action_of(step)
        path = target_path(ctx, job.service, action.path, job.context(outputs))
        return RemovePlan(step=step, service=job.service, job=job, path=path)

    def run(self, ctx: Context, plan: RemovePlan, outcome: Outcome) -> None:
        if remove_path(plan.path):
            outcome.changed.append(str(plan.path))
            log.info(kv(event="removed", service=plan.service.name, uuid=plan.uuid,
                        path=str(plan.path)))

    def describe(self, ctx: Context, plan: RemovePlan) -> Description:
        path = plan.path
        if os.path.isdir(path) and not os.path.islink(path):
            count = sum(1 for _ in path.rglob("*"))
            return Description(summary=f"{path}: directory with {count} entries would be removed",
                               path=str(path), changes=True)
        if os.path.lexists(path):
            return Description(summary=f"{path}: would be removed", path=str(path), changes=True)
        return Description(summary=f"{path}: nothing there", path=str(path))

    def check(self, hooks: HookSettings, service: ServiceSpec, mode: str,
              step: Step) -> list[Check]:
        return []  # runs no program; its path depends on the entry


REMOVE = RemoveStep()
