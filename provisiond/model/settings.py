"""The validated configuration as immutable values.

Everything downstream (engine, pipeline, CLI) receives these frozen dataclasses, never raw
YAML: once `load_config` returns, every key has been checked, every template compiled and
every default filled in, so no code path has to wonder whether an option is present.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from provisiond.model.conditions import Condition
from provisiond.model.states import RESOURCE, Lifecycle
from provisiond.model.values import ValueSpec

# The requests of the default (resource) lifecycle. A service's own, `spec.lifecycle`, decide
# the keys of its `steps`, its admin hook folders and the `--mode` its entries take.
REQUEST_MODES = RESOURCE.request_names


def read_secret(path: str) -> str:
    """The first line of the secret file, without its line ending (never logged)."""
    with open(path, encoding="utf-8") as handle:
        return handle.readline().rstrip("\r\n")


@dataclass(frozen=True)
class LdapSettings:
    uri: str
    bind_dn: str | None = None
    bind_password_file: str | None = None
    write_uri: str | None = None
    start_tls: bool = False
    ca_file: str | None = None
    timeout: float = 10.0


@dataclass(frozen=True)
class SyncSettings:
    mode: Literal["persist", "refresh", "poll"] = "persist"
    interval: float = 60.0


@dataclass(frozen=True)
class LoggingSettings:
    syslog_address: str | None = "/dev/log"
    facility: str = "daemon"
    tag: str = "provisiond"
    level: str = "info"


@dataclass(frozen=True)
class HookSettings:
    timeout: float = 300.0
    path: tuple[str, ...] = ()
    kill_grace: float = 5.0


@dataclass(frozen=True)
class RetrySettings:
    """Transient failures (hook exit 75, LDAP down) are retried with exponential backoff."""

    limit: int = 5
    initial: float = 2.0
    maximum: float = 300.0


@dataclass(frozen=True)
class MetricsSettings:
    path: str | None = None  # the Prometheus text file; None: no metrics
    interval: float = 5.0


@dataclass(frozen=True)
class StateAttributes:
    """The LDAP attribute names of the state machine; defaults are stoney cloud's."""

    mode: str = "sstProvisioningMode"
    state: str = "sstProvisioningState"
    execution_date: str = "sstProvisioningExecutionDate"
    return_value: str = "sstProvisioningReturnValue"
    message: str | None = None

    def names(self) -> tuple[str, ...]:
        base = (self.mode, self.state, self.execution_date, self.return_value)
        return base + ((self.message,) if self.message else ())


# What a step does, as its step type read it from the definition (one Action per type in
# provisiond/steps, which finds a step's type by its Action's class).


@dataclass(frozen=True)
class RenderAction:
    template: str
    path: str  # a Jinja expression source for the target path
    scope: Literal["entry", "all"] = "entry"
    validate: tuple[str, ...] = ()  # argv templates; `{{ file }}` is the temp file to check
    file_mode: int = 0o644
    # argv templates (`{{ path }}`: the file) run once after a render changed the file
    # (steps/on_change.py); a failed one is pending until it succeeds (host/applied.py)
    on_change: tuple[str, ...] = ()
    # scope all: services whose active entries the template also gets, as `sources.<name>`
    sources: tuple[str, ...] = ()
    # those of `sources` a site may not have (written `NAME?`): then `sources.<name>` is []
    optional_sources: tuple[str, ...] = ()
    # set at load when several services render this file: the service (the first in the
    # configuration) whose entries, name and vars it is rendered with, whichever job asks
    writer: str = ""


@dataclass(frozen=True)
class HookAction:
    argv: tuple[str, ...]
    timeout: float | None = None


@dataclass(frozen=True)
class MkdirAction:
    path: str
    dir_mode: int = 0o755
    owner: str | None = None  # Jinja source giving a numeric uid
    group: str | None = None


@dataclass(frozen=True)
class RemoveAction:
    path: str


Action = RenderAction | HookAction | MkdirAction | RemoveAction


@dataclass(frozen=True)
class Step:
    name: str
    code: int
    action: Action
    admin: Literal["", "pre", "post"] = ""  # an admin hook (hooks.d) run before/after the steps
    fatal: bool = True  # False: a failure is logged and the entry goes on (post_failure: log)
    when: Condition | None = None  # the step runs only for jobs it holds for (model/conditions)
    serialize: str = ""  # a key template: one job at a time runs this step per key (core/serialize)

    def applies(self, values: Mapping[str, Any], vars_: Mapping[str, Any], mode: str) -> bool:
        """Whether the step runs for a job with these values, vars and request."""
        return self.when is None or self.when.holds(values, vars_, mode)


@dataclass(frozen=True)
class AdminHooks:
    """The programs an admin put in hooks.d/SERVICE/MODE.pre.d and .post.d, as steps, found
    when the configuration was loaded (see config/admin_hooks.py)."""

    pre: Mapping[str, tuple[Step, ...]] = field(default_factory=dict)  # mode -> steps
    post: Mapping[str, tuple[Step, ...]] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()  # files whose names run-parts would skip too


