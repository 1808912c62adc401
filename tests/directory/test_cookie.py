"""Sync cookies: parsing the forms OpenLDAP and the poll fallback write, and the state file."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisiond.directory.cookie import Cookie, CookieStore, newest_csn, parse_cookie

A = "20130812122900.123456Z#000000#000#000000"
B = "20130812123000.000001Z#000002#002#000000"


def test_single_provider_cookie() -> None:
    cookie = parse_cookie(f"rid=001,csn={A}")
    assert cookie == Cookie(rid="001", sid=None, csns=(A,))
    assert cookie.text == f"rid=001,csn={A}"


def test_multi_provider_cookie() -> None:
    cookie = parse_cookie(f"rid=000,sid=001,csn={A};{B}")
    assert cookie == Cookie(rid="000", sid="001", csns=(A, B))
    assert cookie.text == f"rid=000,sid=001,csn={A};{B}"
    assert newest_csn(cookie) == B


def test_openldap_25_delcsn_cookie() -> None:
    text = f"rid=000,sid=001,csn={A},delcsn={B}"
    cookie = parse_cookie(text)
    assert cookie is not None and cookie.delcsn == B and cookie.csns == (A,)
    assert cookie.text == text
    assert newest_csn(text) == A


def test_poll_cookie_has_no_rid() -> None:
    assert parse_cookie(f"csn={A}") == Cookie(rid=None, sid=None, csns=(A,))


@pytest.mark.parametrize("text", ["", "   ", "rid=001,csn=", "rid=001", "rid=000,sid=001,csn="])
def test_empty_cookies_mean_no_state(text: str) -> None:
    assert parse_cookie(text) is None
    assert newest_csn(text) is None
    assert newest_csn(None) is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("rid=001,csn=20130812122900Z", "malformed CSN"),
        (f"rid=001,csn={A};", "malformed CSN"),
        ("rid=001,csn=20130812122900.123456Z#000000#000", "malformed CSN"),
        (f"rid=abc,csn={A}", "rid must be"),
        (f"rid=001,sid=xyz,csn={A}", "sid must be"),
        (f"rid=001,foo=1,csn={A}", "unknown field"),
        (f"rid=001,csn={A},csn={A}", "given twice"),
        (f"rid=001;csn={A}", "rid must be"),
        ("garbage", "not key=value"),
        (f"rid=001,csn=,delcsn={A}", "delcsn without csn"),
    ],
)
def test_malformed_cookies_are_rejected(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_cookie(text)


def test_store_round_trip(tmp_path: Path) -> None:
    store = CookieStore(tmp_path / "state", "demo")
    assert store.path == tmp_path / "state" / "demo.cookie"
    assert store.load() is None
    store.save(f"rid=000,sid=001,csn={A}")
    store.save(f"rid=000,sid=001,csn={B}")
    assert store.load() == f"rid=000,sid=001,csn={B}"
    assert store.path.read_text() == f"rid=000,sid=001,csn={B}\n"
    assert [p.name for p in store.path.parent.iterdir()] == ["demo.cookie"]  # no temp left


def test_store_reads_legacy_files(tmp_path: Path) -> None:
    store = CookieStore(tmp_path, "legacy")
    store.path.write_text("rid=001,csn=\n")
    assert store.load() is None
    store.path.write_text(f"rid=001,csn={A}\n")
    assert store.load() == f"rid=001,csn={A}"


def test_store_reports_a_corrupt_file(tmp_path: Path) -> None:
    store = CookieStore(tmp_path, "demo")
    store.path.write_text("rid=001,csn=yesterday\n")
    with pytest.raises(ValueError, match=r"demo\.cookie.*malformed CSN"):
        store.load()


@pytest.mark.parametrize("cookie", ["", "a\nb"])
def test_store_refuses_non_cookies(tmp_path: Path, cookie: str) -> None:
    with pytest.raises(ValueError):
        CookieStore(tmp_path, "demo").save(cookie)


@pytest.mark.parametrize("service", ["", ".hidden", "a/b"])
def test_store_refuses_unsafe_service_names(tmp_path: Path, service: str) -> None:
    with pytest.raises(ValueError):
        CookieStore(tmp_path, service)
