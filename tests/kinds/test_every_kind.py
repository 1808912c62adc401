"""Checks every shipped kind in etc/kinds/ must pass, run against each one (a new kind gets
them by being there): it loads in a minimal configuration, every template it names compiles,
every hook program it names is shipped in scripts/ and executable, and `provisiond render`
previews a sample entry of it, in every mode it has, against a real slapd.

The sample entry is built from the kind alone: its values from the value declarations (the
first candidate its type accepts), its object classes from the kind's filter plus what the
server's schema needs to hold the values and the state attributes, its other required
attributes filled in by syntax, under the kind's default base in a slapd whose suffix is
that base's `dc=` part. A kind that references other kinds' entries (a LUN its disk and its
target) is loaded beside them, each service named after its kind as the storage kinds assume,
and previewed with provisioned sample entries of theirs to reference. A kind this cannot
serve fails with a message saying what to teach.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import ldap3
import pytest
import yaml

from provisiond.config import load_config
from provisiond.config.load import find_kind
from provisiond.config.schema import Where
from provisiond.host.jinja import make_environment
from provisiond.model.settings import Config, HookAction, RenderAction, ServiceSpec
from provisiond.model.value_types import ValueType
from provisiond.model.values import ValueSpec, as_text
from provisiond.testing.slapd import PROJECT_SCHEMA_DIR, Slapd, destroy, start_private_slapd
from tests.conftest import require_slapd
from tests.support import REPO, run_cli

KINDS_DIR = REPO / "etc" / "kinds"
SCRIPTS = REPO / "scripts"
KINDS = sorted(path.stem for path in KINDS_DIR.glob("*.yaml"))
# Every schema a shipped kind's entries need: stoney cloud's (the compatibility subset the
# backup-account kind uses) and provisiond's own.
SCHEMA_FILES = (REPO / "tests" / "schema" / "stoney-compat.ldif",
                PROJECT_SCHEMA_DIR / "provisiond.ldif")
UNREACHABLE = "ldap://127.0.0.1:1"


def test_every_kind_is_checked() -> None:
    assert KINDS, f"no kinds found in {KINDS_DIR}"
    assert {"demo", "backup-account", "backup-account-native", "disk-repository",
            "iscsi-target", "iscsi-lun", "tape-library", "tape-operation"} <= set(KINDS)


# -- loading -----------------------------------------------------------------------------------


def companions(kind: str) -> list[str]:
    """The kinds `kind` needs beside it, by the convention that a storage kind's service is
    named after its kind: every service its `references` (a dn value's or the parent's) and
    its renders' `sources` name, and theirs in turn."""
    found: list[str] = []
    todo = [kind]
    while todo:
        definition = find_kind(todo.pop(), Where("test"))
        named = [given if isinstance(given, str) else given.get("service") or given.get("parent")
                 for given in (definition.get("references") or {}).values()]
        for steps in (definition.get("steps") or {}).values():
            for step in steps if isinstance(steps, list) else ():
                named += [name for name in (step.get("render") or {}).get("sources") or []
                          if not name.endswith("?")]  # optional: a site may not have it
        for name in named:
            if name != kind and name not in found:
                found.append(name)
                todo.append(name)
    return found


def write_config(directory: Path, kind: str, vars_: dict[str, str], uri: str = UNREACHABLE,
                 bind_dn: str = "cn=admin,dc=example,dc=org", password: str = "secret") -> Path:
    """A configuration enabling `kind` and its companions, each as a service named after its
    kind, every one with the vars of `vars_` it declares."""
    directory.mkdir(parents=True, exist_ok=True)
    secret = directory / "bind.secret"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    services: dict[str, Any] = {}
    for name in (kind, *companions(kind)):
        declared = find_kind(name, Where("test")).get("vars") or {}
        given = {var: value for var, value in vars_.items() if var in declared}
        services[name] = {"kind": name, **({"vars": given} if given else {})}
    path = directory / "provisiond.yaml"
    path.write_text(yaml.safe_dump({
        "ldap": {"uri": uri, "bind_dn": bind_dn, "bind_password_file": str(secret),
                 "timeout": 5},
        "state_dir": str(directory / "state"),
        "services": services,
    }))
    return path