@dataclass(frozen=True)
class Reference:
    """Entries of another service an entry needs (`references:`): named by one of its `dn`
    values (several when the value is multi-valued), or its parent DN. Templates and hook argv
    get them as `refs.NAME` (aggregates/mirror.Member; a list for a multi-valued value). The
    entry waits while a referenced entry is being provisioned and fails with `code` when one
    cannot be (aggregates/references.py)."""

    name: str  # refs.NAME; the dn value's name unless `parent`
    service: str  # the service whose entry it must be
    code: int  # ReturnValue when it cannot resolve (the value's code, else invalid_code)
    parent: bool = False  # the entry's parent DN, not a value, names the entry
    multi: bool = False  # the dn value is multi-valued: refs.NAME is a list

    @property
    def value(self) -> str | None:
        """The dn value naming the referenced entries (None: the parent DN does)."""
        return None if self.parent else self.name


@dataclass(frozen=True)
class Unique:
    """A value no two active or in-flight entries of the service may share (`unique:`), all
    over the service or, `per_parent`, among the entries below one parent: an iSCSI target's
    IQN, a LUN number per target. The entry that came later fails with the value's code
    (aggregates/unique.py); a multi-valued value clashes when any item is another's."""

    value: str  # the declared value's name
    per_parent: bool = False  # only entries with the same parent DN compare


@dataclass(frozen=True)
class Dependents:
    """What a service's entries allow while entries of other services reference them
    (`dependents:`): a delete, and a modify of a `fixed` value, are refused with `code`."""

    code: int | None = None  # None: the service's invalid_code
    delete: Literal["refuse", "allow"] = "refuse"
    fixed: tuple[str, ...] = ()  # value names a modify may not change


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    base: str
    filter: str
    attributes: StateAttributes
    values: tuple[ValueSpec, ...]
    outputs: tuple[ValueSpec, ...]
    steps: Mapping[str, tuple[Step, ...]]
    scope: Literal["base", "one", "sub"] = "sub"
    preconditions: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    active: str = ""  # extra filter selecting the entries aggregate renders include
    roots: tuple[Path, ...] = ()
    vars: Mapping[str, Any] = field(default_factory=dict)
    recover: Literal["own", "all"] = "own"
    kind: str | None = None
    invalid_code: int = 1  # ReturnValue when a value fails validation
    references: tuple[Reference, ...] = ()  # entries of other services it needs: `refs`
    dependents: Dependents = field(default_factory=Dependents)  # when others reference it
    unique: tuple[Unique, ...] = ()  # values no two entries share (aggregates/unique.py)
    admin_hooks: AdminHooks = field(default_factory=AdminHooks)
    lifecycle: Lifecycle = RESOURCE  # the modes its entries move through (model/states.py)
    serialize: str = ""  # a key template: one job per key in the steps at a time (core/serialize)
    status: tuple[str, ...] = ()  # the argv `provisiond status` runs (operate/live.py); (): none

    @property
    def sync_filter(self) -> str:
        """Narrow on purpose: only entries that want something done are streamed."""
        return self.lifecycle.sync_filter(self.filter, self.attributes.mode,
                                          self.attributes.state)

    @property
    def working_filter(self) -> str:
        return self.lifecycle.working_filter(self.filter, self.attributes.mode)

    @property
    def aggregate_filter(self) -> str:
        """Entries that exist as far as aggregate files go: provisioned and not deleted."""
        return self.lifecycle.aggregate_filter(self.filter, self.attributes.mode, self.active)

    def ldap_attributes(self) -> tuple[str, ...]:
        names = list(self.attributes.names())
        names += [spec.attribute for spec in self.values]
        return tuple(dict.fromkeys(names))

    def mirrored_attributes(self) -> tuple[str, ...]:
        """What a mirror of its entries reads: `ldap_attributes` and the outputs, which
        entries referencing them see (`refs.NAME.outputs`)."""
        names = [*self.ldap_attributes(), *(spec.attribute for spec in self.outputs)]
        return tuple(dict.fromkeys(names))

    def steps_for(self, mode: str) -> tuple[Step, ...]:
        """What runs for `mode`: the admin's pre hooks, the service's steps, the post hooks."""
        return (*self.admin_hooks.pre.get(mode, ()), *self.steps.get(mode, ()),
                *self.admin_hooks.post.get(mode, ()))


@dataclass(frozen=True)
class Config:
    source: str
    ldap: LdapSettings
    sync: SyncSettings
    state_dir: Path
    workers: int
    logging: LoggingSettings
    hooks: HookSettings
    retry: RetrySettings
    templates: tuple[Path, ...]
    services: tuple[ServiceSpec, ...]
    shutdown_grace: float = 30.0
    pid_file: Path | None = None
    metrics: MetricsSettings = field(default_factory=MetricsSettings)

    def secrets(self) -> list[str]:
        """Strings that must never be logged (the bind password)."""
        if not self.ldap.bind_password_file:
            return []
        try:
            secret = read_secret(self.ldap.bind_password_file)
        except OSError:
            return []
        return [secret] if secret else []
