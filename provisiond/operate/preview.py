"""`provisiond render DN`: what the daemon would do for an entry, changing nothing.

For each step of the entry's mode it shows the plan a run would carry out (the same plan,
made by the step's type in provisiond/steps), described: a render as a unified diff
against the file on disk (aggregate renders include every active entry, with this one laid
over as the daemon would), a hook as the argv it would run (with the program resolved in the
hook directories) and the PROVISIOND_* environment it would get, a mkdir or a remove as the
path and whether anything is there. Nothing is written: no file, no temp file, no LDAP modify,
no hook is run (a render's `validate` command is shown, not run).

Hooks can report outputs (`provisiond-set`) that later steps use. A preview cannot know them:
it takes the values the entry already carries, and says so when a step needs one that is unset.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, TextIO

import jinja2

from provisiond.aggregates.mirror import Aggregates, known_outputs
from provisiond.aggregates.resolver import Resolver
from provisiond.directory.access import Directory
from provisiond.directory.connection import ConnectionFactory
from provisiond.exitcodes import EX_FAILED, EX_OK
from provisiond.host.applied import PendingApplies
from provisiond.host.jinja import RenderError, make_environment
from provisiond.model import lifecycle
from provisiond.model.settings import Config, RenderAction, ServiceSpec, Step
from provisiond.model.values import InvalidValue, as_text, parse_entry, public, secret_texts
from provisiond.model.work import Job
from provisiond.operate.common import (
    OperateError,
    Reader,
    find_entry,
    terminal_safe,
)
from provisiond.operate.redaction import REDACTED, Redactor
from provisiond.steps import kind_of, step_type
from provisiond.steps.base import STEP_ERRORS, Context, Description

SECRET = REDACTED  # how a secret value shows
SECRET_DIFF = "  (no diff: the file holds secret values)\n"


@dataclass(frozen=True)
class StepPreview:
    number: int
    name: str
    kind: str
    code: int
    shown: Description  # its plan described by its type (JSON: these fields beside the above)


@dataclass
class Preview:
    dn: str
    uuid: str
    service: str
    mode: str
    mode_source: str
    entry_mode: str | None
    entry_state: str | None
    values: dict[str, str] = field(default_factory=dict)
    outputs_known: dict[str, str] = field(default_factory=dict)
    invalid: str | None = None
    waiting: str | None = None
    steps: list[StepPreview] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.invalid is None and all(step.shown.error is None for step in self.steps)


def choose_mode(state: lifecycle.EntryState, requested: str | None) -> tuple[str, str]:
    """The mode to preview and why: the one asked for, else the entry's request, else the
    request of its `-ing` or done mode (modes of the entry's lifecycle, `state.lifecycle`)."""
    modes = state.lifecycle.request_names
    if requested:
        if requested not in modes:
            raise OperateError(f"--mode {requested}: the entry's service has lifecycle "
                               f"{state.lifecycle.name}, whose modes are {', '.join(modes)}", 64)
        return requested, "--mode"
    if state.request:
        return state.request, "requested by the entry"
    if state.working_request:
        return state.working_request, f"the entry is at {state.mode}"
    if state.done_request:
        return state.done_request, f"the entry is at {state.mode}"
    raise OperateError(f"the entry's mode is {state.mode!r}; say which steps to show with "
                       f"--mode {'|'.join(modes)}", 64)


class Previewer:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.env: jinja2.Environment = make_environment(config.templates)
        self.directory = Directory(ConnectionFactory(config.ldap))
        self.aggregates = Aggregates(ConnectionFactory(config.ldap), config.services)
        self.resolver = Resolver(self.aggregates)
        # the daemon's pending applies (only looked at): an unchanged file whose apply is
        # still pending shows the command it would run again
        self.context = Context(self.env, config.hooks, self.aggregates,
                               PendingApplies(config.state_dir))

    def preview(self, reader: Reader, dn: str, mode: str | None = None) -> Preview:
        spec, entry = find_entry(self.config, reader, dn)
        state = lifecycle.read_state(spec.attributes, entry.attributes, spec.lifecycle)
        chosen, why = choose_mode(state, mode)
        result = Preview(dn=entry.dn, uuid=entry.uuid, service=spec.name, mode=chosen,
                         mode_source=why, entry_mode=state.mode, entry_state=state.state)
        try:
            values = parse_entry(spec.values, entry.attributes)
        except InvalidValue as exc:
            result.invalid = (f"validate: {exc} (the daemon would report ReturnValue "
                              f"{exc.code or spec.invalid_code})")
            return result
        found = self.resolver.check(spec, chosen, entry.dn, values)
        failure = ((found.failure, found.code) if found.failure else
                   self.resolver.clash(spec, chosen, entry.uuid, entry.dn, values)
                   or self.resolver.refused(spec, chosen, entry.dn, entry.uuid, values))
        if failure is not None:
            result.invalid = (f"validate: {failure[0]} (the daemon would report ReturnValue "
                              f"{failure[1]})")
            return result
        if found.waiting is not None:
            result.waiting = (f"{found.waiting.message} (the daemon waits, and looks again "
                              "when it is provisioned)")
        refs = found.refs
        shown = public(spec.values, values)
        result.values = {name: SECRET if value is not None and name not in shown
                         else as_text(value) for name, value in values.items()}
        unmet = lifecycle.preconditions_met(spec.preconditions.get(chosen, {}), values)
        if unmet:
            result.waiting = (f"precondition not met: {unmet} (the daemon leaves the entry "
                              "until it is)")
        outputs = known_outputs(spec.outputs, entry.attributes)
        result.outputs_known = {name: as_text(value) for name, value in outputs.items()}
        job = Job(service=spec, uuid=entry.uuid, dn=entry.dn, request=chosen, values=values,
                  refs=refs)
        steps = spec.steps_for(chosen)
        hide = Redactor(secret_texts(spec.values, values))
        for number, step in enumerate(steps, start=1):
            shown_step = self._step(job, step, outputs, number)
            result.steps.append(replace(shown_step, shown=_without(shown_step.shown, hide)))
        return result

    def _step(self, job: Job, step: Step, outputs: dict[str, Any], number: int) -> StepPreview:
        """The plan a run would make for the step, described."""
        kind = step_type(step)
        if not step.applies(job.values, job.service.vars, job.request):
            return StepPreview(number=number, name=step.name, kind=kind_of(step),
                               code=step.code, shown=Description(
                                   summary=f"skipped: its condition is false (when: "
                                           f"{step.when.source if step.when else ''})",
                                   skipped="when"))
        try:
            described = kind.describe(self.context, kind.plan(self.context, job, step, outputs))
        except RenderError as exc:
            missing = [o.name for o in job.service.outputs if o.name not in outputs]
            hint = (f" (hook outputs {', '.join(missing)} are not known before the hook "
                    "runs)" if missing and isinstance(exc.__cause__, jinja2.UndefinedError)
                    else "")
            described = Description(summary="", error=f"{exc}{hint}")
        except (*STEP_ERRORS, ValueError) as exc:
            described = Description(summary="", error=str(exc))
        if described.error:
            described = replace(described, summary=f"would fail with ReturnValue {step.code}: "
                                                   f"{described.error}")
        if described.diff and self._holds_secrets(job.service, step):
            described = replace(described, diff=SECRET_DIFF)
        return StepPreview(number=number, name=step.name, kind=kind_of(step), code=step.code,
                           shown=described)


    def _holds_secrets(self, service: ServiceSpec, step: Step) -> bool:
        """Whether the file of a render step may hold secret values: its service's, or (a file
        of all entries) those of its sources. Its diff is not shown then: the file on disk
        holds secrets no entry has any more (a changed CHAP secret) and other entries' too."""
        if not isinstance(step.action, RenderAction):
            return False
        named = {service.name, *step.action.sources}
        return any(spec.secret for other in self.config.services if other.name in named
                   for spec in other.values)


def _without(described: Description, hide: Redactor) -> Description:
    """`described` with the entry's secret values taken out of every text it shows (a CHAP
    secret in the diff of a target file, say)."""
    if not hide.secrets:
        return described

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return hide.secrets_only(value)
        if isinstance(value, list):
            return [clean(item) for item in value]
        if isinstance(value, dict):
            return {key: clean(item) for key, item in value.items()}
        return value

    return replace(described, **{f.name: clean(getattr(described, f.name))
                                 for f in fields(described)})


def format_text(preview: Preview, out: TextIO) -> None:
    print(f"entry    {terminal_safe(preview.dn)}", file=out)
    print(f"uuid     {preview.uuid}", file=out)
    print(f"service  {preview.service}: steps for {preview.mode} ({preview.mode_source}; "
          f"mode {preview.entry_mode}, state {preview.entry_state})", file=out)
    if preview.invalid:
        print(f"INVALID  {terminal_safe(preview.invalid)}", file=out)
        print("no step would run. Nothing was changed.", file=out)
        return
    values = " ".join(f"{k}={v}" for k, v in preview.values.items())
    print(f"values   {terminal_safe(values)}", file=out)
    if preview.outputs_known:
        known = " ".join(f"{k}={v}" for k, v in preview.outputs_known.items())
        print(f"outputs  {terminal_safe(known)} (as the entry has them now)", file=out)
    if preview.waiting:
        print(f"WAITING  {preview.waiting}", file=out)
    if not preview.steps:
        print(f"no steps for {preview.mode}", file=out)
    total = len(preview.steps)
    for step in preview.steps:
        print(file=out)
        print(f"step {step.number}/{total} \"{step.name}\" ({step.kind}, code {step.code}): "
              f"{terminal_safe(step.shown.summary)}", file=out)
        if step.shown.argv:
            print("  argv: " + " ".join(_quote(a) for a in step.shown.argv), file=out)
        if step.shown.validate:
            print("  validated with: " + " ".join(_quote(a) for a in step.shown.validate),
                  file=out)
        if step.shown.diff:
            out.write(step.shown.diff)
    print(file=out)
    print("preview only: nothing was written, no hook was run.", file=out)


def _quote(arg: str) -> str:
    import shlex

    return terminal_safe(shlex.quote(arg))


def format_json(preview: Preview, out: TextIO) -> None:
    data = asdict(preview)
    data["steps"] = [{**{k: v for k, v in step.items() if k != "shown"}, **step["shown"]}
                     for step in data["steps"]]
    data["complete"] = preview.complete
    json.dump(data, out, indent=2)
    out.write("\n")


def main(config: Config, dn: str, out: TextIO, *, mode: str | None = None,
         as_json: bool = False) -> int:
    with Reader(config) as reader:
        previewer = Previewer(config)
        try:
            preview = previewer.preview(reader, dn, mode)
        finally:
            previewer.directory.factory.drop_thread_connection()
    (format_json if as_json else format_text)(preview, out)
    return EX_OK if preview.complete else EX_FAILED
