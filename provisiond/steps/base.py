"""What every step type provides, and what step types share.

A step type is one module (render.py, hook.py, mkdir.py, remove.py) with one class of five parts:
- `parse`: its part of a service definition, into the Action the ServiceSpec holds
  (model/settings.py), checked at load with errors naming the file and the key;
- `plan`: what the step would do for one job (the confined path, the rendered content, the
  argv and environment), computed without changing anything;
- `run`: carrying out a plan;
- `describe`: a plan for a human, reading the host but never writing (`provisiond render`);
- `check`: what `provisiond check` verifies before any entry arrives (the programs exist).

The pipeline runs `run(plan(...))` and the `render` command shows `describe(plan(...))`: both
start from the same plan, so a preview cannot drift from what a run does.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import jinja2

from provisiond.aggregates.mirror import Aggregates
from provisiond.config.schema import Where
from provisiond.host.applied import PendingApplies
from provisiond.host.files import PathNotAllowed, confine
from provisiond.host.hooks import HookError, HookResult, run_hook
from provisiond.host.jinja import RenderError, render_string
from provisiond.logfmt import kv
from provisiond.model.settings import Action, HookSettings, ServiceSpec, Step
from provisiond.model.work import Job, Outcome

log = logging.getLogger("provisiond.steps")


class StepError(Exception):
    """A step cannot be done, for a reason its message gives (without the step's name);
    `transient`: trying again later may succeed (a hook's exit 75)."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


# What a plan or a run raises for a reason an admin can act on (the step fails with its code
# and this message); anything else is a bug in provisiond.
STEP_ERRORS = (StepError, RenderError, PathNotAllowed, HookError, OSError)


@dataclass(frozen=True)
class Context:
    """What plans and runs need besides the job: templates, hook settings, and the entries
    that files rendered from all entries are made of."""

    env: jinja2.Environment
    hooks: HookSettings
    aggregates: Aggregates
    # files whose apply command (a render's on_change) has yet to succeed; the daemon's are
    # kept in its state directory, a preview's or a test's in memory
    applies: PendingApplies = field(default_factory=lambda: PendingApplies(None))


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What one step would do. Each step type adds its own fields."""

    step: Step
    service: ServiceSpec
    job: Job | None  # None: a file of all entries rendered again without a job

    @property
    def uuid(self) -> str:
        return self.job.uuid if self.job else ""


@dataclass(frozen=True)
class Description:
    """A plan as `provisiond render` shows it (the text and the JSON fields of one step)."""

    summary: str
    path: str | None = None
    changes: bool = False
    diff: str | None = None
    argv: list[str] | None = None
    environment: dict[str, str] | None = None
    validate: list[str] | None = None
    on_change: list[str] | None = None  # a render's apply command (run when the file changes)
    error: str | None = None  # set: the run would fail (the message, without the step name)
    skipped: str | None = None  # set: the run would skip the step, and why ("when")


@dataclass(frozen=True)
class Check:
    """One line of `provisiond check`: `run` returns a detail shown after `ok`, or raises
    HookError, OSError or RuntimeError with the reason for `FAIL`."""

    name: str
    run: Callable[[], str] = field(compare=False)


P = TypeVar("P", bound=Plan)


class StepType(ABC, Generic[P]):
    """One kind of step. Subclasses set the class attributes and implement every method."""

    name: ClassVar[str]  # the key in a step definition: `render: {...}`
    action: ClassVar[type[Action]]  # the Action it parses into (model/settings.py)
    options: ClassVar[tuple[str, ...]] = ()  # its keys beside it in the step (hook: timeout)
    touches_paths: ClassVar[bool] = True  # its paths must be inside the service's roots

    @abstractmethod
    def parse(self, data: Mapping[str, Any], where: Where, env: jinja2.Environment) -> Action:
        """The Action of a step definition `data` (the whole step: this type's key and its
        `options`) at `where`; raises ConfigError. Inline templates are compiled here."""

    @abstractmethod
    def bind_programs(self, action: Action, program: Callable[[str, Where], str],
                      where: Where) -> Action:
        """`action` with every program it runs named for good: `program(source, at)` renders
        a program name from vars at load (no LDAP value may choose which program runs)."""

    @abstractmethod
    def plan(self, ctx: Context, job: Job, step: Step, outputs: Mapping[str, Any]) -> P:
        """What `step` would do for `job`, given the hook outputs known so far. Changes
        nothing; raises one of STEP_ERRORS (or ValueError) when the step would fail."""

    @abstractmethod
    def run(self, ctx: Context, plan: P, outcome: Outcome) -> None:
        """Carry out `plan`: record changed paths and hook outputs in `outcome`; raises one
        of STEP_ERRORS when it fails."""

    @abstractmethod
    def describe(self, ctx: Context, plan: P) -> Description:
        """`plan` for a human, with what is on the host now (diffs, what exists)."""

    @abstractmethod
    def check(self, hooks: HookSettings, service: ServiceSpec, mode: str,
              step: Step) -> list[Check]:
        """What `provisiond check` verifies for `step` of `service`'s `mode`."""

    def action_of(self, step: Step) -> Any:
        """`step.action`, which is this type's Action."""
        if not isinstance(step.action, self.action):
            raise TypeError(f"step {step.name}: {type(step.action).__name__} is not a "
                            f"{self.name} step")
        return step.action


def target_path(ctx: Context, service: ServiceSpec, source: str,
                context: Mapping[str, Any]) -> Path:
    """The path template `source` rendered and confined to the service's roots."""
    text = render_string(ctx.env, source, context)
    if not service.roots:
        raise StepError(f"service {service.name} declares no roots")
    return confine(text, service.roots)


def execute(ctx: Context, plan: Plan, argv: list[str], environment: Mapping[str, str],
            timeout: float, uuid: str) -> HookResult:
    """Run a program of a step (argv[0] resolved) and log how it went."""
    result = run_hook(argv, env=environment, timeout=timeout, kill_grace=ctx.hooks.kill_grace)
    service, step = plan.service.name, plan.step.name
    log.info(kv(event="ran", service=service, uuid=uuid or None, step=step,
                argv=" ".join(result.argv), rc=result.returncode, ms=result.duration_ms,
                timed_out=result.timed_out or None))
    if result.returncode != 0 and result.output_tail.strip():
        log.info(kv(event="output", service=service, uuid=uuid or None, step=step,
                    tail=" | ".join(result.output_tail.strip().splitlines()[-5:])))
    return result


def tail(result: HookResult, lines: int) -> str:
    """The last `lines` lines of a program's output, on one line."""
    return " | ".join(result.output_tail.strip().splitlines()[-lines:])


def retry_later(what: str, result: HookResult) -> StepError:
    """A program's exit 75 as a transient failure; its last lines, the reason (bacula-sd
    busy...), go with the message, which the entry gets once the retries run out."""
    reason = tail(result, 2)
    return StepError(what + (f": {reason}" if reason else ""), transient=True)
