"""A render's `on_change`: the command that makes a service take up a file the render changed.

A target daemon reads its configuration only when told (`tgt-admin --update ALL`, `scstadmin
-config FILE`, a storage daemon restart), and telling it costs: a restart interrupts jobs, an
update re-creates idle targets. So the command runs once per render that changed the file,
never once per entry: a file of all entries is rendered once for every job a batch render
covers (core/batches.py), and so is its apply, whose failure fails all of those jobs (each
with its own step's code). It is part of the render step (steps/render.py), not a step
type of its own.

The command runs like a hook (the program named from vars at load, a minimal environment with
no secrets, `hooks.timeout`, exit 75 asks for a later retry, the output tail logged), and one
at a time per daemon: target tools are not safe to run concurrently. Until it succeeds the
file's apply stays pending (host/applied.py), so the next render of the file runs it again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from provisiond.host.applied import previous
from provisiond.host.hooks import EXIT_RETRY, hook_environment, resolve_program
from provisiond.logfmt import kv
from provisiond.model.work import Job
from provisiond.steps.base import Context, Plan, StepError, execute, retry_later, tail

log = logging.getLogger("provisiond.steps")

_ONE_AT_A_TIME = threading.Lock()


def run_apply(ctx: Context, plan: Plan, path: Path, argv: Sequence[str],
              entry: Job | None) -> None:
    """Run the apply command `argv` (rendered; argv[0] as configured) for the file at `path`,
    which `plan` installed or found pending; `entry`: the job of a per-entry file (None for a
    file of all entries, which no single job owns). Raises StepError when it fails, leaving
    the apply pending."""
    name = argv[0]
    program = resolve_program(name, ctx.hooks.path)
    environment = hook_environment(
        search_path=ctx.hooks.path, service=plan.service.name, mode=entry.request if entry else "",
        dn=entry.dn if entry else "", uuid=entry.uuid if entry else "", values={})
    with _ONE_AT_A_TIME:
        result = execute(ctx, plan, [program, *argv[1:]], environment, ctx.hooks.timeout,
                         uuid=entry.uuid if entry else "")
    if result.returncode == 0 and not result.timed_out:
        ctx.applies.applied(path)
        log.info(kv(event="applied", service=plan.service.name, step=plan.step.name,
                    path=str(path)))
        return
    log.warning(kv(event="apply-pending", service=plan.service.name, step=plan.step.name,
                   path=str(path), previous=str(previous(path)), rc=result.returncode,
                   msg="the next render of the file runs the apply again"))
    if result.timed_out:
        raise StepError(f"on_change {name} timed out and was killed (apply pending)")
    if result.returncode == EXIT_RETRY:
        raise retry_later(f"on_change {name} asked to retry later (exit 75; apply pending)",
                          result)
    raise StepError(f"on_change {name} exited {result.returncode} (apply pending): "
                    f"{tail(result, 2)}")
