"""Loading the configuration: provisiond.yaml, services.d/*.yaml and shipped service kinds.

The result is a fully checked `Config`, or a `ConfigError` naming the file, the key path and
the reason of every problem found (each section, each service is checked even after another
failed); the CLI turns that into exit status 78 (EX_CONFIG) before anything starts.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jinja2

from provisiond import paths
from provisiond.config import admin_hooks
from provisiond.config.files import read_yaml
from provisiond.config.kind_vars import read_vars, set_vars
from provisiond.config.schema import (
    ConfigError,
    Problems,
    Section,
    Where,
    read_section,
    sample_yaml,
)
from provisiond.config.sections import (
    ADMIN_HOOKS,
    HOOKS,
    LDAP,
    LOGGING,
    METRICS,
    RETRY,
    SECTIONS,
    SYNC,
    TOP,
    services_sample,
)
from provisiond.config.services import read_service
from provisiond.config.shared_files import check_shared_files
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


def _check_ldap(ldap: Mapping[str, Any], where: Where, problems: Problems) -> None:
    """What the schema cannot say about `ldap:` (only the options it read without a problem)."""
    for key in ("uri", "write_uri"):
        if ldap.get(key) is not None:
            problems.attempt(_checked, check_uri, ldap[key], where.child(key))
    if ldap.get("bind_dn") is not None:
        problems.attempt(_checked, check_dn, ldap["bind_dn"], where.child("bind_dn"))
    if ldap.get("bind_password_file"):
        problems.attempt(check_secret_file, ldap["bind_password_file"],
                         where.child("bind_password_file"))
    if ldap.get("bind_dn") and "bind_password_file" in ldap and not ldap["bind_password_file"]:
        problems.add(where.child("bind_password_file").error(
            "is required with bind_dn (the password is only ever read from a file)"))
    if ldap.get("ca_file") is not None:
        problems.attempt(_readable_file, ldap["ca_file"], where.child("ca_file"))
    if len(ldap) == len(LDAP.options):
        problem = settings_problem(SimpleNamespace(**ldap))
        if problem is not None:
            problems.add(where.child(problem[0]).error(problem[1]))


# Keys whose mappings a derived kind refines entry by entry rather than replaces.
REFINED_KEYS = ("vars", "attributes", "values", "outputs", "preconditions")


def find_kind(kind: str, where: Where, seen: tuple[str, ...] = (),
              dirs: tuple[Path, ...] | None = None) -> Mapping[str, Any]:
    """The shipped definition of `kind`, with any `extends:` chain resolved; searched in
    `dirs` (default: /etc/provisiond/kinds, then this installation's)."""
    if kind in seen:
        raise where.error(f"kind {kind!r} extends itself ({' -> '.join((*seen, kind))})")
    dirs = paths.kinds_dirs() if dirs is None else dirs
    for directory in dirs:
        candidate = directory / f"{kind}.yaml"
        if candidate.is_file():
            data = read_yaml(candidate)
            if not isinstance(data, Mapping):
                raise ConfigError(str(candidate), "", "a service kind must be a mapping")
            data = _with_parts(data, candidate, dirs)
            parent = data.get("extends")
            if parent is None:
                return data
            base = find_kind(str(parent), Where(str(candidate), "extends"), (*seen, kind), dirs)
            return refine(base, {k: v for k, v in data.items() if k != "extends"})
    searched = ", ".join(str(d) for d in dirs)
    raise where.error(f"unknown service kind {kind!r} (searched {searched})")


# What a part (etc/kinds/parts/NAME.yaml) may give the kinds that `include:` it.
PART_KEYS = ("vars", "values", "roots")


def _with_parts(data: Mapping[str, Any], path: Path, dirs: tuple[Path, ...]) -> Mapping[str, Any]:
    """`data` with the parts it names in `include:` under it: declarations two kinds share
    (the Bacula SD vars of tape-library and disk-repository) live in one file. A part's vars
    and values are refined by the kind's own; its roots come before the kind's."""
    names = data.get("include")
    if names is None:
        return data
    where = Where(str(path), "include")
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise where.error("must be a list of part names (etc/kinds/parts/NAME.yaml)")
    merged: dict[str, Any] = {k: v for k, v in data.items() if k != "include"}
    for i, name in enumerate(names):
        found = None if "/" in name else next(  # a name, never a path out of parts/
            (d / "parts" / f"{name}.yaml" for d in dirs
             if (d / "parts" / f"{name}.yaml").is_file()), None)
        if found is None:
            raise where.child(i).error(f"no part {name!r} (searched parts/ of "
                                       f"{', '.join(str(d) for d in dirs)})")
        part = read_yaml(found)
        if not isinstance(part, Mapping) or set(part) - set(PART_KEYS):
            raise ConfigError(str(found), "", f"a part is a mapping of {', '.join(PART_KEYS)}")
        roots = [*(part.get("roots") or []), *(merged.get("roots") or [])]
        merged = refine({k: v for k, v in part.items() if k != "roots"}, merged)
        if roots:
            merged["roots"] = roots
    return merged


def refine(base: Mapping[str, Any], derived: Mapping[str, Any]) -> dict[str, Any]:
    """`derived` over `base`: REFINED_KEYS merge per entry (a declaration's own keys merge
    too, so `values: {quota: {attribute: x}}` renames just the attribute, and a plain value
    over a declared var, `vars: {suffix: dc=example,dc=org}`, is its new default)."""
    merged = dict(base)
    for key, value in derived.items():
        old = base.get(key)
        if key in REFINED_KEYS and isinstance(old, Mapping) and isinstance(value, Mapping):
            merged[key] = {name: _refined(key, old.get(name), item)
                           for name, item in {**old, **value}.items()}
        else:
            merged[key] = value
    return merged


def _refined(key: str, old: Any, new: Any) -> Any:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        return {**old, **new}
    if key == "vars" and isinstance(old, Mapping) and new is not old:
        return {**old, "default": new}
    return new


def merge_kind(data: Mapping[str, Any], where: Where) -> Mapping[str, Any]:
    """A `kind:` service starts from the shipped definition: each of its `vars` must be one
    the kind declares and is checked against its type (its value becomes that var's default),
    and any other key the site gives replaces the shipped one."""
    kind = data.get("kind")
    if kind is None:
        return data
    if not isinstance(kind, str):
        raise where.child("kind").error("must be a string")
    shipped = find_kind(kind, where.child("kind"))
    merged = dict(shipped)
    merged.update({k: v for k, v in data.items() if k != "vars"})
    merged["vars"] = set_vars(shipped.get("vars"), data.get("vars"), kind, where.child("vars"))
    return merged


def _service_files(config_path: Path) -> list[Path]:
    directory = config_path.parent / "services.d"
    return sorted(directory.glob("*.yaml")) if directory.is_dir() else []


def _definitions(data: Mapping[str, Any], config_path: Path, top: Where,
                 problems: Problems) -> list[tuple[str, Any, Where]]:
    """(name, definition, where) of every service: `services:` and services.d/*.yaml."""
    found: list[tuple[str, Any, Where]] = []
    services = data.get("services") or {}
    if isinstance(services, Mapping):
        found += [(str(n), d, top.child("services").child(str(n))) for n, d in services.items()]
    else:
        problems.add(top.child("services").error(
            "must be a mapping of service name to definition"))
    for extra in _service_files(config_path):
        extra_data = problems.attempt(lambda extra=extra: read_yaml(extra) or {})
        if extra_data is None:
            continue
        if not isinstance(extra_data, Mapping):
            problems.add(ConfigError(str(extra), "", "must be a mapping of service name to "
                                     "definition"))
            continue
        found += [(str(n), d, Where(str(extra), str(n))) for n, d in extra_data.items()]
    return found


def _service(name: str, definition: Any, where: Where,
             env: jinja2.Environment) -> tuple[ServiceSpec, Any]:
    """The service and its own `admin_hooks:` (raw, read with the top-level settings)."""
    if not isinstance(definition, Mapping):
        raise where.error("a service definition must be a mapping")
    merged = merge_kind(definition, where)
    return read_service(name, merged, where, env), merged.get("admin_hooks")


def _services(definitions: list[tuple[str, Any, Where]], env: jinja2.Environment,
              admin: Mapping[str, Any] | None, problems: Problems) -> list[ServiceSpec]:
    specs: list[ServiceSpec] = []
    overrides: list[tuple[Any, Where]] = []  # each service's own `admin_hooks:`
    names: dict[str, Where] = {}
    for name, definition, where in definitions:
        if name in names:
            problems.add(where.error(f"service {name!r} is defined twice"))
            continue
        names[name] = where
        loaded = problems.attempt(_service, name, definition, where, env)
        if loaded is not None:
            specs.append(loaded[0])
            overrides.append((loaded[1], where.child("admin_hooks")))
    for spec in specs:
        for reference in spec.references:
            if reference.service not in names:
                problems.add(names[spec.name].child("references").child(reference.name).error(
                    f"no service {reference.service!r} (services: {', '.join(sorted(names))})"))
    specs = check_shared_files(specs, names, env, problems)  # files of several services
    if admin is None or len(specs) < len(names):
        return specs  # admin hook folders are matched against every service, once all load
    return problems.attempt(lambda: admin_hooks.attach(specs, overrides, admin)) or specs


def load_config(path: Path | str | None = None, *, check_state: bool = True) -> Config:
    """The checked configuration, or ConfigError listing every problem. `check_state`: the
    state directory must be writable, or creatable, by this user (what `run`, `once` and
    `check` need; commands that only read it may pass False)."""
    config_path = Path(path) if path else paths.DEFAULT_CONFIG
    top = Where(str(config_path))
    data = read_yaml(config_path)
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise top.error("the configuration must be a mapping")
    problems = Problems()
    known = {section.name for section in SECTIONS} | set(TOP.names()) | {"services"}
    for key in data:
        if key not in known:
            problems.add(top.child(str(key)).error(
                f"unknown key (known: {', '.join(sorted(known))})"))

    def section(schema: Section) -> dict[str, Any]:
        return read_section(schema, data.get(schema.name), top.child(schema.name), problems)

    ldap = section(LDAP)
    _check_ldap(ldap, top.child("ldap"), problems)
    sync = section(SYNC)
    logging_ = section(LOGGING)
    for key, check in (("tag", check_tag), ("syslog_address", parse_syslog_address)):
        if key in logging_:
            problems.attempt(_checked, check, logging_[key], top.child("logging").child(key))
    hooks = section(HOOKS)
    if "path" in hooks:
        problems.attempt(_check_hook_path, hooks["path"], top.child("hooks").child("path"))
    admin = section(ADMIN_HOOKS)
    if "dir" in admin:
        problems.attempt(admin_hooks.check_dir, admin["dir"], top.child("admin_hooks").child("dir"))
    retry = section(RETRY)
    metrics = section(METRICS)
    problems.attempt(_absolute, metrics.get("path"), top.child("metrics").child("path"))
    general = read_section(TOP, {k: v for k, v in data.items() if k in TOP.names()}, top,
                           problems)
    problems.attempt(_absolute, general.get("pid_file"), top.child("pid_file"))
    if "state_dir" in general:
        problems.attempt(check_state_dir if check_state else _absolute, general["state_dir"],
                         top.child("state_dir"))
    templates = paths.templates_dirs()  # the shipped ones, unless `templates` is usable
    if general.get("templates"):
        before = len(problems.found)
        for i, directory in enumerate(general["templates"]):
            problems.attempt(_absolute, directory, top.child("templates").child(i))
        if len(problems.found) == before:
            templates = tuple(Path(p) for p in general["templates"])

    definitions = _definitions(data, config_path, top, problems)
    complete = len(admin) == len(ADMIN_HOOKS.options)
    specs = _services(definitions, make_environment(templates), admin if complete else None,
                      problems)
    problems.check()

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
    return sample_yaml((TOP, *SECTIONS), tail=services_sample())


def kind_vars(kind: str) -> dict[str, Any]:
    """The typed value of every var of a shipped kind, as a service of it without `vars:`
    gets them (ConfigError if one has no default)."""
    where = Where(f"kind {kind}")
    return read_vars(find_kind(kind, where).get("vars"), where.child("vars"))
