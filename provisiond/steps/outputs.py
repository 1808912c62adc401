"""What a hook's `provisiond-set NAME=VALUE` lines become: the outputs its step records.

A hook reports outputs its service declares (`outputs:`). They are written to the entry and
seen by later steps' templates and hooks, so each value is checked with its declared type like
an entry's values, and a hook's outputs are taken all or none: an undeclared name, a line that
is not NAME=VALUE, an invalid value, or a single-valued output given two different values
fails the step with a message naming the output. A `multi: true` output takes every line, in
the order printed, duplicates dropped, and replaces the attribute as a whole; `NAME=` alone
empties it. An output the hook does not print is left as it is.

A hook that fails (a non-zero exit, 75 included) still has its lines read: its outputs
declared `on_failure` are recorded for the failure report (a tape inventory after a failed
load), the others are not (a failed step's results are not the entry's). A hook that timed
out reports nothing: it was killed mid-way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from provisiond.model.values import ValueSpec, as_text
from provisiond.model.work import Outcome
from provisiond.steps.base import StepError

_SHOWN = 40  # characters of a name or value quoted in a message


def take(outcome: Outcome, specs: Sequence[ValueSpec], settings: Mapping[str, Sequence[str]],
         lost: str, failure: StepError | None = None) -> None:
    """Record in `outcome` what a hook reported (`settings`, name -> texts; `lost`: why some
    lines were not taken), or raise StepError saying why its outputs cannot be taken. When the
    hook failed (`failure`), only its `on_failure` outputs are recorded, and `failure` is
    raised, with the reason its outputs could not be taken appended if so."""
    try:
        if lost:
            raise StepError(lost)
        taken = parse(specs, settings)
    except StepError as exc:
        if failure is None:
            raise
        raise StepError(f"{failure}; {exc}", transient=failure.transient) from exc
    for spec, value in taken:
        if failure is None or spec.on_failure:
            outcome.record(spec, value)
    if failure is not None:
        raise failure


def parse(specs: Iterable[ValueSpec],
          settings: Mapping[str, Sequence[str]]) -> list[tuple[ValueSpec, Any]]:
    """Each output the hook set with its typed value (a list when multi); StepError when one
    cannot be taken."""
    declared = {spec.name: spec for spec in specs}
    taken = []
    for name, texts in settings.items():
        spec = declared.get(name)
        if spec is None:
            raise StepError(f"hook set undeclared output {_quoted(name)} (the service declares "
                            f"{', '.join(declared) or 'none'})")
        taken.append((spec, _value(spec, texts)))
    return taken


def _value(spec: ValueSpec, texts: Sequence[str]) -> Any:
    if spec.multi:
        texts = [text for text in texts if text]  # `NAME=`: no values, the attribute emptied
    values: list[Any] = []
    for text in texts:
        try:
            value = spec.type.parse(text)
        except ValueError as exc:
            raise StepError(f"output {spec.name}: {exc}") from None
        if value not in values:  # "LVM" and "lvm" of an enum ignoring case are one value
            values.append(value)
    if spec.multi:
        return values
    if len(values) > 1:
        shown = ", ".join(_quoted(as_text(value)) for value in values[:3])
        raise StepError(f"output {spec.name}: set to {len(values)} different values ({shown}"
                        f"{', ...' if len(values) > 3 else ''}); it takes one (an output "
                        "declared multi: true takes several)")
    return values[0]


def _quoted(text: str) -> str:
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "...")
