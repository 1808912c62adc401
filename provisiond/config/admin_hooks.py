"""Admin hook directories: programs a site runs around a service's steps without editing a kind.

`DIR/SERVICE/MODE.pre.d/` runs before the service's first step, `MODE.post.d/` after its last
and before the success is reported; MODE is a request of the service's lifecycle that runs
steps (add, modify, delete; an operation's add only). Like run-parts(8): only names made of
`[A-Za-z0-9_-]` count (Debian's default rule, so `foo~`, `foo.dpkg-old` and `foo.sh` are
skipped), in C-locale order. Each program becomes an ordinary hook step (argv `PROGRAM SERVICE
MODE DN`, the hooks' environment, timeout and process-tree kill), so the pipeline, `render`
and the recovery's quiet period treat it like the steps around it.

The programs run as the daemon's user (root), so who may put a program there matters more
than anywhere else: each program, its directory, the service's directory and `DIR` itself must
be owned by root or the daemon's own user and not writable by group or others. Anything else
with a run-parts name (not executable, not a regular file, a typo in a directory name, a
directory for a service that is not configured) stops the load with the path and the reason:
a pre hook that silently never runs is a check that silently never happens.

The scan happens when the configuration loads (start, `check`, `render`, and SIGHUP), so a
program added later runs after the next reload; a program is checked again before each run.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from provisiond.config.schema import ConfigError, Where, read_section
from provisiond.config.sections import SERVICE_ADMIN_HOOKS
from provisiond.model.settings import AdminHooks, HookAction, ServiceSpec, Step
from provisiond.model.states import RESOURCE, Lifecycle

RUN_PARTS_NAME = re.compile(r"[A-Za-z0-9_-]+")  # run-parts' default (no --lsbsysinit)
PHASES = ("pre", "post")
ARGV = ("{{ service }}", "{{ entry.mode }}", "{{ entry.dn }}")


def phase_dirs(cycle: Lifecycle) -> dict[str, tuple[str, str]]:
    """The folder names a service of lifecycle `cycle` may have -> (mode, phase): one pre and
    one post per request that runs steps (an operation's delete runs none, so has none)."""
    return {f"{mode}.{phase}.d": (mode, phase) for mode in cycle.acting for phase in PHASES}


@dataclass(frozen=True)
class Policy:
    pre_code: int
    post_code: int
    post_failure: str  # fail or log


def read_policy(defaults: Mapping[str, Any], data: Any, where: Where) -> Policy:
    given = read_section(SERVICE_ADMIN_HOOKS, data, where)
    merged = {key: defaults[key] if value is None else value for key, value in given.items()}
    return Policy(**merged)


def check_dir(path: str, where: Where) -> None:
    """Program paths are hook argv items, which are rendered as templates before each run."""
    if not os.path.isabs(path):
        raise where.error(f"must be an absolute path, not {path!r}")
    if "{" in path or "}" in path:
        raise where.error(f"must not contain '{{' or '}}': {path!r}")


def unsafe(path: Path, *, directory: bool = False) -> str | None:
    """Why `path` must not run (or hold programs that run), or None if it may."""
    try:
        info = os.stat(path)
    except OSError as exc:
        return f"cannot be read: {exc.strerror}"
    if directory and not stat.S_ISDIR(info.st_mode):
        return "is not a directory"
    if not directory and not stat.S_ISREG(info.st_mode):
        return "is not a regular file (only programs belong in an admin hook directory)"
    if info.st_uid not in (0, os.geteuid()):
        daemon = f" or uid {os.geteuid()} (the daemon's user)" if os.geteuid() else ""
        return f"is owned by uid {info.st_uid}, not by root{daemon}"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (f"is writable by group or others (mode {stat.S_IMODE(info.st_mode):04o}); "
                "chmod go-w it")
    if not directory and not os.access(path, os.X_OK):
        return ("is not executable (chmod +x it to run it; to disable it, rename it to a name "
                "run-parts skips, such as NAME.disabled)")
    return None


def unsafe_program(path: Path) -> str | None:
    """`unsafe` for a program; a symlink's target directory must be safe too (whoever may
    write there may replace the target)."""
    problem = unsafe(path)
    if problem is None and path.is_symlink():
        target_dir = Path(os.path.realpath(path)).parent
        if (problem := unsafe(target_dir, directory=True)) is not None:
            problem = f"points into {target_dir}, which {problem}"
    return problem


def _require(path: Path, problem: str | None) -> None:
    if problem is not None:
        raise ConfigError(str(path), "", f"admin hook {problem}")


def _steps(directory: Path, mode: str, phase: str, policy: Policy,
           skipped: list[str]) -> tuple[Step, ...]:
    steps = []
    for name in sorted(os.listdir(directory)):  # code point order: run-parts in the C locale
        path = directory / name
        if not RUN_PARTS_NAME.fullmatch(name):
            skipped.append(str(path))
            continue
        _require(path, unsafe_program(path))
        pre = phase == "pre"
        steps.append(Step(name=f"{directory.name}/{name}",
                          code=policy.pre_code if pre else policy.post_code,
                          action=HookAction(argv=(str(path), *ARGV)), admin="pre" if pre else "post",
                          fatal=pre or policy.post_failure == "fail"))
    return tuple(steps)


def scan(base: Path, policy: Policy, cycle: Lifecycle = RESOURCE) -> AdminHooks:
    """The admin hooks in `base` (DIR/SERVICE) of a service of lifecycle `cycle`, or
    ConfigError naming what is unsafe or a folder for a mode the service does not have."""
    if not os.path.lexists(base):
        return AdminHooks()
    _require(base, unsafe(base, directory=True))
    found: dict[str, dict[str, tuple[Step, ...]]] = {"pre": {}, "post": {}}
    skipped: list[str] = []
    folders = phase_dirs(cycle)
    for name in sorted(os.listdir(base)):
        if name not in folders:
            raise ConfigError(str(base / name), "", "unknown entry in an admin hook directory "
                              f"(expected {', '.join(folders)})")
        _require(base / name, unsafe(base / name, directory=True))
        mode, phase = folders[name]
        steps = _steps(base / name, mode, phase, policy, skipped)
        if steps:
            found[phase][mode] = steps
    return AdminHooks(pre=found["pre"], post=found["post"], skipped=tuple(skipped))


def attach(specs: Sequence[ServiceSpec], overrides: Sequence[tuple[Any, Where]],
           settings: Mapping[str, Any]) -> list[ServiceSpec]:
    """`specs` with their admin hooks; `overrides` is each service's `admin_hooks:` (raw) and
    where it is, `settings` the checked top-level section."""
    policies = [read_policy(settings, data, where) for data, where in overrides]
    root = Path(settings["dir"])
    if not os.path.lexists(root):
        return list(specs)
    _require(root, unsafe(root, directory=True))
    names = sorted(spec.name for spec in specs)
    for name in sorted(os.listdir(root)):
        if name not in names:
            raise ConfigError(str(root / name), "", f"no service {name!r} is configured "
                              f"(services: {', '.join(names) or 'none'}); {root} holds one "
                              "directory per service")
    return [replace(spec, admin_hooks=scan(root / spec.name, policy, spec.lifecycle))
            for spec, policy in zip(specs, policies, strict=True)]