def root_vars(spec: ServiceSpec) -> list[str]:
    """The vars the kind's roots are made of (each root must be one var, as shipped kinds'
    `roots: ["{{ vars.x }}"]` are), so a test can move them into its temp dir."""
    names = []
    for root in spec.roots:
        found = [name for name, value in spec.vars.items()
                 if isinstance(value, str) and value and Path(value) == root]
        assert found, (f"root {root} of kind {spec.kind} is not one var: teach "
                       "tests/kinds/test_every_kind.py how to move it into a temp dir")
        names.append(found[0])
    return names


class Loaded:
    """A kind as a site enables it: `services: {KIND: {kind: KIND, vars: {...}}}` beside its
    companions, the roots of all of them moved into `directory / "site"` (nothing is written
    anywhere else)."""

    def __init__(self, kind: str, directory: Path, **ldap: str) -> None:
        defaults = load_config(write_config(directory / "defaults", kind, {}))
        self.site = directory / "site"
        self.vars = {name: str(self.site / name) for shipped in defaults.services
                     for name in root_vars(shipped)}
        self.path = write_config(directory, kind, self.vars, **ldap)
        self.config: Config = load_config(self.path)
        self.spec = self.service(kind)

    def service(self, name: str) -> ServiceSpec:
        (spec,) = [spec for spec in self.config.services if spec.name == name]
        return spec


@pytest.mark.parametrize("kind", KINDS)
def test_the_kind_loads_in_a_minimal_config(kind: str, tmp_path: Path) -> None:
    loaded = Loaded(kind, tmp_path)
    spec = loaded.spec
    assert spec.name == kind and spec.kind == kind
    assert spec.steps_for("add"), f"kind {kind} has no add steps"
    writes = any(not isinstance(step.action, HookAction)
                 for steps in spec.steps.values() for step in steps)
    assert spec.roots or not writes, f"kind {kind} writes files but declares no roots"
    assert all(root.is_relative_to(loaded.site) for root in spec.roots)
    assert spec.values, f"kind {kind} declares no values"


# -- templates and programs ------------------------------------------------------------------------


def actions(spec: ServiceSpec, kind: type[Any]) -> Iterator[Any]:
    for steps in spec.steps.values():
        for step in steps:
            if isinstance(step.action, kind):
                yield step.action


