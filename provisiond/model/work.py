"""The units the engine hands to the steps: a job (one validated entry to provision) and the
outcome of running its steps so far. Pure data, shared by the pipeline, the step types and
the aggregates (which overlay in-flight jobs on their mirrors)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from provisiond.model.settings import ServiceSpec


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
    values: dict[str, Any] = field(default_factory=dict)  # output name -> parsed value
    outputs: dict[str, str] = field(default_factory=dict)  # LDAP attribute -> value text
    changed: list[str] = field(default_factory=list)
