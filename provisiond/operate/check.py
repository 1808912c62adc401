"""`provisiond check`: everything that can be verified before the first entry arrives.

The configuration (and every template) was already loaded and compiled to get here; this adds
what needs the outside world: what each step's type checks (the programs steps run, hooks and
render `validate` commands alike; admin hooks' owner and mode), each service's `status:`
program, the bind, the service bases, the sync control.
One line per check, `ok` or `FAIL` first, so a human and a script read it the same way. Exit
status 1 when a check failed, 69 when the only failure is the directory (sysexits' unavailable).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from functools import partial
from typing import TextIO

import ldap3

from provisiond.directory.connection import ConnectionFactory, DirectoryUnavailable
from provisiond.directory.controls import ASSERTION_OID, SYNC_REQUEST_OID
from provisiond.exitcodes import EX_UNAVAILABLE
from provisiond.host.hooks import HookError, resolve_program
from provisiond.model.settings import Config
from provisiond.steps import step_type
from provisiond.steps.base import Check


def _step_checks(config: Config) -> Iterator[Check]:
    """What each step's type checks (its programs exist, an admin hook is safe), in the order
    the steps run, then the service's `status:` program (found like a hook's), each check
    once."""
    seen: set[str] = set()
    for spec in config.services:
        checks = [check for mode in spec.lifecycle.request_names
                  for step in spec.steps_for(mode)
                  for check in step_type(step).check(config.hooks, spec, mode, step)]
        if spec.status:
            checks.append(Check(f"status program {spec.status[0]} is executable",
                                partial(resolve_program, spec.status[0], config.hooks.path)))
        for check in checks:
            if check.name not in seen:
                seen.add(check.name)
                yield check


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
    for check in _step_checks(config):
        report(check.name, check.run)
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
