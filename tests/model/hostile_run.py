"""One shipped kind under hostile values, for test_hostile_values.py: its entry rendered by
the real Pipeline among the other services' entries (hostile_world.py), each file checked
(hostile_files.py), its hook argv checked, and the real validate commands run on a sample."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from provisiond import paths
from provisiond.aggregates.mirror import Member
from provisiond.core.pipeline import Pipeline, StepFailed
from provisiond.host.jinja import render_string
from provisiond.model.settings import HookAction, HookSettings, RenderAction, ServiceSpec
from provisiond.model.work import Job
from provisiond.steps.base import Context
from provisiond.steps.render import RenderPlan, RenderStep
from tests.model.hostile_files import (
    META,
    NEUTRAL,
    PREPARE,
    VALIDATE_PASSES,
    file_problems,
    neutral,
)
from tests.model.hostile_world import ENV, HOOK_OUTPUTS, World, at_site


class CapturingRender(RenderStep):
    """The real render step type; the final write keeps the file text (and the model it was
    rendered from) instead, unless `real`: then RenderStep.install runs the kind's validate
    command on it as in production, without its `on_change` (nothing is applied)."""

    def __init__(self, real: bool = False) -> None:
        self.real = real
        self.files: dict[str, str] = {}
        self.models: dict[str, dict[str, Any]] = {}

    def _install_all(self, ctx: Context, plan: RenderPlan, entries: list[Member],
                     sources: Mapping[str, list[Member]]) -> None:
        self.models[plan.template] = {**plan.context, "entries": entries, "sources": sources}
        super()._install_all(ctx, plan, entries, sources)

    def install(self, ctx: Context, plan: RenderPlan, content: bytes) -> bool:
        self.files[plan.template] = content.decode()
        self.models.setdefault(plan.template, dict(plan.context))
        if not (self.real and plan.validate):
            return True
        action = self.action_of(plan.step)
        quiet = replace(plan, step=replace(plan.step, action=replace(action, on_change=())))
        try:
            return super().install(ctx, quiet, content)
        finally:
            plan.path.unlink(missing_ok=True)  # an unchanged file would skip the next validation


def render_steps(spec: ServiceSpec) -> dict[str, ServiceSpec]:
    """Per template, `spec` with only the (first) step rendering it, as an `add` step that
    runs whatever its `when:` says (iSCSI renders tgt or SCST by a var: both are tried)."""
    steps = {step.action.template: replace(step, when=None) for mode in spec.steps.values()
             for step in mode if isinstance(step.action, RenderAction)}
    return {template: replace(spec, steps={"add": (step,)}) for template, step in steps.items()}


@dataclass
class KindRun:
    """One shipped kind under test: renders are cached by value (many raws parse the same)."""

    world: World
    renders: dict[str, ServiceSpec] = dataclasses.field(init=False)
    checked: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    to_validate: dict[tuple[str, str], dict[str, Any]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.renders = render_steps(self.world.spec)

    def render(self, values: Mapping[str, Any], only: str | None = None,
               real: bool = False) -> CapturingRender:
        """Every file of the entry with `values` (or only the file of template `only`);
        raises StepFailed as the pipeline does."""
        capture = CapturingRender(real)
        pipeline = Pipeline(ENV, HookSettings(path=(str(paths.hooks_dir()),)),
                            self.world.aggregates, types=lambda step: capture)
        for template, spec in self.renders.items():
            if only in (None, template):
                job = self.world.job(values, spec)
                assert isinstance(job, Job), job
                pipeline.aggregates.begin(job)  # as the engine does: its files list the entry
                try:
                    pipeline.run(job)
                finally:
                    pipeline.aggregates.end(job)
        return capture

    def problems(self, values: Mapping[str, Any]) -> list[str]:
        key = repr(sorted(values.items()))
        if key not in self.checked:
            self.checked[key] = self._problems(values)
        return self.checked[key]

    def _problems(self, values: Mapping[str, Any]) -> list[str]:
        compared = set(self.renders) <= NEUTRAL
        try:
            capture = self.render(values)
            plain = self.render({n: neutral(v) for n, v in values.items()}).files \
                if compared else {}
        except StepFailed as exc:
            return [f"render failed: {exc.message}"]
        except Exception as exc:  # noqa: BLE001 - the finding itself
            return [f"render crashed: {type(exc).__name__}: {exc}"]
        problems = [f"{name}: {problem}" for name, text in capture.files.items()
                    for problem in file_problems(name, text, plain.get(name) if compared
                                                 else None, capture.models[name])]
        for template, text in capture.files.items():
            if self.renders[template].steps["add"][0].action.validate:  # type: ignore[union-attr]
                self.to_validate.setdefault((template, text), dict(values))
        return problems + self.hook_problems(values)

    def hook_problems(self, values: Mapping[str, Any]) -> list[str]:
        """Every hook's argv items, rendered with the entry's references and the outputs its
        earlier hooks report: printable, no outer blank, no option made by a value, and the
        characters values put in (compared with neutral values) no quote or metacharacter,
        nor a comma in an item that joins a list with commas."""
        spec, world = self.world.spec, self.world
        job = world.job(values)
        assert isinstance(job, Job), job
        plain = Job(spec, job.uuid, job.dn, "add", {n: neutral(v) for n, v in values.items()},
                    job.refs)
        outputs = at_site(HOOK_OUTPUTS.get(world.kind, {}), world.site)
        problems = []
        hooks = {step.action.argv: step.name for mode in spec.steps.values()
                 for step in mode if isinstance(step.action, HookAction)}
        for argv, step_name in hooks.items():
            for source in argv:
                try:
                    arg = render_string(ENV, source, job.context(outputs))
                    bare = render_string(ENV, source, plain.context(outputs))
                except Exception as exc:  # noqa: BLE001 - the finding itself
                    problems.append(f"hook {step_name}: {source!r} does not render: {exc}")
                    continue
                added = {a for a, b in zip(arg, bare, strict=False) if a != b} \
                    if len(arg) == len(bare) else set()
                banned = META | ({","} if "join(','" in source else set())
                if not arg.isprintable() or arg != arg.strip() or (
                        arg.startswith("-") and not source.startswith("-")) or added & banned:
                    problems.append(f"hook {step_name}: argv item {arg!r}")
        return problems

    def validate(self, template: str, values: Mapping[str, Any]) -> str | None:
        """Run the template's validate command on the file of `values`: why its verdict is
        wrong (it refused a file it must accept, or accepted one it must refuse), or None."""
        capture = self.render(values, only=template)
        model = capture.models[template]
        if template in PREPARE:
            PREPARE[template](capture.files[template], self.world.spec, self.world.site)
        must_pass = VALIDATE_PASSES.get(template, lambda model: True)(model)
        try:
            self.render(values, only=template, real=True)
        except StepFailed as exc:
            return f"{values}: {template}'s validate command failed: {exc.message}" \
                if must_pass else None
        return None if must_pass else f"{values}: {template}'s validate command accepted it"