def referenced(env: jinja2.Environment, name: str) -> set[str]:
    """`name` and every template it includes, imports or extends, each compiled."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        source, _, _ = env.loader.get_source(env, current)  # type: ignore[union-attr]
        env.get_template(current)  # compiles it: a syntax error raises here
        todo += [ref for ref in jinja2.meta.find_referenced_templates(env.parse(source))
                 if ref is not None]
    return seen


@pytest.mark.parametrize("kind", KINDS)
def test_every_template_it_names_compiles(kind: str, tmp_path: Path) -> None:
    loaded = Loaded(kind, tmp_path)
    env = make_environment(loaded.config.templates)
    named = {action.template for action in actions(loaded.spec, RenderAction)}
    compiled: set[str] = set()
    for name in sorted(named):
        try:
            compiled |= referenced(env, name)
        except jinja2.TemplateError as exc:
            pytest.fail(f"kind {kind}: template {name}: {type(exc).__name__}: {exc}")
    assert named <= compiled


@pytest.mark.parametrize("kind", KINDS)
def test_every_hook_program_it_names_is_shipped_and_executable(kind: str,
                                                               tmp_path: Path) -> None:
    spec = Loaded(kind, tmp_path).spec
    programs = {action.argv[0] for action in actions(spec, HookAction)}
    problems = []
    for program in sorted(programs):
        path = Path(program) if "/" in program else SCRIPTS / program
        if not path.is_file():
            problems.append(f"{program}: {path} is not a file")
        elif not (path.stat().st_mode & 0o111 and os.access(path, os.X_OK)):
            problems.append(f"{program}: {path} is not executable")
    assert not problems, f"kind {kind}: " + "; ".join(problems)


# -- a sample entry, previewed ---------------------------------------------------------------


def _integers(value_type: Any) -> list[str]:
    return [str(n) for n in (7, 1000, 1234567, value_type.min, value_type.max) if n is not None]


def _sizes(value_type: Any) -> list[str]:
    # plain numbers of bytes: an LDAP INTEGER attribute takes nothing else
    return [str(n) for n in (2**30, value_type.min, value_type.max) if n is not None]


# Candidate raw values per type, tried in order: the first the declared type accepts (its
# min, max, pattern, choices) is the sample. A new type fails below until it is listed here.
CANDIDATES: dict[str, Callable[[Any], list[str]]] = {
    "string": lambda t: ["sample", "1234567", "Sample 1", "192.0.2.10:3260",
                         "0 /dev/tape/sample-nst", "sample-secret-1",
                         "1 Empty", "0 Empty", "20240101T000000Z"],
    "integer": _integers,
    "bytes": _sizes,
    "boolean": lambda t: ["TRUE"],
    "posix_name": lambda t: ["sample", "s1234567"],
    "path_segment": lambda t: ["sample"],
    "path": lambda t: [f"{under.rstrip('/')}/sample" for under in t.under] + ["/srv/sample"],
    "hostname": lambda t: ["host-1.example.org"],
    "iqn": lambda t: ["iqn.2003-12.org.example:sample"],
    "dn": lambda t: [f"cn=sample,{t.under}" if t.under else "cn=sample,dc=example,dc=org"],
    "enum": lambda t: list(t.choices),
    "date": lambda t: ["20240229"],
}


def sample_value(kind: str, value: ValueSpec) -> str:
    value_type: ValueType = value.type
    make = CANDIDATES.get(value_type.name)
    assert make, f"kind {kind}: no sample for type {value_type.name}: add it to CANDIDATES"
    for raw in make(value_type):
        try:
            value_type.parse(raw)
        except ValueError:
            continue
        return raw
    raise AssertionError(f"kind {kind}: no candidate fits value {value.name} "
                         f"({value_type!r}): add one to CANDIDATES")


# LDAP syntaxes (RFC 4517) of attributes a schema requires beyond the kind's values.
FILLERS = {
    "1.3.6.1.4.1.1466.115.121.1.27": "0",  # INTEGER
    "1.3.6.1.4.1.1466.115.121.1.36": "0",  # Numeric String
    "1.3.6.1.4.1.1466.115.121.1.7": "FALSE",  # Boolean
    "1.3.6.1.4.1.1466.115.121.1.24": "20240101000000Z",  # Generalized Time
}


class Schema:
    """The server's schema, for building an entry it accepts."""

    def __init__(self, server: ldap3.Server) -> None:
        schema = server.schema
        assert schema is not None, "the server published no schema"
        self.classes = {name.lower(): info for info in schema.object_classes.values()
                        for name in info.name}
        self.attributes = {name.lower(): info for info in schema.attribute_types.values()
                           for name in info.name}

    def _closure(self, names: list[str]) -> list[Any]:
        found: dict[str, Any] = {}
        todo = [name.lower() for name in names]
        while todo:
            name = todo.pop()
            if name in found or name == "top":
                continue
            info = self.classes[name]
            found[name] = info
            todo += [sup.lower() for sup in info.superior or ()]
        return list(found.values())

    def allowed(self, classes: list[str]) -> set[str]:
        return {self.canonical(a) for info in self._closure(classes)
                for a in (*(info.must_contain or ()), *(info.may_contain or ()))}

    def required(self, classes: list[str]) -> set[str]:
        return {self.canonical(a) for info in self._closure(classes)
                for a in info.must_contain or ()}

    def canonical(self, attribute: str) -> str:
        info = self.attributes.get(attribute.lower())  # operational ones may be unlisted
        return info.name[0].lower() if info else attribute.lower()

    def structural(self, classes: list[str]) -> bool:
        return any(info.kind == "STRUCTURAL" for info in self._closure(classes))

    def holding(self, attribute: str, kind: str, classes: list[str]) -> str | None:
        """The `kind` class (STRUCTURAL or AUXILIARY) allowing `attribute` that adds the fewest
        required attributes to `classes`."""
        wanted = self.canonical(attribute)
        fits = [info.name[0] for info in self.classes.values()
                if info.kind == kind and wanted in self.allowed([info.name[0]])]
        already = self.required(classes)
        fits.sort(key=lambda name: (len(self.required([name]) - already), name))
        return fits[0] if fits else None

    def filler(self, attribute: str) -> str:
        info = self.attributes[attribute.lower()]
        while info.syntax is None and info.superior:
            info = self.attributes[info.superior[0].lower()]
        return FILLERS.get(info.syntax or "", "sample")


