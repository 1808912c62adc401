"""The shipped kinds as a site runs them together, for test_hostile_values.py.

The storage kinds render files of ALL entries that read other services' entries: the iSCSI
files list the targets and, through `sources`, the LUNs with their parent target and their
disk's device (`refs`); the Bacula SD file lists tape libraries and disk repositories. A hostile
value only shows what it does inside such a file when the others are there. So a kind under
test runs beside every service it references or lists (closure over `references:` and
`sources:`), all loaded from the shipped kind files into one site directory, each service
mirroring valid entries (OTHER; and the entry under test itself with its valid values, as for
a modify, so a LUN can sit below a target under test). The real Aggregates (overlays,
references resolved by `with_refs`) and the real Resolver (the job's own `refs`) run over
those mirrors; nothing connects to LDAP, and a DN that is in no mirror "does not exist".

Values holding SITE are moved into the test's temp dir at run time (`at_site`): tape devices
and Bacula's directories must exist there for the real validators.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisiond import paths
from provisiond.aggregates.mirror import Aggregates, Member, member_of, sources_of
from provisiond.aggregates.resolver import Resolver
from provisiond.config.kind_vars import set_vars
from provisiond.config.load import find_kind
from provisiond.config.schema import Where
from provisiond.config.services import read_service
from provisiond.directory.connection import ConnectionFactory
from provisiond.host.jinja import make_environment
from provisiond.model.settings import LdapSettings, ServiceSpec
from provisiond.model.values import parse_entry
from provisiond.model.work import Job
from tests.kinds.bacula.support import with_bacula

ENV = make_environment(paths.templates_dirs())
SITE = "/srv/hostile"  # in the values below; the test's temp dir at run time
HOSTILE_UUID = "hostile-uuid"
ISCSI_BASE = "ou=targets,ou=iscsi,ou=storage,dc=example,dc=org"
TAPE_BASE = "ou=libraries,ou=tape,ou=storage,dc=example,dc=org"

# A valid raw value for every value of every shipped kind (by value name); the hostile ones
# replace one at a time. A new kind fails test_every_kind_and_template_is_covered until listed.
BENIGN: dict[str, dict[str, str]] = {
    "demo": {"name": "item-1", "size": "1G", "owner": "backup", "active": "TRUE",
             "note": "first item, see host-1:/srv/x"},
    "backup-account": {"uid": "1234567", "uid_number": "1234567", "gid_number": "1234567",
                       "quota": "1G", "hourly": "24", "daily": "7", "weekly": "4",
                       "monthly": "6", "yearly": "2", "active": "TRUE"},
    "disk-repository": {"name": "repo-1", "backend": "lvm", "pool": "vg0",
                        "type": "filesystem", "size": "10G", "active": "TRUE",
                        "bacula_device": "TRUE", "media_type": "Disk-1"},
    "iscsi-target": {"name": "target-1", "iqn": "iqn.2026-12.org.example:target-1",
                     "portals": "192.0.2.10:3260",
                     "initiators": "iqn.2026-12.org.example:host-1", "chap_user": "user-1",
                     "chap_secret": "Secret-1234567", "active": "TRUE"},
    "iscsi-lun": {"name": "lun-1", "lun": "1",
                  "disk": "cn=repo-2,ou=disks,ou=storage,dc=example,dc=org", "active": "TRUE"},
    "tape-library": {"name": "lib-1", "changer": f"{SITE}/dev/sg0",
                     "drives": f"0 {SITE}/dev/nst0", "media_type": "LTO-8", "active": "TRUE"},
    "tape-operation": {"name": "op-1", "action": "load", "slot": "3", "drive": "0",
                       "target": "9"},
}
BENIGN["backup-account-native"] = BENIGN["backup-account"]
# The other entry each service's mirror holds: the valid values with these changes. The
# other disk is the block volume the LUNs export; the other target has its own CHAP account.
OTHER: dict[str, dict[str, str]] = {
    "demo": {"name": "item-2"}, "backup-account": {"uid": "2345678"},
    "disk-repository": {"name": "repo-2", "type": "block"},
    "iscsi-target": {"name": "target-2", "iqn": "iqn.2026-12.org.example:target-2",
                     "portals": "192.0.2.20:3260", "chap_user": "user-2",
                     "chap_secret": "Other-12345678"},
    "iscsi-lun": {"name": "lun-2", "lun": "2"},
    "tape-library": {"name": "lib-2", "changer": f"{SITE}/dev/sg1",
                     "drives": f"0 {SITE}/dev/nst1"},
    "tape-operation": {"name": "op-2"},
}
OTHER["backup-account-native"] = OTHER["backup-account"]
# What the other entries' hooks reported (their outputs, as LDAP holds them).
OTHER_OUTPUTS: dict[str, dict[str, str]] = {
    "disk-repository": {"provisiondDevicePath": "/dev/vg0/repo-2", "provisiondAllocated": "1"},
}
# More entries a mirror holds (changes to the valid values, outputs): a Bacula filesystem
# repository whose mount point its hook reported.
MORE: dict[str, list[tuple[dict[str, str], dict[str, str]]]] = {
    "disk-repository": [({"name": "repo-3"}, {"provisiondPath": f"{SITE}/mount_root/repo-3"})],
}
# What the entry's earlier hooks report to its later steps (`outputs.x` in hook argv).
HOOK_OUTPUTS: dict[str, dict[str, Any]] = {
    "disk-repository": {"device": "/dev/vg0/repo-1", "path": f"{SITE}/mount_root/repo-1"},
}
# Which service's entry a kind's entries sit below (a `parent:` reference).
PARENT = {"iscsi-lun": "iscsi-target", "tape-operation": "tape-library"}
BACULA = {"bacula_sd_config": f"{SITE}/bacula_config_dir/bacula-sd.conf",
          "bacula_sd_working_directory": f"{SITE}/work",
          "bacula_sd_pid_directory": f"{SITE}/work",
          "bacula_director_password_file": f"{SITE}/etc/director.password"}
ISCSI = {"scst_config": f"{SITE}/scst_dir/scst.conf",
         "allowed_portals": ["192.0.2.10", "192.0.2.20:3260"]}
# The vars a site sets beside the roots (which load_kind moves into the site).
SITE_VARS: dict[str, dict[str, Any]] = {
    "disk-repository": BACULA, "tape-library": {**BACULA, "device_prefixes": [f"{SITE}/dev/"]},
    "iscsi-target": ISCSI, "iscsi-lun": ISCSI,
}


def at_site(value: Any, site: Path) -> Any:
    """`value` with SITE moved to `site` (in strings, lists and mappings)."""
    if isinstance(value, str):
        return value.replace(SITE, str(site))
    if isinstance(value, list | tuple):
        return [at_site(item, site) for item in value]
    if isinstance(value, Mapping):
        return {key: at_site(item, site) for key, item in value.items()}
    return value


def definition(kind: str) -> dict[str, Any]:
    """The shipped kind as a plain definition; the two kinds writing the Bacula SD file with
    its blocks (tests/kinds/bacula/kind_blocks.yaml) until the kind files have them."""
    if kind in ("tape-library", "disk-repository"):
        return with_bacula(kind)
    return copy.deepcopy(dict(find_kind(kind, Where(f"kind {kind}"))))


def load_kind(kind: str, site: Path) -> ServiceSpec:
    """The shipped kind as the daemon loads it, with its roots (`{{ vars.x }}`) and the
    SITE_VARS moved into `site`, so renders and the real validators write nowhere else."""
    where = Where(f"{kind}.yaml")
    data = definition(kind)
    data.pop("description", None)
    given = at_site(SITE_VARS.get(kind, {}), site)
    for root in data.get("roots", []):
        var = re.fullmatch(r"\{\{ *vars\.(\w+) *\}\}", root)
        assert var, f"{kind}: root {root!r} is not a plain var; teach load_kind about it"
        given[var.group(1)] = str(site / var.group(1))
    data["vars"] = set_vars(data.get("vars"), given, kind, where.child("vars"))
    return read_service(kind, data, where, ENV)


def related(kind: str) -> list[str]:
    """`kind` and every service its entries or files read, transitively (service = kind)."""
    found, todo = [kind], [kind]
    while todo:
        spec = load_kind(todo.pop(), Path(SITE))
        for name in [r.service for r in spec.references] + sorted(sources_of(spec)):
            if name not in found:
                found.append(name)
                todo.append(name)
    return found


def mirrored(kind: str, spec: ServiceSpec, parent: str | None, site: Path) -> list[Member]:
    """The entries of `kind` its mirror holds besides the one under test: OTHER and MORE."""
    found = []
    for number, (changes, outputs) in enumerate([(OTHER[kind], OTHER_OUTPUTS.get(kind, {})),
                                                 *MORE.get(kind, [])]):
        raw = {**BENIGN[kind], **changes}
        attributes = {value.attribute.lower(): (at_site(raw[value.name], site),)
                      for value in spec.values}
        attributes.update({key.lower(): (at_site(text, site),) for key, text in outputs.items()})
        dn = f"cn={raw.get('name', f'other-{number}')},{parent or spec.base}"
        values = parse_entry(spec.values, attributes)
        found.append(member_of(spec, f"other-{kind}-{number}", dn, values, attributes))
    return found


class NoDirectory:
    """The directory behind the mirrors: any DN read is not there."""

    def search(self, *args: Any, **kwargs: Any) -> list[Any]:
        del args, kwargs
        return []


class StaticAggregates(Aggregates):
    """The real Aggregates over fixed mirrors (service -> members); nothing connects."""

    def __init__(self, services: Iterable[ServiceSpec], members: Mapping[str, list[Member]]):
        super().__init__(ConnectionFactory(LdapSettings(uri="ldap://127.0.0.1:9")),
                         list(services))
        self.members = members
        self.directory = NoDirectory()  # type: ignore[assignment]

    def mirror(self, service: ServiceSpec) -> Any:
        members = {member.uuid: member for member in self.members.get(service.name, [])}

        class Static:
            store = None

            def current(self) -> dict[str, Member]:
                return dict(members)

            def current_state(self) -> tuple[dict[str, Member], set[str]]:
                return dict(members), set()  # every mirrored entry provisioned

        return Static()


@dataclass
class World:
    """The kind under test among the services it reads, each with its mirrored entries."""

    kind: str
    site: Path
    services: dict[str, ServiceSpec]
    aggregates: StaticAggregates
    dn: str  # the entry under test's DN

    @property
    def spec(self) -> ServiceSpec:
        return self.services[self.kind]

    def job(self, values: Mapping[str, Any], spec: ServiceSpec | None = None) -> Job | str:
        """The add job of the entry under test with its references resolved as the engine
        resolves them, or why the engine would not run its steps (a reference fails, or a
        `unique:` value another entry has: the entry under test is new)."""
        spec = spec or self.spec
        resolver = Resolver(self.aggregates)
        resolution = resolver.check(spec, "add", self.dn, values)
        if resolution.failure or resolution.waiting:
            return resolution.failure or f"waits: {resolution.waiting}"
        clash = resolver.clash(spec, "add", HOSTILE_UUID, self.dn, values)
        if clash is not None:
            return clash[0]
        return Job(spec, HOSTILE_UUID, self.dn, "add", values, resolution.refs)




def make_world(kind: str, site: Path) -> World:
    """`kind` beside the services it reads, loaded into `site`; each service's mirror holds
    its OTHER entry, and the kind's own the entry under test with its valid values."""
    services = {name: load_kind(name, site) for name in related(kind)}
    parents: dict[str, str] = {}  # kind -> DN of the entry its entries sit below
    for name in services:
        parent = PARENT.get(name)
        if parent in services:
            above = services[parent]
            parents[name] = (f"cn=hostile,{above.base}" if parent == kind else
                             f"cn={OTHER[parent]['name']},{above.base}")
    members = {name: mirrored(name, spec, parents.get(name), site)
               for name, spec in services.items()}
    spec = services[kind]
    dn = f"cn=hostile,{parents.get(kind) or spec.base}"
    benign = {value.attribute.lower(): [at_site(BENIGN[kind][value.name], site)]
              for value in spec.values}
    members[kind].append(member_of(spec, HOSTILE_UUID, dn, parse_entry(spec.values, benign), {}))
    return World(kind, site, services, StaticAggregates(services.values(), members), dn)


