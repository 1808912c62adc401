"""`unique:` decided as pure functions (aggregates/unique.py), and read from the config: the
entry that came later fails alone, naming the value and the entry that keeps it."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisiond.aggregates.unique import (
    IN_FLIGHT,
    NEW,
    SETTLED,
    Holder,
    clash,
    items_of,
    losers,
    may_clash,
)
from provisiond.config import ConfigError, load_config
from provisiond.model.settings import ServiceSpec, Unique
from provisiond.model.values import ValueSpec
from provisiond.testing.slapd import Slapd
from tests.support import demo_service, write_config

TARGETS = "ou=targets,dc=example,dc=org"
IQN = [Unique("iqn")]
LUN = [Unique("lun", per_parent=True)]


def target(name: str, iqn: str, stage: int = SETTLED, **more: object) -> Holder:
    return Holder(f"uuid-{name}", f"cn={name},{TARGETS}", {"iqn": iqn, **more}, stage)


def lun(name: str, under: str, number: int, stage: int = SETTLED) -> Holder:
    return Holder(f"uuid-{name}-{under}", f"cn={name},cn={under},{TARGETS}", {"lun": number},
                  stage)


def test_a_new_entry_with_a_value_a_provisioned_one_has_fails_naming_both() -> None:
    found = clash(IQN, target("b", "iqn.x:1", stage=NEW), [target("z", "iqn.x:1")])
    assert found is not None and found.other.dn == f"cn=z,{TARGETS}"
    assert found.message.startswith('value "iqn": iqn.x:1 is already used by cn=z,')
    assert "it is provisioned with it" in found.message  # why: a settled one keeps it
    assert clash(IQN, target("b", "iqn.x:2", stage=NEW), [target("z", "iqn.x:1")]) is None


def test_between_two_new_entries_the_dn_sorting_first_keeps_the_value() -> None:
    first, later = target("a", "iqn.x:1", stage=NEW), target("B", "iqn.x:1", stage=NEW)
    assert clash(IQN, first, [later]) is None
    found = clash(IQN, later, [first])
    assert found is not None and "its DN sorts first" in found.message
    assert losers(IQN, [later, first]).keys() == {later.uuid}


def test_the_provisioned_one_keeps_it_whatever_the_dns() -> None:
    provisioned, new = target("z", "iqn.x:1"), target("a", "iqn.x:1", stage=NEW)
    assert clash(IQN, provisioned, [new]) is None
    assert clash(IQN, new, [provisioned]) is not None
    assert losers(IQN, [new, provisioned]).keys() == {new.uuid}


def test_the_entry_itself_and_unset_values_never_clash() -> None:
    entry = target("a", "iqn.x:1", stage=NEW)
    assert clash(IQN, entry, [entry]) is None  # its own mirror entry (a modify)
    rule = [Unique("chap_user")]
    assert clash(rule, target("a", "i1", chap_user=None), [target("b", "i2", chap_user=None)]) \
        is None


def test_an_entry_in_flight_keeps_it_before_a_new_one_whatever_the_dns() -> None:
    in_flight, new = target("z", "iqn.x:1", stage=IN_FLIGHT), target("a", "iqn.x:1", stage=NEW)
    found = clash(IQN, new, [in_flight])
    assert found is not None and "it is being provisioned with it" in found.message
    assert clash(IQN, in_flight, [new]) is None
    assert clash(IQN, in_flight, [target("y", "iqn.x:1")]) is not None  # settled first


def test_per_parent_compares_only_below_the_same_parent() -> None:
    assert clash(LUN, lun("l2", "t1", 2, stage=NEW), [lun("l1", "t2", 2)]) is None
    found = clash(LUN, lun("l2", "t1", 2, stage=NEW), [lun("l1", "t1", 2)])
    assert found is not None and "below the same parent" in found.message
    assert losers(LUN, [lun("l1", "t1", 2), lun("l2", "t1", 2), lun("l3", "t2", 2)]).keys() \
        == {"uuid-l2-t1"}  # both provisioned (before unique was declared): DN order


def test_multi_valued_values_clash_on_any_shared_item() -> None:
    rule = [Unique("portals")]
    one = Holder("u1", f"cn=a,{TARGETS}", {"portals": ["192.0.2.1", "192.0.2.2"]}, SETTLED)
    two = Holder("u2", f"cn=b,{TARGETS}", {"portals": ["192.0.2.2"]}, NEW)
    assert clash(rule, two, [one]) is not None
    assert clash(rule, replace_values(two, ["192.0.2.3"]), [one]) is None


def replace_values(holder: Holder, portals: list[str]) -> Holder:
    return Holder(holder.uuid, holder.dn, {"portals": portals}, holder.stage)


def test_the_cheap_test_never_drops_an_entry_that_clashes() -> None:
    """`may_clash` only narrows who `clash` compares with: on every pair of these entries,
    an entry it drops never clashes (the examination's answer is the same)."""
    rules = [*IQN, *LUN, Unique("users")]
    entries = [target("a", "iqn.x:a", users=["u1", "u2"]), target("b", "iqn.x:a", NEW),
               target("c", "iqn.x:c", NEW, users=["u2"]), target("d", "iqn.x:d", users=[]),
               lun("0", "a", 0), lun("1", "a", 0, NEW), lun("2", "b", 0, NEW),
               lun("3", "b", 1, NEW), Holder("uuid-e", "cn=e,ou=x", {"lun": "0"}, NEW)]
    for entry in entries:
        wanted = items_of(rules, entry.values)
        kept = [other for other in entries if may_clash(rules, wanted, other.values)]
        assert clash(rules, entry, kept) == clash(rules, entry, entries), entry
        dropped = [other for other in entries if other not in kept]
        assert all(clash(rules, entry, [other]) is None for other in dropped), entry


def test_an_entry_without_unique_values_may_clash_with_none() -> None:
    assert not may_clash(IQN, items_of(IQN, {"iqn": None}), {"iqn": "iqn.x:a"})
    assert may_clash(IQN, items_of(IQN, {"iqn": "iqn.x:a"}), {"iqn": "iqn.x:a"})
    assert not may_clash(IQN, items_of(IQN, {"iqn": "iqn.x:a"}), {"iqn": "iqn.x:b"})


def test_a_loser_keeps_nothing_from_the_entries_after_it() -> None:
    kept = target("a", "iqn.x:1", chap_user="u1")
    lost = target("b", "iqn.x:1", chap_user="u2", stage=NEW)
    after = target("c", "iqn.x:3", chap_user="u2", stage=NEW)
    assert losers([*IQN, Unique("chap_user")], [after, lost, kept]).keys() == {lost.uuid}


def test_a_secret_value_is_never_quoted() -> None:
    spec = ValueSpec.from_mapping("secret", {"attribute": "s", "type": "string", "secret": True})
    rule = [Unique("secret")]
    found = clash(rule, Holder("u2", "cn=b,o=x", {"secret": "hunter2-hunter2"}, NEW),
                  [Holder("u1", "cn=a,o=x", {"secret": "hunter2-hunter2"}, SETTLED)], [spec])
    assert found is not None and "hunter2" not in found.message


# -- the config ----------------------------------------------------------------------------


def load(slapd: Slapd, tmp_path: Path, unique: object) -> ServiceSpec:
    root = tmp_path / "root"
    config = load_config(write_config(tmp_path / "cfg", slapd, demo_service(root, unique=unique)))
    return config.services[0]


@pytest.mark.parametrize("given, expected", [
    (["size"], (Unique("size"),)),
    ([{"value": "size", "per": "parent"}, "owner"],
     (Unique("size", per_parent=True), Unique("owner"))),
    ([], ()),
])
def test_unique_is_read_from_a_service(slapd: Slapd, tmp_path: Path, given: object,
                                       expected: object) -> None:
    assert load(slapd, tmp_path, given).unique == expected


@pytest.mark.parametrize("given, key, reason", [
    (["nope"], "unique[0]", "must name a declared value, not 'nope'"),
    ([{"value": "size", "per": "tree"}], "unique[0].per", "must be service or parent, not 'tree'"),
    ([{"value": "size", "size": 1}], "unique[0].size", "unknown option"),
    (["size", "size"], "unique[1]", "'size' is listed twice"),
    ("size", "unique", "must be a list, not str"),
])
def test_a_bad_unique_stops_the_load(slapd: Slapd, tmp_path: Path, given: object, key: str,
                                     reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(slapd, tmp_path, given)
    assert (caught.value.key, caught.value.reason) == (f"services.demo.{key}", reason)
