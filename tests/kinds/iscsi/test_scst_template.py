"""templates/iscsi/scst.conf.j2: golden files of what it renders, and every rendering read back
by iscsi-scst-check as scstadmin would read it. `PROVISIOND_UPDATE_GOLDEN=1` rewrites the
golden files (review the diff)."""

from __future__ import annotations

import os

import pytest

from provisiond.host.jinja import RenderError
from tests.kinds.iscsi.scst import (
    BSD01,
    BSD02,
    GOLDEN,
    SECRET,
    disk,
    load_script,
    lun,
    render,
    target,
)

check = load_script("iscsi-scst-check")


def scenarios() -> dict[str, str]:
    backup01 = target("backup01", initiators=(BSD01, BSD02), chap=("bsd01", SECRET),
                      portals=("192.0.2.10:3260", "[2001:db8::1]:3260", "198.51.100.7:3260"))
    backup02 = target("backup02", initiators=(BSD02,), portals=("192.0.2.10",))
    empty = target("empty", portals=())
    repo01, repo02 = disk("repo01"), disk("repo02", "/dev/zvol/tank/repo02")
    long_name = disk("a-disk-repository-name-that-is-longer-than-scst-allows-for-devices")
    return {
        "no-targets": render([], []),
        "one-target": render([backup01], [lun(backup01, 1, repo01)]),
        "several": render(
            [backup01, backup02, empty],
            [lun(backup01, 2, repo02), lun(backup01, 1, repo01), lun(backup02, 1, repo01),
             lun(backup02, 7, long_name), lun(empty, 3, None)]),
    }


@pytest.mark.parametrize("name", sorted(scenarios()))
def test_golden(name: str) -> None:
    text = scenarios()[name]
    golden = GOLDEN / f"scst-{name}.conf"
    if os.environ.get("PROVISIOND_UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    assert text == golden.read_text(), f"{golden} differs (PROVISIOND_UPDATE_GOLDEN=1 rewrites)"


@pytest.mark.parametrize("name", sorted(scenarios()))
def test_every_rendering_reads_back_as_its_model(name: str) -> None:
    check.check_text(scenarios()[name])


def test_what_the_model_holds() -> None:
    model = check.check_text(scenarios()["several"])
    first, second, empty = model["targets"]
    assert first["enabled"] == 1 and first["portals"] == ["192.0.2.10", "2001:db8::1"]
    assert [(x["lun"], x["device"]) for x in first["luns"]] == [(1, "repo01"), (2, "repo02")]
    assert second["luns"][1]["device"].startswith("a-disk-repository-name-that-is-")
    assert len(second["luns"][1]["device"]) == 49
    assert empty == {"iqn": "iqn.2026-12.org.example:empty", "enabled": 0, "portals": [],
                     "initiators": [], "luns": [], "chap": None}
    assert [d["name"] for d in model["devices"]] == sorted(d["name"] for d in model["devices"])
    assert len(model["devices"]) == 3  # repo01 exported twice is one device


@pytest.mark.parametrize("where, value, shown", [
    ("iqn", "iqn.2026-12.org.example:a\nLUN 0 evil", "the IQN of cn=bad"),
    ("initiators", ["iqn.2026-12.org.example:a b"], "an initiator of cn=bad"),
    ("chap_secret", "secret#{}\"x\"", "the CHAP secret of cn=bad"),
    ("chap_user", "a b", "the CHAP user of cn=bad"),
])
def test_a_value_outside_its_strict_set_fails_the_render(where: str, value: object,
                                                          shown: str) -> None:
    bad = target("bad", chap=("bsd01", SECRET))
    bad.values[where] = value  # type: ignore[index]  # past the kind's validation
    with pytest.raises(RenderError, match="strict set") as caught:
        render([bad], [])
    assert shown in str(caught.value)
    assert SECRET not in str(caught.value) and "secret#" not in str(caught.value)


def test_an_ipv6_portal_is_written_as_iscsi_scstd_compares_it() -> None:
    t = target("t", portals=("[2001:DB8::A]:3260",))
    model = check.check_text(render([t], [], allowed=("[2001:DB8::A]",)))
    assert model["targets"][0]["portals"] == ["2001:db8::a"]
    t = target("t", portals=("[2001:db8:0:0::a]",))
    with pytest.raises(check.CheckError, match="not written canonically.*2001:db8::a"):
        check.check_text(render([t], [], allowed=("[2001:db8:0:0::a]",)))


def test_a_device_path_outside_its_set_fails_the_render() -> None:
    t = target("t")
    with pytest.raises(RenderError, match="device path of cn=repo01"):
        render([t], [lun(t, 1, disk("repo01", "/dev/vg0/repo01 }"))])


def test_a_disk_name_reused_by_another_device_is_refused_by_the_check() -> None:
    a, b = target("a"), target("b")
    text = render([a, b], [lun(a, 1, disk("repo01", "/dev/vg0/repo01")),
                           lun(b, 1, disk("repo01", "/dev/vg1/repo01"))])
    with pytest.raises(check.CheckError, match="device repo01 is defined twice"):
        check.check_text(text)
