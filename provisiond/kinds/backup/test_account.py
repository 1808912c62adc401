"""`provisiond test-account`: the four LDIFs that take one backup account through its life.

stoney cloud's test workflow: load `01_add_<uid>.ldif` with ldapadd, then `02_modify`,
`03_delete` and `04_remove` with ldapmodify, one at a time, watching syslog. The entries use
stoney cloud's schema (account, posixAccount, shadowAccount, sstBackup, sstProvisioning,
sstRelationship) with uid == uidNumber == gidNumber and the home in the sharded layout.
"""

from __future__ import annotations

import argparse
import base64
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from provisiond.exitcodes import EX_CANTCREAT, EX_USAGE

NAME = "test-account"
HELP = "write the four LDIFs (add, modify, delete, remove) of a test backup account"
NEEDS_CONFIG = False

DEFAULT_BASE = "ou=accounts,ou=backup,ou=services,dc=stoney-cloud,dc=org"
UID_RE = re.compile(r"[1-9][0-9]{5,9}")
# RFC 2849: a value is written as is only if it is ASCII without NUL, CR or LF and does not
# start with a space, ':' or '<' (or end with a space, which many tools would strip).
_SAFE_RE = re.compile(r"[\x01-\x09\x0b\x0c\x0e-\x1f\x21-\x39\x3b\x3d-\x7f][\x01-\x09\x0b\x0c\x0e-\x7f]*")
ADD_INTERVALS = {"Hourly": 0, "Daily": 7, "Weekly": 4, "Monthly": 6, "Yearly": 0}
MODIFY_INTERVALS = {"Hourly": 24, "Daily": 14}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--uid", required=True, help="account number, e.g. 1234567 (also the "
                        "uidNumber and gidNumber unless given)")
    parser.add_argument("--reseller", default="4000000", help="sstBelongsToResellerUID "
                        "(default: %(default)s)")
    parser.add_argument("--customer", default="4000001", help="sstBelongsToCustomerUID "
                        "(default: %(default)s)")
    parser.add_argument("--people", default="4000002", help="sstBelongsToPersonUID "
                        "(default: %(default)s)")
    parser.add_argument("--givenname", default="Max", help="given name, in cn and gecos "
                        "(default: %(default)s)")
    parser.add_argument("--surname", default="Muster", help="surname, in cn and gecos "
                        "(default: %(default)s)")
    parser.add_argument("--base", default=DEFAULT_BASE, help="parent DN of the account "
                        "(default: %(default)s)")
    parser.add_argument("--backup-root", default="/var/backup", help="for homeDirectory "
                        "(default: %(default)s)")
    parser.add_argument("--quota", type=int, default=1 << 30, help="sstQuota in bytes; the "
                        "modify doubles it (default: %(default)s)")
    parser.add_argument("--uid-number", type=int, help="uidNumber (default: the uid)")
    parser.add_argument("--gid-number", type=int, help="gidNumber (default: the uid)")
    parser.add_argument("--output-dir", "-o", default=".", help="where to write the files "
                        "(default: the current directory)")


def ldif_line(attribute: str, value: str) -> str:
    if _SAFE_RE.fullmatch(value) and not value.endswith(" "):
        return f"{attribute}: {value}"
    return f"{attribute}:: {base64.b64encode(value.encode()).decode('ascii')}"


def shard(uid: str) -> str:
    return f"{uid[-1]}/{uid[-3:]}/{uid[-6:-3]}/{uid}"


def _replace(dn: str, changes: Sequence[tuple[str, str]]) -> str:
    lines = [ldif_line("dn", dn), "changetype: modify"]
    for attribute, value in changes:
        lines += [f"replace: {attribute}", ldif_line(attribute, value), "-"]
    return "\n".join(lines) + "\n"


