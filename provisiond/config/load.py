"""Loading the configuration: provisiond.yaml, services.d/*.yaml and shipped service kinds.

The result is a fully checked `Config`, or a `ConfigError` naming the file, the key path and
the reason; the CLI turns that into exit status 78 (EX_CONFIG) before anything starts.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from provisiond import paths
from provisiond.config import admin_hooks
from provisiond.config.files import read_yaml
from provisiond.config.schema import ConfigError, Where, read_section, sample_yaml
from provisiond.config.sections import (
    ADMIN_HOOKS,
    HOOKS,
    LDAP,
    LOGGING,
    METRICS,
    RETRY,
    SECTIONS,
    SERVICES_SAMPLE,
    SYNC,
    TOP,
)
from provisiond.config.services import read_service
from provisiond.config.syntax import check_dn, check_uri, settings_problem
from provisiond.host.jinja import make_environment
from provisiond.logfmt import check_tag, parse_syslog_address
from provisiond.model.settings import (
    Config,
    HookSettings,
    LdapSettings,
    LoggingSettings,
    MetricsSettings,
    RetrySettings,
    ServiceSpec,
    SyncSettings,
)


def _checked(check: Callable[[Any], object], value: Any, where: Where) -> None:
    """Run a check that raises ValueError, reporting it at `where`."""
    try:
        check(value)
    except ValueError as exc:
        raise where.error(str(exc)) from exc


def _absolute(path: str | None, where: Where) -> None:
    """The daemon changes to / when it detaches: a relative path would change meaning."""
    if path is not None and not os.path.isabs(path):
        raise where.error(f"must be an absolute path, not {path!r}")


def _readable_file(path: str, where: Where) -> os.stat_result:
    try:
        info = os.stat(path)
    except OSError as exc:
        raise where.error(f"cannot read {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise where.error(f"{path} is not a regular file")
    if not os.access(path, os.R_OK):
        raise where.error(f"{path} is not readable by this user")
    return info


def check_secret_file(path: str, where: Where) -> None:
    """The bind password file must exist and be private to its owner."""
    info = _readable_file(path, where)
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise where.error(
            f"{path} is accessible by group or others (mode {stat.S_IMODE(info.st_mode):04o}); "
            "chmod 600 it"
        )


def check_state_dir(path: str, where: Where) -> None:
    """The state directory must be usable by this user: an existing directory it may create
    files in, or a path whose nearest existing ancestor is such a directory (the daemon
    creates the rest with os.makedirs). Checked with os.access, without creating anything,
    so `check` and a reload leave no trace; a read-only file system fails access(2) too."""
    _absolute(path, where)
    target = Path(path)
    existing = next(p for p in (target, *target.parents) if os.path.lexists(p))
    problem = f"{path}" if existing == target else f"{path} cannot be created: {existing}"
    if not existing.is_dir():
        raise where.error(f"{problem} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise where.error(f"{problem} is not writable by this user (uid {os.geteuid()})")


def _check_hook_path(directories: tuple[str, ...], where: Where) -> None:
    for i, directory in enumerate(directories):
        _absolute(directory, where.child(i))
        if ":" in directory:
            raise where.child(i).error(f"{directory!r} contains ':', which separates PATH "
                                       "entries (hooks get this list as their PATH)")


def _check_ldap(ldap: Mapping[str, Any], where: Where) -> None:
    for key in ("uri", "write_uri"):
        if ldap[key] is not None:
            _checked(check_uri, ldap[key], where.child(key))
    if ldap["bind_dn"] is not None:
        _checked(check_dn, ldap["bind_dn"], where.child("bind_dn"))
    if ldap["bind_password_file"]:
        check_secret_file(ldap["bind_password_file"], where.child("bind_password_file"))
    if ldap["bind_dn"] and not ldap["bind_password_file"]:
        raise where.child("bind_password_file").error(
            "is required with bind_dn (the password is only ever read from a file)"
        )
    if ldap["ca_file"] is not None:
        _readable_file(ldap["ca_file"], where.child("ca_file"))
    problem = settings_problem(SimpleNamespace(**ldap))
    if problem is not None:
        raise where.child(problem[0]).error(problem[1])


# Keys whose mappings a derived kind refines entry by entry rather than replaces.
REFINED_KEYS = ("vars", "attributes", "values", "outputs", "preconditions")


def find_kind(kind: str, where: Where, seen: tuple[str, ...] = ()) -> Mapping[str, Any]:
    """The shipped definition of `kind`, with any `extends:` chain resolved."""
    if kind in seen:
        raise where.error(f"kind {kind!r} extends itself ({' -> '.join((*seen, kind))})")
    for directory in paths.kinds_dirs():
        candidate = directory / f"{kind}.yaml"
        if candidate.is_file():
            data = read_yaml(candidate)
            if not isinstance(data, Mapping):
                raise ConfigError(str(candidate), "", "a service kind must be a mapping")
            parent = data.get("extends")
            if parent is None:
                return data
            base = find_kind(str(parent), Where(str(candidate), "extends"), (*seen, kind))
            return refine(base, {k: v for k, v in data.items() if k != "extends"})
    searched = ", ".join(str(d) for d in paths.kinds_dirs())
    raise where.error(f"unknown service kind {kind!r} (searched {searched})")


def refine(base: Mapping[str, Any], derived: Mapping[str, Any]) -> dict[str, Any]:
    """`derived` over `base`: REFINED_KEYS merge per entry (a value declaration's own keys
    merge too, so `values: {quota: {attribute: x}}` renames just the attribute)."""
    merged = dict(base)
    for key, value in derived.items():
        old = base.get(key)
        if key in REFINED_KEYS and isinstance(old, Mapping) and isinstance(value, Mapping):
            merged[key] = {
                name: {**old[name], **item}
                if isinstance(old.get(name), Mapping) and isinstance(item, Mapping) else item
                for name, item in {**old, **value}.items()
            }
        else:
            merged[key] = value
    return merged


def merge_kind(data: Mapping[str, Any], where: Where) -> Mapping[str, Any]:
    """A `kind:` service starts from the shipped definition; `vars` merge key by key (and
    must be vars the kind declares) and any other key the site gives replaces the shipped one."""
    kind = data.get("kind")
    if kind is None:
        return data
    if not isinstance(kind, str):
        raise where.child("kind").error("must be a string")
    shipped = find_kind(kind, where.child("kind"))
    user_vars = data.get("vars") or {}
    if not isinstance(user_vars, Mapping):
        raise where.child("vars").error("must be a mapping")
    shipped_vars = dict(shipped.get("vars") or {})
    unknown = set(user_vars) - set(shipped_vars)
    if unknown:
        raise where.child("vars").child(sorted(unknown)[0]).error(
            f"not a var of kind {kind} (known: {', '.join(sorted(shipped_vars))})"
        )
    merged = dict(shipped)
    merged.update({k: v for k, v in data.items() if k != "vars"})
    merged["vars"] = {**shipped_vars, **user_vars}
    return merged


def _service_files(config_path: Path) -> list[Path]:
    directory = config_path.parent / "services.d"
    return sorted(directory.glob("*.yaml")) if directory.is_dir() else []


def load_config(path: Path | str | None = None, *, check_state: bool = True) -> Config:
    """The checked configuration, or ConfigError. `check_state`: the state directory must be
    writable, or creatable, by this user (what `run`, `once` and `check` need; commands that
    only read it may pass False)."""
    config_path = Path(path) if path else paths.DEFAULT_CONFIG
    top = Where(str(config_path))
    data = read_yaml(config_path)
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise top.error("the configuration must be a mapping")
    known = {section.name for section in SECTIONS} | {o.name for o in TOP.options} | {"services"}
    for key in data:
        if key not in known:
            raise top.child(str(key)).error(f"unknown key (known: {', '.join(sorted(known))})")

    ldap = read_section(LDAP, data.get("ldap"), top.child("ldap"))
    _check_ldap(ldap, top.child("ldap"))
    sync = read_section(SYNC, data.get("sync"), top.child("sync"))
    logging_ = read_section(LOGGING, data.get("logging"), top.child("logging"))
    _checked(check_tag, logging_["tag"], top.child("logging").child("tag"))
    _checked(parse_syslog_address, logging_["syslog_address"],
             top.child("logging").child("syslog_address"))
    hooks = read_section(HOOKS, data.get("hooks"), top.child("hooks"))
    _check_hook_path(hooks["path"], top.child("hooks").child("path"))
    admin = read_section(ADMIN_HOOKS, data.get("admin_hooks"), top.child("admin_hooks"))
    admin_hooks.check_dir(admin["dir"], top.child("admin_hooks").child("dir"))
    retry = read_section(RETRY, data.get("retry"), top.child("retry"))
    metrics = read_section(METRICS, data.get("metrics"), top.child("metrics"))
    _absolute(metrics["path"], top.child("metrics").child("path"))
    general = read_section(TOP, {k: v for k, v in data.items() if k in {o.name for o in TOP.options}}, top)
    for i, directory in enumerate(general["templates"] or ()):
        _absolute(directory, top.child("templates").child(i))
    _absolute(general["pid_file"], top.child("pid_file"))
    if check_state:
        check_state_dir(general["state_dir"], top.child("state_dir"))
    else:
        _absolute(general["state_dir"], top.child("state_dir"))

    templates = tuple(Path(p) for p in general["templates"]) if general["templates"] else paths.templates_dirs()
    env = make_environment(templates)

    definitions: list[tuple[str, Mapping[str, Any], Where]] = []
    services = data.get("services") or {}
    if not isinstance(services, Mapping):
        raise top.child("services").error("must be a mapping of service name to definition")
    definitions += [(str(n), d, top.child("services").child(str(n))) for n, d in services.items()]
    for extra in _service_files(config_path):
        extra_data = read_yaml(extra) or {}
        if not isinstance(extra_data, Mapping):
            raise ConfigError(str(extra), "", "must be a mapping of service name to definition")
        definitions += [(str(n), d, Where(str(extra), str(n))) for n, d in extra_data.items()]

    specs: list[ServiceSpec] = []
    overrides: list[tuple[Any, Where]] = []  # each service's own `admin_hooks:`
    for name, definition, where in definitions:
        if any(spec.name == name for spec in specs):
            raise where.error(f"service {name!r} is defined twice")
        if not isinstance(definition, Mapping):
            raise where.error("a service definition must be a mapping")
        merged = merge_kind(definition, where)
        specs.append(read_service(name, merged, where, env))
        overrides.append((merged.get("admin_hooks"), where.child("admin_hooks")))

    names = {spec.name for spec in specs}
    for spec, (_, _, where) in zip(specs, definitions, strict=True):
        for value, service in spec.references.items():
            if service not in names:
                raise where.child("references").child(value).error(
                    f"no service {service!r} (services: {', '.join(sorted(names))})")
    specs = admin_hooks.attach(specs, overrides, admin)

    state_dir = Path(general["state_dir"])
    return Config(
        source=str(config_path),
        ldap=LdapSettings(**ldap),
        sync=SyncSettings(**sync),
        state_dir=state_dir,
        workers=general["workers"],
        logging=LoggingSettings(**logging_),
        hooks=HookSettings(
            timeout=hooks["timeout"],
            path=tuple(hooks["path"]) or (str(paths.hooks_dir()),),
            kill_grace=hooks["kill_grace"],
        ),
        retry=RetrySettings(**retry),
        templates=templates,
        services=tuple(specs),
        shutdown_grace=general["shutdown_grace"],
        pid_file=Path(general["pid_file"]) if general["pid_file"] else state_dir / "provisiond.pid",
        metrics=MetricsSettings(**metrics),
    )


def sample_config() -> str:
    return sample_yaml((TOP, *SECTIONS), tail=SERVICES_SAMPLE)
