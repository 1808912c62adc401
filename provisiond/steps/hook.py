"""`hook: [argv...]` (and the step's `timeout`): a program run for the entry.

The argv items are templates over the entry; the program name (argv[0]) was rendered from
`vars` at load, so no LDAP value chooses which program runs, and it is looked up in the hook
directories only. The hook gets a minimal environment (PROVISIOND_*), its whole process tree
is killed at the timeout, exit 75 asks for a retry later (its last output lines, the reason,
go with the message, as a failure's do), and `provisiond-set NAME=VALUE` lines report
declared outputs that later steps and the entry's report get (steps/outputs.py; a failing
hook's `on_failure` outputs go with the failure report).

Admin hooks (config/admin_hooks.py) are hook steps too; their program is checked again for
owner and mode before each run, since the file may have changed since the load.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jinja2

from provisiond.config import readers
from provisiond.config.admin_hooks import unsafe_program
from provisiond.config.schema import Where
from provisiond.config.sections import HOOKS
from provisiond.host.hooks import EXIT_RETRY, hook_environment, resolve_program
from provisiond.host.jinja import render_string
from provisiond.model.settings import Action, HookAction, HookSettings, ServiceSpec, Step
from provisiond.model.values import as_text, public
from provisiond.model.work import Job, Outcome
from provisiond.steps import outputs
from provisiond.steps.base import (
    Check,
    Context,
    Description,
    Plan,
    StepError,
    StepType,
    execute,
    retry_later,
    tail,
)


@dataclass(frozen=True, kw_only=True)
class HookPlan(Plan):
    argv: tuple[str, ...]  # rendered; argv[0] as configured, resolved when it runs
    environment: Mapping[str, str]
    timeout: float


class HookStep(StepType[HookPlan]):
    name = "hook"
    action = HookAction
    options = ("timeout",)
    touches_paths = False

    def parse(self, data: Mapping[str, Any], where: Where, env: jinja2.Environment) -> Action:
        timeout = data.get("timeout")
        if timeout is not None:  # finite and in the range of hooks.timeout
            timeout = HOOKS.option("timeout").read(timeout, where.child("timeout"))
        return HookAction(argv=readers.argv(env, data[self.name], where.child(self.name)),
                          timeout=timeout)

    def bind_programs(self, action: Action, program: Callable[[str, Where], str],
                      where: Where) -> Action:
        assert isinstance(action, HookAction)
        first = program(action.argv[0], where.child(self.name).child(0))
        return replace(action, argv=(first, *action.argv[1:]))

    def plan(self, ctx: Context, job: Job, step: Step, outputs: Mapping[str, Any]) -> HookPlan:
        action: HookAction = self.action_of(step)
        context = job.context(outputs)
        argv = tuple(render_string(ctx.env, arg, context) for arg in action.argv)
        values = {name: as_text(value)
                  for name, value in public(job.service.values, job.values).items()}
        environment = hook_environment(search_path=ctx.hooks.path, service=job.service.name,
                                       mode=job.request, dn=job.dn, uuid=job.uuid, values=values)
        return HookPlan(step=step, service=job.service, job=job, argv=argv,
                        environment=environment, timeout=action.timeout or ctx.hooks.timeout)

    def run(self, ctx: Context, plan: HookPlan, outcome: Outcome) -> None:
        program = _program(ctx, plan)
        name = plan.argv[0]
        result = execute(ctx, plan, [program, *plan.argv[1:]], plan.environment, plan.timeout,
                         plan.uuid)
        if result.timed_out:  # killed mid-way: nothing it printed is taken
            raise StepError(f"{name} timed out and was killed")
        failure = None  # a failed hook's `on_failure` outputs are still taken
        if result.returncode == EXIT_RETRY:
            failure = retry_later(f"{name} asked to retry later (exit 75)", result)
        elif result.returncode != 0:
            failure = StepError(f"{name} exited {result.returncode}: {tail(result, 2)}")
        lost = f"{name}: {result.settings_lost}" if result.settings_lost else ""
        outputs.take(outcome, plan.service.outputs, result.settings, lost, failure)

    def describe(self, ctx: Context, plan: HookPlan) -> Description:
        program = _program(ctx, plan)
        policy = "" if plan.step.fatal else "; a failure is only logged"
        return Description(summary=f"would run (timeout {plan.timeout:g}s{policy})",
                           changes=True, argv=[program, *plan.argv[1:]],
                           environment=dict(plan.environment))

    def check(self, hooks: HookSettings, service: ServiceSpec, mode: str,
              step: Step) -> list[Check]:
        program = self.action_of(step).argv[0]
        if not step.admin:
            return [Check(f"hook {program} is executable",
                          lambda: resolve_program(program, hooks.path))]
        when = "before" if step.admin == "pre" else "after"
        effect = f"fails the entry with {step.code}" if step.fatal else "a failure is only logged"

        def safe() -> str:
            problem = unsafe_program(Path(program))
            if problem is not None:
                raise RuntimeError(f"{program} {problem}")
            return ""

        return [Check(f"admin hook {program} (service {service.name}, {when} {mode}; {effect})",
                      safe)]


def _program(ctx: Context, plan: HookPlan) -> str:
    """The program to run, found in the hook directories; an admin hook's is checked for
    owner and mode again (it may have changed since the load)."""
    name = plan.argv[0]
    if plan.step.admin and (problem := unsafe_program(Path(name))) is not None:
        raise StepError(f"{name} {problem}")
    return resolve_program(name, ctx.hooks.path)


HOOK = HookStep()