def account_ldifs(uid: str, *, reseller: str = "4000000", customer: str = "4000001",
                  people: str = "4000002", givenname: str = "Max", surname: str = "Muster",
                  base: str = DEFAULT_BASE, backup_root: str = "/var/backup",
                  quota: int = 1 << 30, uid_number: int | None = None,
                  gid_number: int | None = None) -> dict[str, str]:
    """File name -> LDIF text for the four steps of one account's life."""
    if not UID_RE.fullmatch(uid):
        raise ValueError(f"uid {uid!r}: expected 6 to 10 digits without a leading 0")
    for what, value in (("reseller", reseller), ("customer", customer), ("people", people),
                        ("givenname", givenname), ("surname", surname), ("base", base),
                        ("backup-root", backup_root)):
        if not value or not value.isprintable() or value != value.strip():
            raise ValueError(f"--{what} {value!r}: must be printable, non-empty text "
                             "without leading or trailing spaces")
    if not backup_root.startswith("/"):
        raise ValueError(f"--backup-root {backup_root!r}: must be an absolute path")
    for what, number in (("uid-number", uid_number), ("gid-number", gid_number)):
        if number is not None and not 0 < number < 2**32 - 1:
            raise ValueError(f"--{what} {number}: must be from 1 to 4294967294")
    if quota < 1 << 20:
        raise ValueError(f"--quota {quota}: must be at least 1048576 bytes (1 MiB)")
    dn = f"uid={uid},{base}"
    name = f"{givenname} {surname}"
    entry = [
        ("dn", dn),
        *(("objectClass", c) for c in ("account", "posixAccount", "shadowAccount",
                                        "sstBackup", "sstProvisioning", "sstRelationship")),
        ("uid", uid), ("cn", name),
        ("uidNumber", str(uid if uid_number is None else uid_number)),
        ("gidNumber", str(uid if gid_number is None else gid_number)),
        ("homeDirectory", f"{backup_root.rstrip('/')}/{shard(uid)}"),
        ("loginShell", "/bin/false"),
    ]
    if name.isascii():  # gecos is an IA5 string
        entry.append(("gecos", name))
    entry += [(f"sstBackupInterval{level}", str(n)) for level, n in ADD_INTERVALS.items()]
    entry += [
        ("sstBackupWarningOn", "TRUE"), ("sstBackupWarningNumbers", "3"),
        ("sstBackupWarningDays", "3"), ("sstNotificationWarningLevel", "85"),
        ("sstNotificationWarningMedium", "mail"), ("sstUseSelfcare", "TRUE"),
        ("sstUseSSH", "TRUE"), ("sstIsActive", "TRUE"), ("sstQuota", str(quota)),
        ("sstBelongsToResellerUID", reseller), ("sstBelongsToCustomerUID", customer),
        ("sstBelongsToPersonUID", people),
        ("sstProvisioningMode", "add"), ("sstProvisioningState", "0"),
        ("sstProvisioningExecutionDate", "0"),
    ]
    request = [("sstProvisioningState", "0"), ("sstProvisioningExecutionDate", "0")]
    modify = [(f"sstBackupInterval{level}", str(n)) for level, n in MODIFY_INTERVALS.items()]
    return {
        f"01_add_{uid}.ldif": "\n".join(ldif_line(a, v) for a, v in entry) + "\n",
        f"02_modify_{uid}.ldif": _replace(dn, [*modify, ("sstQuota", str(quota * 2)),
                                               ("sstProvisioningMode", "modify"), *request]),
        f"03_delete_{uid}.ldif": _replace(dn, [("sstIsActive", "FALSE"),
                                               ("sstProvisioningMode", "delete"), *request]),
        f"04_remove_{uid}.ldif": f"{ldif_line('dn', dn)}\nchangetype: delete\n",
    }


def run(args: argparse.Namespace) -> int:
    try:
        files = account_ldifs(
            args.uid, reseller=args.reseller, customer=args.customer, people=args.people,
            givenname=args.givenname, surname=args.surname, base=args.base,
            backup_root=args.backup_root, quota=args.quota, uid_number=args.uid_number,
            gid_number=args.gid_number)
    except ValueError as exc:
        print(f"provisiond test-account: {exc}", file=sys.stderr)
        return EX_USAGE
    directory = Path(args.output_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            path = directory / name
            path.write_text(text, encoding="utf-8")
            print(path)
    except OSError as exc:
        print(f"provisiond test-account: {exc.filename or directory}: {exc.strerror}",
              file=sys.stderr)
        return EX_CANTCREAT
    first = next(iter(files))
    print(f"load them in order: ldapadd -f {first}, then ldapmodify -f each of the others "
          "once the previous step is done", file=sys.stderr)
    return 0
