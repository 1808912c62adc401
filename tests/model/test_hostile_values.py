"""Thousands of hostile LDAP values through every value type and every shipped kind's files.

Values written by self-care portals end up in rsnapshot.conf (TAB-separated), a cron.d file,
the iSCSI target files (tgt, scst.conf), the Bacula SD file and hook argv. Two properties are
checked on generated values (tests/model/hostile.py, fixed seeds):

1. Every registered value type (every option set in hostile_types.py and every one a shipped
   kind declares) either raises ValueError (InvalidValue through a ValueSpec; no other
   exception) with a single-line printable message, or returns a value whose text form is
   printable, has no outer whitespace, keeps to the type's contract (`contract()`: the
   characters it may carry, ASCII input unless the type takes any printable text) and parses
   back to itself.
2. For every shipped kind, entries with one hostile attribute (the others valid) go through
   parse_entry and, as in the engine, reference resolution (a LUN's disk and target); accepted
   ones are rendered by the real Pipeline code (per-entry and `scope: all` render steps of
   every mode, whatever their `when:`; only the final write is captured) beside the other
   services' entries the files list (hostile_world.py), and every file is checked: no
   control or format character, the same lines and TABs as the render of the same values
   with every character of their strings replaced by '_' where the template does not decide
   by content (NEUTRAL), each file valid for its reader and holding exactly what the entries
   say (TEMPLATE_CHECKS; hostile_storage.py for the storage files), and for a sample of
   distinct files, the kind's own `validate` command (`rsnapshot configtest`,
   iscsi-scst-check, `iscsi-tgt-apply check-target`, bacula-sd-check with the real
   `bacula-sd -t`) through RenderStep.install, without its `on_change`. Hook argv items are
   rendered with the entry's references and earlier outputs and checked too. Run with -s to
   see the counts.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from provisiond import paths
from provisiond.model.values import TYPES, InvalidValue, ValueType, parse_entry
from provisiond.model.work import Job
from tests.model.hostile import hostile_values, numbers, rng_for
from tests.model.hostile_files import TEMPLATE_CHECKS
from tests.model.hostile_run import KindRun, render_steps
from tests.model.hostile_types import OPTIONS, SEEDS, check_type, contract, message_problem
from tests.model.hostile_world import (
    BENIGN,
    OTHER,
    at_site,
    load_kind,
    make_world,
    prepare_site,
)

KINDS_DIR = paths.kinds_dirs()[-1]
TEMPLATES_DIR = paths.templates_dirs()[-1]
SHIPPED_KINDS = sorted(path.stem for path in KINDS_DIR.glob("*.yaml"))
VALUES_PER_ATTRIBUTE = 1200
VALIDATIONS_PER_TEMPLATE = 60  # real validate runs per kind and template, on distinct files
# Findings reported to the lead for their owners (not fixed here): problems matching one of
# these make the test an xfail naming it, as long as nothing else is found. (The iSCSI value
# collisions found here, a LUN number, an IQN or a CHAP user another entry of the one shared
# file has, are refused now by the kinds' `unique:`: World.job, as the engine's examination.)
KNOWN: dict[str, str] = {}


# --- value types ------------------------------------------------------------------------------


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


# --- shipped kinds and their files ----------------------------------------------------------


def test_every_kind_and_template_is_covered(tmp_path: Path) -> None:
    used = set()
    for kind in SHIPPED_KINDS:
        world = make_world(kind, tmp_path)
        spec = world.spec
        assert {value.name for value in spec.values} <= set(BENIGN[kind]), kind
        assert set(OTHER[kind]) <= set(BENIGN[kind]), kind
        benign = {v.attribute.lower(): [at_site(BENIGN[kind][v.name], tmp_path)]
                  for v in spec.values}
        assert isinstance(world.job(parse_entry(spec.values, benign)), Job), kind
        used |= set(render_steps(spec))
    shipped = {str(p.relative_to(TEMPLATES_DIR)) for p in TEMPLATES_DIR.rglob("*.j2")}
    assert shipped == used == set(TEMPLATE_CHECKS)


@pytest.mark.slow
@pytest.mark.parametrize("kind", SHIPPED_KINDS)
def test_hostile_attributes_never_reach_a_rendered_file(kind: str, tmp_path: Path) -> None:
    prepare_site(tmp_path)
    world = make_world(kind, tmp_path)
    spec = world.spec
    benign = {v.attribute.lower(): [at_site(BENIGN[kind][v.name], tmp_path)] for v in spec.values}
    run = KindRun(world)
    problems = [f"valid entry: {p}" for p in run.problems(parse_entry(spec.values, benign))]
    counts: Counter[str] = Counter()
    for value in spec.values:
        raw_benign = BENIGN[kind][value.name]
        rng = rng_for(kind, value.name)
        raws = hostile_values([raw_benign, *SEEDS[value.type.name]], VALUES_PER_ATTRIBUTE, rng)
        raws += [raw for raw in numbers(rng) if raw not in raws]
        if value.attribute != "cn":  # another entry's value (its cn would be its DN)
            raws += [raw for raw in [OTHER[kind].get(value.name)] if raw and raw not in raws]
        for case in [[raw] for raw in raws] + [[], [raw_benign, raw_benign]]:
            case = at_site(case, tmp_path)
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
                refused = world.job(values)
                counts["accepted" if isinstance(refused, Job) else "refused by a reference"] += 1
                found = run.problems(values) if isinstance(refused, Job) else []
            problems += [f"{where}: {problem}" for problem in found if problem]
    for template in {template for template, _ in run.to_validate}:
        distinct = [values for (t, _), values in run.to_validate.items() if t == template]
        runs = min(len(distinct), VALIDATIONS_PER_TEMPLATE)
        for values in (distinct[i * len(distinct) // runs] for i in range(runs)):
            counts["validated"] += 1
            problems += [problem for problem in [run.validate(template, values)] if problem]
    print(f"\n{kind}: {len(spec.values)} attributes, {counts['tried']} entries tried, "
          f"{counts['accepted']} accepted, {counts['rejected']} rejected, "
          f"{counts['refused by a reference']} refused by a reference; "
          f"{len(run.checked)} distinct renders checked, {len(run.to_validate)} distinct "
          f"validated files, {counts['validated']} real validate runs")
    assert counts["tried"] >= 1000 * len(spec.values)
    unknown = [p for p in problems if not any(re.search(known, p) for known in KNOWN)]
    assert not unknown, f"{len(unknown)} problems:\n" + "\n".join(unknown[:40])
    if problems:
        pytest.xfail("; ".join(sorted({reason for p in problems for known, reason in
                                       KNOWN.items() if re.search(known, p)})))
