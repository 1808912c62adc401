"""The state machines, as data: which modes a lifecycle has and what each one means.

A service's entries move through a lifecycle written in their mode attribute. A request
(`add`) is claimed into its working mode (`adding`) and reported into its done mode (`added`);
a failure leaves the entry at the working mode. Everything that names modes (the daemon's
search filters, the claim and report modifications, `status` categories, `retry`, the command
line's `--mode` choices) derives them from one `Lifecycle` here, so a second lifecycle is a
declaration, not a hunt through the code:

    RESOURCE   add -> adding -> added, modify -> modifying -> modified,
               delete -> deleting -> deleted
    OPERATION  add -> adding -> added (a one-shot request such as a tape load: its steps act
               once), delete -> deleting -> deleted (acknowledged, running nothing: an
               operation leaves nothing on the host to remove; removing the LDAP entry itself
               needs no request at all)

This module imports nothing, so the command line can offer the mode choices without loading
the LDAP library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# What a request does to the entry's existence, as far as files of all entries go:
# create: it exists once done; change: it exists before, during and after; remove: it stops
# existing when the request is claimed.
Effect = Literal["create", "change", "remove"]


@dataclass(frozen=True)
class Request:
    name: str  # the mode a portal writes: add
    working: str  # the mode while a daemon runs the steps, and after they failed: adding
    done: str  # the mode after success: added
    effect: Effect
    # False: the request runs no steps (a service may give none, admin hooks have no folder
    # for it): claimed and reported done, it only acknowledges (an operation's delete)
    runs_steps: bool = True

    @property
    def modes(self) -> tuple[str, str, str]:
        return (self.name, self.working, self.done)

    @property
    def alive(self) -> tuple[str, ...]:
        """The modes of this request at which the entry belongs in files of all entries: an
        entry being created is not there before it is done (a run overlays its own job), an
        entry being removed is gone from the moment it is claimed."""
        return {"create": (self.done,), "change": self.modes, "remove": (self.name,)}[self.effect]


@dataclass(frozen=True)
class Lifecycle:
    name: str
    requests: tuple[Request, ...]

    def __post_init__(self) -> None:
        modes = [mode for request in self.requests for mode in request.modes]
        # distinct, so every mode means one thing; letters only, as they go into filters as is
        if not self.requests or len(set(modes)) != len(modes) or any(
                not (mode.isascii() and mode.isalpha() and mode.islower()) for mode in modes):
            raise ValueError(f"lifecycle {self.name}: modes must be distinct lowercase words, "
                             f"at least one request: {modes}")

    # -- names -----------------------------------------------------------------------------------

    @property
    def request_names(self) -> tuple[str, ...]:
        return tuple(request.name for request in self.requests)

    @property
    def acting(self) -> tuple[str, ...]:
        """The requests that run steps: the modes `steps:` and admin hook folders may name
        with steps in them."""
        return tuple(request.name for request in self.requests if request.runs_steps)

    @property
    def modes(self) -> tuple[str, ...]:
        """Every mode, each request's three in turn (the order `status` lists them in)."""
        return tuple(mode for request in self.requests for mode in request.modes)

    @property
    def working(self) -> dict[str, str]:
        """request -> its working mode."""
        return {request.name: request.working for request in self.requests}

    @property
    def done(self) -> dict[str, str]:
        """request -> its done mode."""
        return {request.name: request.done for request in self.requests}

    @property
    def terminal(self) -> tuple[str, ...]:
        """The modes nothing leaves without a new request."""
        return tuple(self.done.values())

    @property
    def alive(self) -> tuple[str, ...]:
        """The modes of entries that exist as far as files of all entries go."""
        return tuple(mode for request in self.requests for mode in request.alive)

    def request(self, name: str) -> Request:
        """The request `name` (add/modify/delete); KeyError when this lifecycle has none."""
        for request in self.requests:
            if request.name == name:
                return request
        raise KeyError(f"lifecycle {self.name} has no request {name!r}")

    # -- reading a mode (case-insensitively: portals write `Add`) --------------------------------

    def requested(self, mode: str | None) -> str | None:
        """For a request mode (`add`), the request; else None."""
        text = (mode or "").lower()
        return text if text in self.request_names else None

    def request_at_working(self, mode: str | None) -> str | None:
        """For a working mode (`adding`), the request it was claimed from; else None."""
        text = (mode or "").lower()
        return next((r.name for r in self.requests if r.working == text), None)

    def request_at_done(self, mode: str | None) -> str | None:
        """For a done mode (`added`), the request that got there; else None."""
        text = (mode or "").lower()
        return next((r.name for r in self.requests if r.done == text), None)

    # -- the daemon's search filters -------------------------------------------------------------

    def sync_filter(self, base: str, mode: str, state: str) -> str:
        """Narrow on purpose: only entries that want something done are streamed."""
        return f"(&{base}{_any(mode, self.request_names)}({state}=0))"

    def working_filter(self, base: str, mode: str) -> str:
        """Entries at a working mode: claimed, maybe stranded (recovery looks at these)."""
        return f"(&{base}{_any(mode, tuple(self.working.values()))})"

    def aggregate_filter(self, base: str, mode: str, active: str = "") -> str:
        """Entries that exist as far as aggregate files go: provisioned and not removed."""
        return f"(&{base}{_any(mode, self.alive)}{active})"


def _any(attribute: str, modes: tuple[str, ...]) -> str:
    return "(|" + "".join(f"({attribute}={mode})" for mode in modes) + ")"


RESOURCE = Lifecycle("resource", (
    Request("add", "adding", "added", "create"),
    Request("modify", "modifying", "modified", "change"),
    Request("delete", "deleting", "deleted", "remove"),
))
OPERATION = Lifecycle("operation", (
    Request("add", "adding", "added", "create"),
    Request("delete", "deleting", "deleted", "remove", runs_steps=False),
))
LIFECYCLES = {cycle.name: cycle for cycle in (RESOURCE, OPERATION)}


def request_choices() -> tuple[str, ...]:
    """Every request name of every lifecycle, in declaration order (the CLI's `--mode`)."""
    return tuple(dict.fromkeys(n for cycle in LIFECYCLES.values() for n in cycle.request_names))