def sample_entry(spec: ServiceSpec, schema: Schema, *, refs: dict[str, str] | None = None,
                 parent: str | None = None, provisioned: bool = False,
                 ) -> tuple[str, list[str], dict[str, str]]:
    """(DN, object classes, attributes) of an entry asking for `add`, with every value set;
    `refs`: the DN each dn value that references another service's entry names, `parent`:
    the DN it goes under (default: the service's base); `provisioned`: `added` already, with
    its outputs, as an entry other entries reference."""
    kind = spec.kind or spec.name
    refs = refs or {}
    referencing = {reference.name for reference in spec.references if not reference.parent}
    attributes = {value.attribute: refs.get(value.name) or sample_value(kind, value)
                  for value in spec.values
                  if value.name not in referencing or value.required or value.name in refs}
    state = spec.attributes
    attributes.update({state.mode: "add", state.state: "0", state.execution_date: "0"})
    if provisioned:
        attributes.update({value.attribute: sample_value(kind, value) for value in spec.outputs})
        attributes.update({state.mode: spec.lifecycle.done["add"],
                           state.state: "20240101T000000Z"})
    classes = re.findall(r"\(objectClass=([^()*]+)\)", spec.filter, re.IGNORECASE)
    rdn = spec.values[0].attribute  # the first declared value names the entry
    if not schema.structural(classes):
        structural = schema.holding(rdn, "STRUCTURAL", classes)
        assert structural, f"kind {kind}: no structural object class allows {rdn}"
        classes.append(structural)
    for attribute in attributes:
        if schema.canonical(attribute) not in schema.allowed(classes):
            auxiliary = schema.holding(attribute, "AUXILIARY", classes)
            assert auxiliary, f"kind {kind}: no object class allows {attribute}"
            classes.append(auxiliary)
    given = {schema.canonical(a) for a in attributes}
    for attribute in sorted(schema.required(classes) - given - {"objectclass"}):
        attributes[attribute] = schema.filler(attribute)
    return f"{rdn}={attributes[rdn]},{parent or spec.base}", classes, attributes


def add_referenced(loaded: Loaded, spec: ServiceSpec, schema: Schema,
                   conn: ldap3.Connection) -> tuple[dict[str, str], str | None]:
    """Provisioned sample entries of the services `spec` references (and theirs), added to
    the directory: (the DN each referencing dn value names, the parent DN or None)."""
    refs: dict[str, str] = {}
    parent = None
    for reference in spec.references:
        other = loaded.service(reference.service)
        other_refs, other_parent = add_referenced(loaded, other, schema, conn)
        dn, classes, attributes = sample_entry(other, schema, refs=other_refs,
                                               parent=other_parent, provisioned=True)
        if not conn.search(dn, "(objectClass=*)", "BASE"):
            assert conn.add(dn, classes, attributes), (other.name, conn.result, attributes)
        if reference.parent:
            parent = dn
        else:
            refs[reference.name] = dn
    return refs, parent


def suffix_of(base: str) -> str:
    parts = base.split(",")
    tail: list[str] = []
    while parts and parts[-1].strip().lower().startswith("dc="):
        tail.insert(0, parts.pop().strip())
    assert tail, f"base {base} does not end in dc= components: teach the test its suffix"
    return ",".join(tail)


def parents_ldif(base: str, suffix: str) -> str:
    """organizationalUnit entries from under the suffix down to `base`."""
    rdns = base[: -len(suffix)].rstrip(",").split(",") if base != suffix else []
    entries = []
    for depth in range(len(rdns) - 1, -1, -1):
        rdn = rdns[depth].strip()
        attribute, _, value = rdn.partition("=")
        assert attribute.lower() == "ou", f"base {base}: teach the test to make {rdn}"
        dn = ",".join([*rdns[depth:], suffix])
        entries.append(f"dn: {dn}\nobjectClass: organizationalUnit\nou: {value}\n")
    return "\n".join(entries)


