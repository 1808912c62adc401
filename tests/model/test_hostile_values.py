"""Thousands of hostile LDAP values through every value type and every shipped kind's templates.

Values written by self-care portals end up in rsnapshot.conf (TAB-separated), a cron.d file
and hook argv. Two properties are checked on generated values (tests/model/hostile.py, fixed seeds):

1. Every registered value type (every option set below and every one a shipped kind declares)
   either raises ValueError (InvalidValue through a ValueSpec; no other exception) with a
   single-line printable message, or returns a value whose text form is printable, has no
   outer whitespace, keeps to the type's contract (`contract()`: the characters it may carry,
   ASCII input unless the type takes any printable text) and parses back to itself.
2. For every shipped kind, entries with one hostile attribute (the others valid) go through
   parse_entry; accepted ones are rendered by the real Pipeline code (per-entry and `scope:
   all` render steps; only the final write is captured) and every file is checked: no control
   or format character, the same lines and TABs as the render of the same values with every
   character of their strings replaced by '_' (so no value adds a line or a field), each line
   valid for its file (TEMPLATE_CHECKS), and for a sample of distinct files, the kind's own
   `validate` command (`rsnapshot configtest`) through RenderStep.install. Hook argv items are
   rendered and checked too. Run with -s to see the counts.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from provisiond import paths
from provisiond.aggregates.mirror import Aggregates, Member
from provisiond.config.load import merge_kind
from provisiond.config.schema import Where
from provisiond.config.services import read_service
from provisiond.core.pipeline import Pipeline, StepFailed
from provisiond.directory.connection import ConnectionFactory
from provisiond.host.jinja import make_environment, render_string
from provisiond.model.settings import (
    HookAction,
    HookSettings,
    LdapSettings,
    RenderAction,
    ServiceSpec,
)
from provisiond.model.values import (
    TYPES,
    InvalidValue,
    ValueSpec,
    ValueType,
    as_text,
    parse_entry,
)
from provisiond.model.work import Job
from provisiond.steps.base import Context
from provisiond.steps.render import RenderPlan, RenderStep
from tests.model.hostile import hostile_values, numbers, rng_for
from tests.model.hostile_files import META, PREPARE, TEMPLATE_CHECKS, file_problems, neutral

ENV = make_environment(paths.templates_dirs())
KINDS_DIR = paths.kinds_dirs()[-1]
TEMPLATES_DIR = paths.templates_dirs()[-1]
SHIPPED_KINDS = sorted(path.stem for path in KINDS_DIR.glob("*.yaml"))
VALUES_PER_TYPE = 3000  # per option set; the fixed catalogue alone is about 2000
VALUES_PER_ATTRIBUTE = 1200
REAL_TOOL_RUNS_PER_KIND = 100

# --- value types ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Contract:
    """What an accepted value's text form may look like."""

    text: str | None  # regex the whole text form matches (re.ASCII); None: any printable text
    ascii_input: bool = True  # an accepted raw value is ASCII: no lookalike passes as its twin


SAFE_TEXT = r"(?!-)(?!(?:.*/)?\.\.(?:/|$))[A-Za-z0-9 ._@+:,=/-]+"
CHARSET_TEXT = {"safe": SAFE_TEXT, "word": r"\w+", "printable": None}


def contract(value_type: ValueType) -> Contract:
    """Each type's documented promise (value_types.py), written independently of its code."""
    name, charset = value_type.name, getattr(value_type, "charset", "safe")
    if name in ("string", "dn"):
        text = CHARSET_TEXT[charset]
        return Contract(text, ascii_input=text is not None)
    if name == "enum":
        choices = value_type.choices  # type: ignore[attr-defined]
        return Contract("|".join(map(re.escape, choices)), all(c.isascii() for c in choices))
    return Contract({
        "integer": r"-?[0-9]{1,19}",
        "bytes": r"[0-9]+",
        "boolean": r"TRUE|FALSE",
        "posix_name": r"[a-z0-9_][a-z0-9_-]{0,31}",
        "path_segment": r"[A-Za-z0-9_][A-Za-z0-9._-]*",
        "path": r"/|(?:/(?!\.\.?(?:/|$))[A-Za-z0-9._-]+)+",
        "hostname": r"[A-Za-z0-9.:-]+",
        "iqn": r"(?:iqn|eui|naa)\.[A-Za-z0-9.:-]+",
        "date": r"[0-9]{8}",
    }[name])


