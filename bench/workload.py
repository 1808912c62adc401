"""What the benchmark's daemons work on: the private slapd's entries and the generated config.

The entries are written with slapadd before slapd starts, so loading thousands of them costs
no LDAP round trips and no daemon sees them arrive: a phase's daemon starts on a directory that
already holds its work (`add` entries) and, for the `scope: all` scenario, the entries a site
has already provisioned (`added` ones, which its aggregate file must list).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from provisiond.testing.slapd import Slapd

TEMPLATES = Path(__file__).resolve().parent / "templates"
SUFFIX = "dc=example,dc=org"
DEMO_BASE = f"ou=demo,{SUFFIX}"  # latency entries (written while the daemon runs)
QUEUE_BASE = f"ou=queue,{SUFFIX}"  # throughput entries (loaded before the daemon starts)
BOUND_BASE = f"ou=bound,{SUFFIX}"  # entries the bound loop claims and reports
# The `scope: all` scenario, run twice on the same shape of directory: provisioned entries
# plus a queued burst, once without the aggregate render step and once with it.
PLAIN_BASE = f"ou=plain,{SUFFIX}"
ALL_BASE = f"ou=all,{SUFFIX}"
AGGREGATE_FILE = "all.conf"  # under the daemon's root; lists every active entry
AGGREGATE_STEP = "write index"

ITEM_CLASSES = ["provisiondDemoItem", "provisiondProvisioning"]
# How an entry this daemon (or another host's) provisioned earlier reads.
PROVISIONED = {"provisiondMode": "added", "provisiondState": "20260101T000000Z",
               "provisiondReturnValue": "0"}


def ou_ldif(base: str) -> str:
    name = base.split(",")[0].split("=", 1)[1]
    return f"dn: {base}\nobjectClass: organizationalUnit\nou: {name}\n"


def item_attributes(name: str) -> dict[str, Any]:
    return {
        "cn": name,
        "provisiondMode": "add",
        "provisiondState": "0",
        "provisiondExecutionDate": "0",
        "provisiondSize": "10M",
    }


def item_ldif(name: str, base: str, provisioned: bool = False) -> str:
    attributes = {**item_attributes(name), **(PROVISIONED if provisioned else {})}
    lines = [f"dn: cn={name},{base}", *(f"objectClass: {c}" for c in ITEM_CLASSES)]
    lines += [f"{key}: {value}" for key, value in attributes.items()]
    return "\n".join(lines) + "\n"


def directory_ldif(pending: Mapping[str, Iterable[str]],
                   provisioned: Mapping[str, Iterable[str]]) -> str:
    """`ou=demo` (as in tests/conftest.py) and every OU named, with its entries: `pending`
    ones in mode `add`, `provisioned` ones `added`."""
    parts = [ou_ldif(DEMO_BASE)]
    for base in dict.fromkeys([*pending, *provisioned]):
        parts.append(ou_ldif(base))
        parts += [item_ldif(name, base, provisioned=True) for name in provisioned.get(base, ())]
        parts += [item_ldif(name, base) for name in pending.get(base, ())]
    return "\n".join(parts)


def bench_service(base: str, root: Path, aggregate: bool = False) -> dict[str, Any]:
    """The bench-only service: one per-entry render and a no-op hook (/bin/true) per entry;
    with `aggregate`, then a render with `scope: all` of a file listing every active entry,
    as the backup-account kind (and later iSCSI and Bacula) has."""
    steps: list[dict[str, Any]] = [
        {"name": "write item file", "code": 7,
         "render": {"template": "bench/item.conf.j2",
                    "path": "{{ vars.root }}/items/{{ values.name }}.conf"}},
        {"name": "no-op hook", "code": 5, "hook": ["/bin/true", "{{ values.name }}"]},
    ]
    if aggregate:
        steps.append({"name": AGGREGATE_STEP, "code": 8,
                      "render": {"template": "bench/all.conf.j2",
                                 "path": f"{{{{ vars.root }}}}/{AGGREGATE_FILE}",
                                 "scope": "all"}})
    return {
        "base": base,
        "filter": "(objectClass=provisiondDemoItem)",
        "scope": "one",
        "attributes": {
            "mode": "provisiondMode", "state": "provisiondState",
            "execution_date": "provisiondExecutionDate",
            "return_value": "provisiondReturnValue", "message": "provisiondMessage",
        },
        "values": {
            "name": {"attribute": "cn", "type": "posix_name"},
            "size": {"attribute": "provisiondSize", "type": "bytes", "min": "1M", "max": "1P"},
        },
        "vars": {"root": str(root)},
        "roots": ["{{ vars.root }}"],
        "invalid_code": 2,
        "steps": {"add": steps},
    }


def daemon_config(workdir: Path, server: Slapd, syslog: Path, services: Mapping[str, Any],
                  **extra: Any) -> Path:
    """The daemon's configuration, written to `workdir/provisiond.yaml`: bound as the private
    slapd's root (the password in `workdir/bind.secret`, not in the file), a persistent change
    stream, its state in `workdir/state`, logging to the benchmark's syslog socket (see
    harness.SyslogCapture); `extra` adds top-level sections or replaces these (`sync=`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    secret = server.write_password_file(workdir / "bind.secret")
    config = {
        "ldap": {"uri": server.uri, "bind_dn": server.root_dn,
                 "bind_password_file": str(secret)},  # shipped default timeout (10 s)
        "sync": {"mode": "persist"},
        "state_dir": str(workdir / "state"),
        "logging": {"syslog_address": str(syslog), "level": "info"},
        **extra,
        "services": dict(services),
    }
    path = workdir / "provisiond.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def write_config(directory: Path, server: Slapd, *, mode: str, interval: float, base: str,
                 syslog: Path, workers: int, aggregate: bool = False) -> Path:
    """The configuration of a daemon of the throughput and latency scenarios."""
    root = directory / "root"
    root.mkdir(parents=True, exist_ok=True)
    return daemon_config(directory, server, syslog, {"bench": bench_service(base, root, aggregate)},
                         sync={"mode": mode, "interval": interval}, workers=workers,
                         shutdown_grace=10, templates=[str(TEMPLATES)],
                         retry={"limit": 3, "initial": 0.2, "maximum": 1},
                         hooks={"timeout": 20, "kill_grace": 1})
