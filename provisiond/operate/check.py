"""`provisiond check`: everything that can be verified before the first entry arrives.

The configuration (and every template) was already loaded and compiled to get here; this adds
what needs the outside world: the programs steps run (hooks and render `validate` commands),
the bind, the service bases, the sync control.
One line per check, `ok` or `FAIL` first, so a human and a script read it the same way. Exit
status 1 when a check failed, 69 when the only failure is the directory (sysexits' unavailable).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

import ldap3

from provisiond.config.admin_hooks import unsafe_program
from provisiond.directory.connection import ConnectionFactory, DirectoryUnavailable
from provisiond.directory.controls import ASSERTION_OID, SYNC_REQUEST_OID
from provisiond.exitcodes import EX_UNAVAILABLE
from provisiond.host.hooks import HookError, resolve_program
from provisiond.model.settings import REQUEST_MODES, Config, HookAction, RenderAction


def _programs(config: Config) -> Iterator[tuple[str, str]]:
    """(what, program) for every hook and render `validate` command; the loader rendered
    each program name from vars, so none is a template any more."""
    for spec in config.services:
        for steps in spec.steps.values():
            for step in steps:
                if isinstance(step.action, HookAction):
                    yield "hook", step.action.argv[0]
                elif isinstance(step.action, RenderAction) and step.action.validate:
                    yield "validate program", step.action.validate[0]


def _program_checks(config: Config) -> Iterator[tuple[str, Callable[[], str]]]:
    seen: set[str] = set()
    for what, program in _programs(config):
        if program in seen:
            continue
        seen.add(program)

        def check(program: str = program) -> str:
            return resolve_program(program, config.hooks.path)

        yield f"{what} {program} is executable", check


def _admin_hook_checks(config: Config) -> Iterator[tuple[str, Callable[[], str]]]:
    """Every admin hook (the loader already refused unsafe ones; checked again here since
    `check` may run long after a reload), in the order they run."""
    for spec in config.services:
        for mode in REQUEST_MODES:
            for when, found in (("before", spec.admin_hooks.pre), ("after", spec.admin_hooks.post)):
                for step in found.get(mode, ()):
                    if not isinstance(step.action, HookAction):
                        continue
                    program = step.action.argv[0]
                    effect = (f"fails the entry with {step.code}" if step.fatal
                              else "a failure is only logged")

                    def check(program: str = program) -> str:
                        problem = unsafe_program(Path(program))
                        if problem is not None:
                            raise RuntimeError(f"{program} {problem}")
                        return ""

                    yield (f"admin hook {program} (service {spec.name}, {when} {mode}; "
                           f"{effect})"), check


def run_checks(config: Config, out: TextIO = sys.stdout) -> int:
    results: list[bool] = []

    def report(name: str, action: Callable[[], object]) -> object | None:
        try:
            detail = action()
        except (HookError, DirectoryUnavailable, OSError, RuntimeError) as exc:
            print(f"FAIL  {name}: {exc}", file=out)
            results.append(False)
            return None
        suffix = f" ({detail})" if isinstance(detail, str) and detail else ""
        print(f"ok    {name}{suffix}", file=out)
        results.append(True)
        return detail

    report(f"configuration {config.source} loads, templates compile",
           lambda: f"{len(config.services)} services")
    for name, check in (*_program_checks(config), *_admin_hook_checks(config)):
        report(name, check)
    for spec in config.services:
        for path in spec.admin_hooks.skipped:
            print(f"skip  {path}: not a run-parts name ([A-Za-z0-9_-]+), not run", file=out)

    factory = ConnectionFactory(config.ldap)
    connection = report(f"bind to {config.ldap.uri} as {config.ldap.bind_dn or 'anonymous'}",
                        lambda: factory.open())
    if isinstance(connection, ldap3.Connection):
        def root_dse() -> list[str]:
            connection.search("", "(objectClass=*)", search_scope=ldap3.BASE,
                              attributes=["supportedControl"])
            if not connection.entries:
                raise RuntimeError("cannot read the root DSE")
            return [str(v) for v in connection.entries[0]["supportedControl"].values]

        found = report("read the root DSE", root_dse)
        controls = found if isinstance(found, list) else []

        def has(oid: str, what: str) -> Callable[[], str]:
            def check() -> str:
                if oid not in controls:
                    raise RuntimeError(f"the server does not advertise {what} ({oid})")
                return oid
            return check

        report("server supports LDAP Content Synchronization (RFC 4533)",
               has(SYNC_REQUEST_OID, "the Sync Request control"))
        report("server supports the Assertion control (RFC 4528)",
               has(ASSERTION_OID, "the Assertion control"))
        for spec in config.services:
            def base_exists(base: str = spec.base) -> str:
                connection.search(base, "(objectClass=*)", search_scope=ldap3.BASE,
                                  attributes=["1.1"])
                if connection.result.get("result") != 0:
                    raise RuntimeError(f"{connection.result.get('description')}")
                return ""
            report(f"service {spec.name}: base {spec.base} exists", base_exists)
        connection.unbind()
    failed = results.count(False)
    print(f"{len(results) - failed} passed, {failed} failed", file=out)
    if failed == 1 and not isinstance(connection, ldap3.Connection):
        return EX_UNAVAILABLE  # only the directory failed: unreachable, TLS refused, bind refused
    return 0 if failed == 0 else 1