# Option sets tried per type (the shipped kinds' declarations are added to these) and valid
# values to mutate. A new type fails test_every_type_has_options_seeds_and_a_contract until
# it is listed here and in contract().
OPTIONS: dict[str, list[dict[str, Any]]] = {
    "string": [{}, {"charset": "word"}, {"charset": "printable"},
               {"pattern": r"[1-9]\d{5,9}", "max_length": 10},
               {"pattern": r"\d{1,7}", "charset": "printable"},
               {"pattern": "(?i)[a-z]+", "charset": "printable"}],
    "integer": [{}, {"min": 0, "max": 99}],
    "bytes": [{}, {"min": "1M", "max": "1P"}],
    "boolean": [{}],
    "posix_name": [{}, {"allow_digits_first": True}],
    "path_segment": [{}],
    "path": [{}, {"under": ["/srv/backup"]}],
    "hostname": [{}, {"allow_ip": False}],
    "iqn": [{}],
    "dn": [{}, {"charset": "printable"}, {"under": "ou=people,dc=example,dc=org"}],
    "enum": [{"choices": ["lvm", "zfs", "disk"]},
             {"choices": ["lvm", "ZFS", "disk"], "ignore_case": True}],
    "date": [{}],
}
SEEDS: dict[str, list[str]] = {
    "string": ["backup", "1234567", "Backup of host-1: daily/weekly, user@example.org", "a=b+c",
               "abc_1", 'He said "hi" {x} #1'],
    "integer": ["1234567", "0", "99", "-5", "007", "9" * 19],
    "bytes": ["512MiB", "1024", "10G", "1k", "2048B", "1KB", "2P"],
    "boolean": ["TRUE", "false", "FALSE", "True"],
    "posix_name": ["backup", "a-b_c1", "1234567", "_svc", "root"],
    "path_segment": ["backup", "file.tar.gz", "_x-1"],
    "path": ["/srv/backup/x", "/", "/srv/.snapshot/a-b_c.d"],
    "hostname": ["host-1.example.org", "192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1",
                 "xn--bcher-kva.example"],
    "iqn": ["iqn.2003-12.ch.stepping-stone:storage.disk-1:lun0", "eui.02004567A425678D",
            "naa.52004567BA64678D"],
    "dn": ["uid=x,ou=people,dc=example,dc=org", "cn=a+sn=b,dc=example,dc=org",
           "cn=Smith\\, John,ou=people,dc=example,dc=org"],
    "enum": ["zfs", "disk", "ZFS", "lvm"],
    "date": ["20240229", "19991231"],
}


def load_kind(kind: str, site: Path) -> ServiceSpec:
    """The shipped kind as the daemon loads it, with its roots (`{{ vars.x }}`) moved into
    `site` so renders and the real validator write nowhere else."""
    where = Where(f"{kind}.yaml")
    shipped = merge_kind({"kind": kind}, where)
    moved = {}
    for root in shipped.get("roots", []):
        var = re.fullmatch(r"\{\{ *vars\.(\w+) *\}\}", root)
        assert var, f"{kind}: root {root!r} is not a plain var; teach load_kind about it"
        moved[var.group(1)] = str(site / var.group(1))
    return read_service(kind, merge_kind({"kind": kind, "vars": moved}, where), where, ENV)


