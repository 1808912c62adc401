"""Files of all entries across services, checked once every service is known (issue 11.3).

A file such as scst.conf lists the entries of several services (`render: {scope: all,
sources: [targets, luns]}`), and each of those services may render it from its own jobs. One
file must have one content whoever asks, or the jobs of two services would flip it between
two versions: so every step that writes one path (of one service or of two) must render it
alike (the same template, sources, validate, mode and on_change: equal actions), and a file
two services render is rendered as one of them renders it, its *writer*, the first in the
configuration: its `entries`, `service` and `vars` (steps/render.py `plan_all`). One writer
also means one coalesced render per path and one render per periodic refresh.

The paths compared are those the daemon writes: the path template rendered with the
service's name and vars, confined to its roots. A path that does not render here fails its
step when it runs, as before.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import ModuleType

import jinja2

from provisiond.config.schema import Problems, Where
from provisiond.host.files import PathNotAllowed, confine
from provisiond.host.jinja import RenderError, render_string
from provisiond.model.settings import RenderAction, ServiceSpec, Step


def _render() -> ModuleType:
    """The render step type, imported when services are checked, not with this module (as
    config/services.py does, for the same reason: the package is imported half-way through
    the directory layer, which the step types import)."""
    from provisiond.steps import render

    return render


# The keys a step definition writes for RenderAction fields of other names.
KEYS = {"file_mode": "mode"}


@dataclass(frozen=True)
class _Writing:
    """One step writing a file of all entries, and where it is defined."""

    spec: ServiceSpec
    mode: str
    index: int
    where: Where

    @property
    def action(self) -> RenderAction:
        action = self.spec.steps[self.mode][self.index].action
        assert isinstance(action, RenderAction)
        return action


def check_shared_files(specs: Sequence[ServiceSpec], wheres: Mapping[str, Where],
                       env: jinja2.Environment, problems: Problems) -> list[ServiceSpec]:
    """`specs` with the writer of every file several services render set on its steps;
    problems: a source of a step that can run that is not a configured service and not
    optional (`NAME?`; `wheres` has every service defined, loaded or not), two steps writing
    one path differently."""
    for spec in specs:
        for writing in _renders(spec, wheres[spec.name]):
            for i, name in enumerate(writing.action.sources):
                if name not in wheres and name not in writing.action.optional_sources:
                    problems.add(writing.where.child("sources").child(i).error(
                        f"no service {name!r} (services: {', '.join(sorted(wheres))})"))
    first: dict[Path, _Writing] = {}
    writers: dict[Path, str] = {}
    for spec in specs:
        for writing in _renders(spec, wheres[spec.name]):
            path = _path(env, spec, writing.action)
            if path is None:
                continue
            earlier = first.setdefault(path, writing)
            if earlier.spec.name != spec.name:
                writers[path] = earlier.spec.name
            differ = _differences(earlier.action, writing.action)
            if differ:
                problems.add(writing.where.error(
                    f"renders {path}, which {earlier.where.file}: {earlier.where.key} renders "
                    f"too, with a different {', '.join(differ)} (every step writing one file "
                    "must render it alike: template, sources, validate, mode and on_change)"))
    if not writers:
        return list(specs)
    return [_with_writers(env, spec, writers) for spec in specs]


def _renders(spec: ServiceSpec, where: Where) -> Iterator[_Writing]:
    """The steps of `spec` that render a file of all entries, each where it is defined (not
    those whose condition on vars is false: they never write, and their sources may name
    services a site does not have, as the Bacula SD file of a site without tapes)."""
    writing = _render().aggregate_steps(spec)
    for mode, steps in spec.steps.items():
        for i, step in enumerate(steps):
            if isinstance(step.action, RenderAction) and step.action.scope == "all" and (
                    any(step is other for other in writing)):
                yield _Writing(spec, mode, i, where.child("steps").child(mode).child(i)
                               .child("render"))


def _path(env: jinja2.Environment, spec: ServiceSpec, action: RenderAction) -> Path | None:
    """The file the daemon writes for `action` of `spec`, or None when it cannot tell."""
    try:
        context = _render().aggregate_context(spec)
        return confine(render_string(env, action.path, context), spec.roots)
    except (RenderError, PathNotAllowed, OSError):
        return None


def _differences(one: RenderAction, other: RenderAction) -> list[str]:
    """The keys in which two actions writing one file differ (their path templates may
    differ as text and still name that file; the writer is set after this check)."""
    return [KEYS.get(f.name, f.name) for f in fields(RenderAction)
            if f.name not in ("path", "writer") and getattr(one, f.name) != getattr(other, f.name)]


def _with_writers(env: jinja2.Environment, spec: ServiceSpec,
                  writers: Mapping[Path, str]) -> ServiceSpec:
    def written(step: Step) -> Step:
        action = step.action
        if not isinstance(action, RenderAction) or action.scope != "all":
            return step
        path = _path(env, spec, action)
        if path is None or path not in writers:
            return step
        return replace(step, action=replace(action, writer=writers[path]))

    return replace(spec, steps={mode: tuple(written(step) for step in steps)
                                for mode, steps in spec.steps.items()})
