"""The units the engine hands to the steps: a job (one validated entry to provision) and the
outcome of running its steps so far. Pure data, shared by the pipeline, the step types and
the aggregates (which overlay in-flight jobs on their mirrors)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from provisiond.model.settings import ServiceSpec
from provisiond.model.values import ValueSpec, as_text


@dataclass(frozen=True)
class Job:
    """One entry to provision, with its values already validated."""

    service: ServiceSpec
    uuid: str
    dn: str
    request: str  # add, modify or delete
    values: Mapping[str, Any]
    refs: Mapping[str, Any] = field(default_factory=dict)  # name -> referenced Member

    def context(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "service": self.service.name,
            "entry": {"dn": self.dn, "uuid": self.uuid, "mode": self.request},
            "values": self.values,
            "refs": self.refs,
            "vars": self.service.vars,
            "outputs": outputs,
        }


@dataclass
class Outcome:
    """Progress through a job's steps; kept across in-process retries so a transient failure
    at step N resumes at step N (after a crash, the journal resumes from the first step)."""

    next_step: int = 0
    # output name -> parsed value (a list when multi): what later steps see as `outputs`
    values: dict[str, Any] = field(default_factory=dict)
    # LDAP attribute -> its texts: what a report writes, replacing the attribute's values
    outputs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)
    # Step `batched` was done for this job by a batch render (core/batches.py), which failed
    # with `batch_error` or succeeded (None); -1: none.
    batched: int = -1
    batch_error: BaseException | None = None

    def record(self, spec: ValueSpec, value: Any) -> None:
        """A hook reported output `spec` (a parsed value, a list when multi): it replaces
        whatever an earlier step reported for it."""
        self.values[spec.name] = value
        items = value if spec.multi else [value]
        self.outputs[spec.attribute] = tuple(as_text(item) for item in items)

    def written(self, specs: Iterable[ValueSpec], failed: bool = False) -> dict[
            str, tuple[str, ...]]:
        """Attribute -> texts of the outputs among `specs` a report writes: every one
        reported on success; on failure only those declared `on_failure`."""
        return {spec.attribute: self.outputs[spec.attribute] for spec in specs
                if spec.attribute in self.outputs and (spec.on_failure or not failed)}