def prepare_site(site: Path) -> None:
    """What the admin provides before the SD file is checked: its directories and the
    Director's password file (root-only)."""
    for directory in ("work", "etc", "dev", "mount_root"):
        (site / directory).mkdir(parents=True, exist_ok=True)
    password = site / "etc" / "director.password"
    password.write_text('Password = "hostile-test-password"\n')
    password.chmod(0o600)


def make_devices(text: str, service: ServiceSpec, site: Path) -> None:
    """The devices and directories a rendered SD file names, inside the site only: tape
    drives and changers as character devices (the st driver's major, as a udev node would
    be), File devices' Archive Device as directories; a path no host can have (below a
    device node) is left missing, and the validator must refuse it (VALIDATE_PASSES)."""
    del service
    kind = ""
    for line in text.split("\n"):
        found = re.fullmatch(r'\s*(Device Type|Archive Device|Changer Device) = "?([^"]*)"?',
                             line)
        if not found:
            continue
        key, value = found.groups()
        path = Path(value)
        if key == "Device Type":
            kind = value
        elif not path.is_relative_to(site) or path.exists():
            continue
        else:
            try:
                if key == "Archive Device" and kind == "File":
                    path.mkdir(parents=True)
                else:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    os.mknod(path, 0o660 | 0o020000, os.makedev(9, 0))
            except (NotADirectoryError, FileExistsError):
                continue  # below a device node: no such device can exist on a host either