def type_instances() -> dict[str, list[ValueType]]:
    found: dict[str, dict[str, ValueType]] = {name: {} for name in TYPES}
    for name, option_sets in OPTIONS.items():
        for options in option_sets:
            instance = TYPES[name].from_options(options)
            found[name][repr(instance)] = instance
    for kind in SHIPPED_KINDS:
        for spec in load_kind(kind, Path("/srv/hostile")).values:
            found[spec.type.name][repr(spec.type)] = spec.type
    return {name: list(instances.values()) for name, instances in found.items()}


def message_problem(exc: InvalidValue) -> str | None:
    message = str(exc)
    if not message.isprintable() or len(message) > 400:
        return f"unsafe message {message[:120]!r}... ({len(message)} characters)"
    return None


def value_problem(value_type: ValueType, raw: str, value: Any) -> str | None:
    """Why an accepted value breaks the type's contract, or None."""
    text = as_text(value)
    rules = contract(value_type)
    if not text.isprintable() or text != text.strip():
        return f"text form {text!r} is not printable or has outer whitespace"
    if rules.text is not None and not re.fullmatch(rules.text, text, re.ASCII):
        return f"text form {text!r} outside the contract {rules.text!r}"
    if rules.text is not None and META & set(text):
        return f"text form {text!r} carries {sorted(META & set(text))}"
    pattern = getattr(value_type, "pattern", None)  # declared in ASCII terms: \d is [0-9]
    if pattern is not None and not re.fullmatch(pattern.pattern, text, re.ASCII):
        return f"text form {text!r} does not match {pattern.pattern!r} in ASCII"
    if rules.ascii_input and not raw.isascii():
        return "a non-ASCII raw value was accepted"
    try:
        again = value_type.parse(text)
    except ValueError as exc:
        return f"its text form {text!r} is rejected: {exc}"
    if again != value:
        return f"not idempotent: {text!r} parses to {again!r}, not {value!r}"
    return None


def check_type(value_type: ValueType) -> tuple[Counter[str], list[str]]:
    """Feed generated values through `value_type` (via a ValueSpec, as parse_entry does)."""
    spec = ValueSpec("value", "attribute", value_type)
    counts: Counter[str] = Counter()
    problems = []
    raws = hostile_values(SEEDS[value_type.name], VALUES_PER_TYPE, rng_for(repr(value_type)))
    for raw in raws:
        counts["tried"] += 1
        try:
            value = spec.parse_values([raw])
        except InvalidValue as exc:
            counts["rejected"] += 1
            problem = message_problem(exc)
        except Exception as exc:  # noqa: BLE001 - the finding itself
            problem = f"{type(exc).__name__} escaped: {exc}"
        else:
            counts["accepted"] += 1
            problem = value_problem(value_type, raw, value)
        if problem:
            problems.append(f"{value_type!r} <- {raw[:80]!r}: {problem}")
    return counts, problems


INSTANCES = type_instances()


def test_every_type_has_options_seeds_and_a_contract() -> None:
    assert set(OPTIONS) == set(TYPES) and set(SEEDS) == set(TYPES)
    for name, instances in INSTANCES.items():
        for instance in instances:
            contract(instance)  # KeyError: declare the contract of a new type above
        valid = [seed for seed in SEEDS[name] if any(_parses(i, seed) for i in instances)]
        assert valid == SEEDS[name], f"seeds of {name} that no option set accepts"


def _parses(value_type: ValueType, raw: str) -> bool:
    try:
        value_type.parse(raw)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("type_name", sorted(TYPES))
def test_hostile_values_never_pass_a_type(type_name: str) -> None:
    total: Counter[str] = Counter()
    problems: list[str] = []
    for instance in INSTANCES[type_name]:
        counts, found = check_type(instance)
        total += counts
        problems += found
    print(f"\n{type_name}: {len(INSTANCES[type_name])} option sets, {total['tried']} values "
          f"tried, {total['accepted']} accepted, {total['rejected']} rejected")
    assert total["tried"] >= 2000 * len(INSTANCES[type_name])
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:40])


# --- shipped kinds and their templates -------------------------------------------------------

