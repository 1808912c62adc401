"""The demo: provisiond end to end against a private slapd, narrated.

Starts a private slapd with the project's schema and sample entries already requesting `add`,
runs `provisiond run` against it (its log lines appear on stderr as they happen), then plays
the part of a self-care portal: a new entry, a modification, a hostile value, a future
execution date and a deletion, showing each entry's state and the files written.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import ldap3
import yaml

from provisiond.testing.slapd import start_private_slapd

BASE = "ou=demo,dc=example,dc=org"
STATE = ("provisiondMode", "provisiondState", "provisiondReturnValue", "provisiondMessage")


def sample_ldif() -> str:
    entries = [f"dn: {BASE}\nobjectClass: organizationalUnit\nou: demo\n"]
    for name, size, note in (("alpha", "10G", "first sample"), ("beta", "512M", "second")):
        entries.append(
            f"dn: cn={name},{BASE}\nobjectClass: provisiondDemoItem\n"
            f"objectClass: provisiondProvisioning\ncn: {name}\nprovisiondSize: {size}\n"
            f"description: {note}\nprovisiondMode: add\nprovisiondState: 0\n"
            "provisiondExecutionDate: 0\n"
        )
    return "\n".join(entries)


def show(conn: ldap3.Connection, title: str) -> None:
    conn.search(BASE, "(objectClass=provisiondDemoItem)", attributes=list(STATE))
    print(f"\n--- {title}", flush=True)
    print(f"{'entry':8} {'mode':10} {'state':17} {'rv':3} message")
    for entry in sorted(conn.entries, key=lambda e: e.entry_dn):
        values = {a: (entry[a].value if a in entry and entry[a].value is not None else "")
                  for a in STATE}
        name = entry.entry_dn.split(",")[0][3:]
        print(f"{name:8} {values['provisiondMode']!s:10} {values['provisiondState']!s:17} "
              f"{values['provisiondReturnValue']!s:3} {values['provisiondMessage'] or ''}")


def show_files(root: Path) -> None:
    print(f"\n--- files under {root}")
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        print(f"{path.relative_to(root)}")
    index = root / "index.conf"
    if index.exists():
        print("\nindex.conf:\n" + index.read_text())


def wait(conn: ldap3.Connection, dn: str, attribute: str, value: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=[attribute])
        if conn.entries and str(conn.entries[0][attribute].value) == value:
            return
        time.sleep(0.05)
    raise SystemExit(f"demo: {dn} did not reach {attribute}={value} in {timeout}s")


def portal(conn: ldap3.Connection, dn: str, **changes: str) -> None:
    print(f"\n>>> portal writes {dn}: {changes}", flush=True)
    conn.modify(dn, {k: [(ldap3.MODIFY_REPLACE, [v])] for k, v in changes.items()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", default="demo-run", help="where the demo keeps its files")
    args = parser.parse_args(argv)
    work = Path(args.dir).resolve()
    shutil.rmtree(work, ignore_errors=True)
    (work / "root").mkdir(parents=True)
    server = start_private_slapd(extra_ldif=sample_ldif())
    daemon = None
    try:
        secret = server.write_password_file(work / "bind.secret")
        config = work / "provisiond.yaml"
        config.write_text(yaml.safe_dump({
            "ldap": {"uri": server.uri, "bind_dn": server.root_dn,
                     "bind_password_file": str(secret)},
            "state_dir": str(work / "state"),
            "logging": {"syslog_address": str(work / "no-syslog"), "level": "info"},
            "services": {"demo": {"kind": "demo", "vars": {"root": str(work / "root"),
                                                           "base": BASE}}},
        }))
        print(f"private slapd at {server.uri}; config {config}", flush=True)
        conn = ldap3.Connection(ldap3.Server(server.uri), server.root_dn, server.root_password,
                                auto_bind=True)
        show(conn, "sample entries before provisiond starts")
        daemon = subprocess.Popen([sys.executable, "-m", "provisiond", "--config", str(config),
                                   "run"], stdin=subprocess.DEVNULL)
        for name in ("alpha", "beta"):
            wait(conn, f"cn={name},{BASE}", "provisiondMode", "added")
        show(conn, "after the first sync pass")

        gamma = f"cn=gamma,{BASE}"
        tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y%m%d")
        print(f"\n>>> portal adds {gamma} (now) and cn=later (execution date {tomorrow})")
        conn.add(gamma, ["provisiondDemoItem", "provisiondProvisioning"],
                 {"provisiondSize": "1T", "provisiondMode": "add", "provisiondState": "0",
                  "provisiondExecutionDate": "0"})
        conn.add(f"cn=later,{BASE}", ["provisiondDemoItem", "provisiondProvisioning"],
                 {"provisiondSize": "1G", "provisiondMode": "add", "provisiondState": "0",
                  "provisiondExecutionDate": tomorrow})
        wait(conn, gamma, "provisiondMode", "added")
        portal(conn, f"cn=alpha,{BASE}", provisiondMode="modify", provisiondState="0",
               provisiondSize="20G")
        wait(conn, f"cn=alpha,{BASE}", "provisiondMode", "modified")
        portal(conn, f"cn=beta,{BASE}", provisiondMode="modify", provisiondState="0",
               description="x\nbackup\t/etc/\tstolen/")
        wait(conn, f"cn=beta,{BASE}", "provisiondReturnValue", "2")
        portal(conn, gamma, provisiondMode="delete", provisiondState="0",
               provisiondIsActive="FALSE")
        wait(conn, gamma, "provisiondMode", "deleted")
        show(conn, "after add, modify, a hostile value and a delete")
        show_files(work / "root")
        print("cn=later waits for its execution date; beta was rejected (ReturnValue 2) and "
              "nothing of its hostile value was written.")
        return 0
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