@pytest.fixture
def directory_for() -> Iterator[Callable[[Loaded], Slapd]]:
    """A private slapd holding the bases of `loaded`'s services under the suffix of its
    kind's default base."""
    require_slapd()
    servers: list[Slapd] = []

    def start(loaded: Loaded) -> Slapd:
        suffix = suffix_of(loaded.spec.base)
        state = loaded.spec.attributes
        parents: dict[str, str] = {}  # each organizationalUnit once, parents first
        for spec in loaded.config.services:
            for entry in parents_ldif(spec.base, suffix).split("\n\n"):
                parents.setdefault(entry.split("\n", 1)[0], entry.strip() + "\n")
        server = start_private_slapd(
            Path(tempfile.mkdtemp(prefix="pvd-", dir="/tmp")),  # short: ldapi path limit
            extra_ldif="\n".join(parents.values()), suffix=suffix,
            root_dn=f"cn=admin,{suffix}", schema_files=SCHEMA_FILES,
            indexes=(f"{state.mode} eq", f"{state.state} eq"))
        servers.append(server)
        return server

    yield start
    for server in servers:
        destroy(server)


@pytest.mark.parametrize("kind", KINDS)
def test_render_previews_a_sample_entry_in_every_mode(
        kind: str, tmp_path: Path, directory_for: Callable[[Loaded], Slapd]) -> None:
    server = directory_for(Loaded(kind, tmp_path / "offline"))
    loaded = Loaded(kind, tmp_path, uri=server.uri, bind_dn=server.root_dn,
                    password=server.root_password)
    spec = loaded.spec
    ldap = ldap3.Server(server.uri, get_info=ldap3.SCHEMA)
    conn = ldap3.Connection(ldap, server.root_dn, server.root_password, auto_bind=True,
                            raise_exceptions=False)
    schema = Schema(ldap)
    refs, parent = add_referenced(loaded, spec, schema, conn)
    dn, classes, attributes = sample_entry(spec, schema, refs=refs, parent=parent)
    assert conn.add(dn, classes, attributes), (kind, conn.result, classes, attributes)
    values = {v.name: "***" if v.secret else as_text(v.type.parse(attributes[v.attribute]))
              for v in spec.values if v.attribute in attributes}  # as the preview shows them

    for mode in spec.steps:
        result = run_cli("--config", str(loaded.path), "render", dn, "--mode", mode, "--json")
        assert result.returncode == 0, (kind, mode, result.stdout, result.stderr)
        preview = json.loads(result.stdout)
        assert preview["complete"] is True and preview["invalid"] is None, (kind, mode, preview)
        assert (preview["service"], preview["mode"]) == (kind, mode)
        assert {name: preview["values"].get(name) for name in values} == values, (kind, mode)
        steps = spec.steps_for(mode)
        assert [s["name"] for s in preview["steps"]] == [step.name for step in steps]
        for shown, step in zip(preview["steps"], steps, strict=True):
            assert shown["error"] is None and shown["summary"], (kind, mode, shown)
            assert shown["code"] == step.code
            if shown.get("skipped"):  # its `when:` is false for the sample
                continue
            if shown["path"] is not None:
                assert Path(shown["path"]).is_relative_to(loaded.site), (kind, mode, shown)
            if isinstance(step.action, RenderAction):  # nothing on disk: all of it is new
                assert shown["changes"] and (  # a file holding secrets is not diffed
                    shown["diff"].startswith("--- /dev/null")
                    or shown["diff"] == "  (no diff: the file holds secret values)\n"), (
                    kind, mode, shown)
            if isinstance(step.action, HookAction):
                assert shown["argv"][0] == str(SCRIPTS / step.action.argv[0]) or "/" in (
                    step.action.argv[0]), (kind, mode, shown)
                assert not any("{" in arg for arg in shown["argv"]), (kind, mode, shown)
    assert not any(loaded.site.rglob("*")), "a preview wrote into the site"