# A valid raw value for every value of every shipped kind (by value name); the hostile ones
# replace one at a time. A new kind fails test_every_kind_and_template_is_covered until listed.
BENIGN: dict[str, dict[str, str]] = {
    "demo": {"name": "item-1", "size": "1G", "owner": "backup", "active": "TRUE",
             "note": "first item, see host-1:/srv/x"},
    "backup-account": {"uid": "1234567", "uid_number": "1234567", "gid_number": "1234567",
                       "quota": "1G", "hourly": "24", "daily": "7", "weekly": "4",
                       "monthly": "6", "yearly": "2", "active": "TRUE"},
}
BENIGN["backup-account-native"] = BENIGN["backup-account"]
# The other entry every `scope: all` file also lists: the valid values with these changes.
OTHER = {"demo": {"name": "item-2"}, "backup-account": {"uid": "2345678"}}
OTHER["backup-account-native"] = OTHER["backup-account"]


class OneOtherEntry(Aggregates):
    """The real Aggregates (overlays, coalescing) over a directory that holds one valid
    entry: the mirror is replaced, nothing connects to LDAP."""

    def __init__(self, other: Member) -> None:
        super().__init__(ConnectionFactory(LdapSettings(uri="ldap://127.0.0.1:9")))
        self.other = other

    def mirror(self, service: ServiceSpec) -> Any:
        other = self.other

        class Static:
            def current(self) -> dict[str, Member]:
                return {other.uuid: other}

        return Static()


class CapturingRender(RenderStep):
    """The real render step type; the final write keeps the file text instead, unless `real`:
    then RenderStep.install runs the kind's validate command on it as in production."""

    def __init__(self, real: bool = False) -> None:
        self.real = real
        self.files: dict[str, str] = {}

    def install(self, ctx: Context, plan: RenderPlan, content: bytes) -> bool:
        self.files[plan.template] = content.decode()
        if not (self.real and plan.validate):
            return True
        if plan.template in PREPARE:
            PREPARE[plan.template](content.decode(), plan.service)
        try:
            return super().install(ctx, plan, content)
        finally:
            plan.path.unlink(missing_ok=True)  # an unchanged file would skip the next validation


def render_only(spec: ServiceSpec) -> ServiceSpec:
    """`spec` with every distinct render step of any mode, as one `add` list."""
    steps = {step.action: step for mode in spec.steps.values() for step in mode
             if isinstance(step.action, RenderAction)}
    return replace(spec, steps={"add": tuple(steps.values())})


@dataclass
class KindRun:
    """One shipped kind under test: renders are cached by value (many raws parse the same)."""

    spec: ServiceSpec
    other: Member
    renders: ServiceSpec = dataclasses.field(init=False)
    checked: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    to_validate: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.renders = render_only(self.spec)

    def render(self, values: Mapping[str, Any], real: bool = False) -> dict[str, str]:
        capture = CapturingRender(real)
        pipeline = Pipeline(ENV, HookSettings(path=(str(paths.hooks_dir()),)),
                            OneOtherEntry(self.other), types=lambda step: capture)
        job = Job(self.renders, "hostile-uuid", f"cn=hostile,{self.spec.base}", "add", values)
        pipeline.aggregates.begin(job)  # as the engine does: `scope: all` sees this entry
        try:
            pipeline.run(job)
        finally:
            pipeline.aggregates.end(job)
        return capture.files

    def problems(self, values: Mapping[str, Any]) -> list[str]:
        key = repr(sorted(values.items()))
        if key not in self.checked:
            self.checked[key] = self._problems(values)
        return self.checked[key]

    def _problems(self, values: Mapping[str, Any]) -> list[str]:
        try:
            files = self.render(values)
            plain = self.render({name: neutral(value) for name, value in values.items()})
        except StepFailed as exc:
            return [f"render failed: {exc.message}"]
        except Exception as exc:  # noqa: BLE001 - the finding itself
            return [f"render crashed: {type(exc).__name__}: {exc}"]
        problems = [f"{name}: {problem}" for name, text in files.items()
                    for problem in file_problems(name, text, plain[name], self.spec.vars)]
        for step in self.renders.steps["add"]:
            action = step.action
            if isinstance(action, RenderAction) and action.validate:
                self.to_validate.setdefault(files[action.template], dict(values))
        job = Job(self.spec, "hostile-uuid", f"cn=hostile,{self.spec.base}", "add", values)
        hooks = {step.action.argv: step.name for mode in self.spec.steps.values()
                 for step in mode if isinstance(step.action, HookAction)}
        for argv, step_name in hooks.items():
            for source in argv:
                arg = render_string(ENV, source, job.context({}))
                if not arg.isprintable() or arg != arg.strip() or (
                        arg.startswith("-") and not source.startswith("-")):
                    problems.append(f"hook {step_name}: argv item {arg!r}")
        return problems


