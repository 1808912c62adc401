"""Outputs declared `report_to: parent`: written to the entry's parent entry, not to the entry.

A tape load is an operation entry under its library's entry (model/states.py OPERATION); what
the load finds out (the drive now holding the tape, the library's new inventory) describes the
library, not the request, so its hook reports it with `provisiond-set` like any output and the
declaration sends it up: one modify of the parent DN replacing those attributes, written before
the entry's own report, so that whoever sees the operation `added` finds the library current.

The parent write is part of reporting: an outage is waited out like the entry's report
(Reporter.report), and a write the server refuses (no such parent, an attribute its object
classes do not allow) fails the entry with a message naming the parent, the attributes and
the server's reason. The entry's report never carries these attributes. With a failure, the
parent gets the outputs declared `on_failure` (a tape inventory after a failed load) in the
same way.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from ldap3 import MODIFY_REPLACE
from ldap3.core.exceptions import LDAPException
from ldap3.utils.dn import to_dn

from provisiond.core.reporting import Reporter
from provisiond.core.runtime import ServiceRuntime
from provisiond.directory.access import Entry
from provisiond.directory.decode import dn_key
from provisiond.logfmt import kv
from provisiond.model.settings import ServiceSpec
from provisiond.model.work import Outcome

log = logging.getLogger("provisiond.engine")

Texts = Mapping[str, tuple[str, ...]]  # LDAP attribute -> its values, as a report writes them


def parent_dn(dn: str) -> str | None:
    """The DN of the entry `dn` sits under (its first RDN removed, the rest as the server
    sent it: escapes kept); None for a DN that is not one or has no parent."""
    try:
        dn_key(dn)  # the strict parser: ldap3's splitter takes anything
        rdns = to_dn(dn, decompose=False)
    except (ValueError, LDAPException):
        return None
    return ",".join(rdns[1:]) or None


def outputs(spec: ServiceSpec, outcome: Outcome | None, to: str, failed: bool = False) -> Texts:
    """The outputs a report writes to `to` (entry or parent): all reported ones on success,
    those declared `on_failure` with a failure (none when no step ran)."""
    if outcome is None:
        return {}
    return outcome.written((output for output in spec.outputs if output.report_to == to),
                           failed)


def report(reporter: Reporter, rt: ServiceRuntime, entry: Entry, texts: Texts) -> str | None:
    """Write `texts` to the entry's parent (nothing to write: nothing done). None when
    written, else why not: the message the entry fails with. Raises Interrupted like a
    report when the daemon stops while the directory is away."""
    if not texts:
        return None
    names = ", ".join(texts)
    parent = parent_dn(entry.dn)
    if parent is None:
        return f"report: {entry.dn} has no parent entry to write {names} to"
    result = reporter.report(rt, entry, {attribute: [(MODIFY_REPLACE, list(values))]
                                         for attribute, values in texts.items()}, dn=parent)
    if not result.ok:
        return (f"report to parent {parent}: the directory refused {names} "
                f"({result.description}, {result.code})")
    log.info(kv(event="parent-reported", service=rt.spec.name, dn=entry.dn, uuid=entry.uuid,
                parent=parent, attributes=names))
    return None


def with_failure(reporter: Reporter, rt: ServiceRuntime, entry: Entry, outcome: Outcome | None,
                 message: str) -> str:
    """Before a failure report: the parent's outputs declared `on_failure` written to it. The
    message the entry fails with: `message`, and why the parent was not written if it was
    refused (the failure is reported either way)."""
    refused = report(reporter, rt, entry, outputs(rt.spec, outcome, "parent", failed=True))
    return message if refused is None else f"{message}; {refused}"