def test_every_kind_and_template_is_covered() -> None:
    used = set()
    for kind in SHIPPED_KINDS:
        spec = load_kind(kind, Path("/srv/hostile"))
        assert {value.name for value in spec.values} <= set(BENIGN[kind]), kind
        assert set(OTHER[kind]) <= set(BENIGN[kind]), kind
        used |= {step.action.template for step in render_only(spec).steps["add"]}  # type: ignore[union-attr]
    shipped = {str(p.relative_to(TEMPLATES_DIR)) for p in TEMPLATES_DIR.rglob("*.j2")}
    assert shipped == used == set(TEMPLATE_CHECKS)


@pytest.mark.slow
@pytest.mark.parametrize("kind", SHIPPED_KINDS)
def test_hostile_attributes_never_reach_a_rendered_file(kind: str, tmp_path: Path) -> None:
    spec = load_kind(kind, tmp_path)
    benign = {value.attribute.lower(): [BENIGN[kind][value.name]] for value in spec.values}
    other = {value.attribute.lower(): [OTHER[kind].get(value.name, BENIGN[kind][value.name])]
             for value in spec.values}
    run = KindRun(spec, Member(f"cn=other,{spec.base}", "other-uuid",
                               parse_entry(spec.values, other)))
    problems = [f"valid entry: {p}" for p in run.problems(parse_entry(spec.values, benign))]
    counts: Counter[str] = Counter()
    for value in spec.values:
        raw_benign = BENIGN[kind][value.name]
        rng = rng_for(kind, value.name)
        raws = hostile_values([raw_benign, *SEEDS[value.type.name]], VALUES_PER_ATTRIBUTE, rng)
        raws += [raw for raw in numbers(rng) if raw not in raws]
        for case in [[raw] for raw in raws] + [[], [raw_benign, raw_benign]]:
            counts["tried"] += 1
            where = f"{value.attribute} <- {case[:1]!r}"[:120]
            try:
                values = parse_entry(spec.values, {**benign, value.attribute.lower(): case})
            except InvalidValue as exc:
                counts["rejected"] += 1
                found = [message_problem(exc) or ""]
            except Exception as exc:  # noqa: BLE001 - the finding itself
                found = [f"{type(exc).__name__} escaped parse_entry: {exc}"]
            else:
                counts["accepted"] += 1
                found = run.problems(values)
            problems += [f"{where}: {problem}" for problem in found if problem]
    distinct = list(run.to_validate.values())
    runs = min(len(distinct), REAL_TOOL_RUNS_PER_KIND)
    for values in (distinct[i * len(distinct) // runs] for i in range(runs)):
        counts["validated"] += 1
        try:
            run.render(values, real=True)
        except StepFailed as exc:
            problems.append(f"{values}: the kind's validate command failed: {exc.message}")
    print(f"\n{kind}: {len(spec.values)} attributes, {counts['tried']} entries tried, "
          f"{counts['accepted']} accepted, {counts['rejected']} rejected; "
          f"{len(run.checked)} distinct renders checked, {len(distinct)} distinct validated "
          f"files, {counts['validated']} real validate runs")
    assert counts["tried"] >= 1000 * len(spec.values)
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:40])
