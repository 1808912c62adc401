"""Typed validation of LDAP values: what each type accepts, and that hostile values never pass."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import pytest
import yaml

from provisiond.model.values import (
    TYPES,
    InvalidValue,
    SpecError,
    StringType,
    ValueSpec,
    as_text,
    parse_entry,
    sample_declaration,
)

HEX32 = "6001405" + "ABCDEF0123456789" + "ABCDEF012"

ACCEPT: list[tuple[str, dict[str, Any], str, Any]] = [
    ("string", {}, "Backup of host-1: daily/weekly, user@example.org", None),
    ("string", {}, "a=b+c", None),
    ("string", {"charset": "word"}, "abc_1", None),
    ("string", {"charset": "printable"}, 'He said "hi" {x} #1; Müller', None),
    ("string", {"pattern": "[a-z]+-[0-9]+"}, "abc-12", None),
    ("string", {"min_length": 3, "max_length": 3}, "abc", None),
    ("string", {}, "x" * 255, None),
    ("integer", {}, "0", 0),
    ("integer", {}, "-5", -5),
    ("integer", {}, "007", 7),
    ("integer", {"min": 0, "max": 99}, "99", 99),
    ("integer", {}, "9" * 19, int("9" * 19)),
    ("bytes", {}, "1024", 1024),
    ("bytes", {}, "0", 0),
    ("bytes", {}, "2048B", 2048),
    ("bytes", {}, "1k", 1024),
    ("bytes", {}, "1KB", 1024),
    ("bytes", {}, "10G", 10 * 1024**3),
    ("bytes", {}, "512MiB", 512 * 1024**2),
    ("bytes", {}, "2P", 2 * 1024**5),
    ("bytes", {"min": "1M", "max": "10T"}, "10T", 10 * 1024**4),
    ("bytes", {"min": 1024}, "1K", 1024),
    ("boolean", {}, "TRUE", True),
    ("boolean", {}, "FALSE", False),
    ("boolean", {}, "true", True),
    ("boolean", {}, "False", False),
    ("posix_name", {}, "backup", None),
    ("posix_name", {}, "_svc", None),
    ("posix_name", {}, "a-b_c1", None),
    ("posix_name", {}, "a" * 32, None),
    ("posix_name", {"allow_digits_first": True}, "1234567", None),
    ("path_segment", {}, "backup", None),
    ("path_segment", {}, "file.tar.gz", None),
    ("path_segment", {}, "_x-1", None),
    ("path_segment", {}, "x" * 255, None),
    ("path", {}, "/", None),
    ("path", {}, "/srv/backup", None),
    ("path", {}, "/srv/.snapshot/a-b_c.d", None),
    ("path", {"under": ["/srv/backup"]}, "/srv/backup/x", None),
    ("path", {"under": ["/srv/a", "/srv/b"]}, "/srv/b/c/d", None),
    ("path", {"under": ["/"]}, "/x", None),
    ("hostname", {}, "example.org", None),
    ("hostname", {}, "a", None),
    ("hostname", {}, "Host-1.Example.ORG", None),
    ("hostname", {}, "xn--bcher-kva.example", None),
    ("hostname", {}, "192.0.2.1", None),
    ("hostname", {}, "2001:db8::1", None),
    ("hostname", {}, "::ffff:192.0.2.1", None),
    ("hostname", {}, ".".join(["a" * 63] * 3) + "." + "b" * 61, None),
    ("iqn", {}, "iqn.2024-01.org.example", None),
    ("iqn", {}, "iqn.2003-12.ch.stepping-stone:storage.disk-1:lun0", None),
    ("iqn", {}, "eui.02004567A425678D", None),
    ("iqn", {}, "naa.52004567BA64678D", None),
    ("iqn", {}, "naa." + HEX32, None),
    ("iqn", {}, "iqn.2024-01.org.example:" + "a" * (223 - 24), None),
    ("dn", {}, "cn=backup,dc=example,dc=org", None),
    ("dn", {}, "uid=4000010,ou=accounts,o=stepping-stone,c=ch", None),
    ("dn", {}, "cn=a+sn=b,dc=example,dc=org", None),
    ("dn", {"charset": "printable"}, "cn=Smith\\, John,dc=example,dc=org", None),
    ("dn", {"under": "ou=people,dc=example,dc=org"}, "uid=x,ou=People,DC=Example,dc=org", None),
    ("dn", {"under": "ou=people,dc=example,dc=org"}, "ou=people,dc=example,dc=org", None),
    ("enum", {"choices": ["lvm", "zfs"]}, "zfs", None),
    ("enum", {"choices": ["lvm", "ZFS"], "ignore_case": True}, "zfs", "ZFS"),
    ("date", {}, "20240229", datetime.date(2024, 2, 29)),
    ("date", {}, "19991231", datetime.date(1999, 12, 31)),
]

REJECT: list[tuple[str, dict[str, Any], str]] = [
    ("string", {}, ""),
    ("string", {}, "Müller"),
    ("string", {}, "-rf"),
    ("string", {}, "a/../b"),
    ("string", {}, ".."),
    *[("string", {}, f"a{char}b") for char in "#*?|&<>\\$%!~^[]()"],
    ("string", {}, "x" * 256),
    ("string", {"min_length": 3}, "ab"),
    ("string", {"pattern": "[a-z]+-[0-9]+"}, "abc-"),
    ("string", {"pattern": "[a-z]+"}, "abc-"),
    ("string", {"charset": "word"}, "a b"),
    ("string", {"charset": "word"}, "a-b"),
    ("string", {"charset": "printable"}, "a\u00a0b"),
    ("string", {"charset": "printable"}, "a\u200bb"),
    ("string", {"charset": "printable"}, "a\x85b"),
    ("string", {"charset": "printable"}, "a\nb"),
    ("integer", {}, "+5"),
    ("integer", {}, " 5"),
    ("integer", {}, "5\n"),
    ("integer", {}, "1_000"),
    ("integer", {}, "\u0663"),
    ("integer", {}, "1e3"),
    ("integer", {}, "0x10"),
    ("integer", {}, "-"),
    ("integer", {}, "9" * 20),
    ("integer", {"max": 99}, "100"),
    ("integer", {"min": 0}, "-1"),
    ("bytes", {}, "1.5G"),
    ("bytes", {}, "-1G"),
    ("bytes", {}, "12X"),
    ("bytes", {}, "10 G"),
    ("bytes", {}, "G"),
    ("bytes", {}, "1E"),
    ("bytes", {}, "1iB"),
    ("bytes", {}, "8192P"),
    ("bytes", {"max": "10T"}, "11T"),
    ("bytes", {"min": "1M"}, "1K"),
    ("boolean", {}, "yes"),
    ("boolean", {}, "1"),
    ("boolean", {}, "fal\u017fe"),
    ("boolean", {}, "TRUE "),
    ("posix_name", {}, "Backup"),
    ("posix_name", {}, "1234567"),
    ("posix_name", {}, "a" * 33),
    ("posix_name", {}, "a.b"),
    ("posix_name", {}, "-a"),
    ("posix_name", {}, "host$"),
    ("path_segment", {}, "."),
    ("path_segment", {}, ".."),
    ("path_segment", {}, ".hidden"),
    ("path_segment", {}, "-rf"),
    ("path_segment", {}, "a/b"),
    ("path_segment", {}, "a b"),
    ("path_segment", {}, "x" * 256),
    ("path", {}, "srv"),
    ("path", {}, "//"),
    ("path", {}, "/srv//x"),
    ("path", {}, "/srv/"),
    ("path", {}, "/srv/./x"),
    ("path", {}, "/srv/../etc"),
    ("path", {}, "/a b"),
    ("path", {}, "/" + "x" * 256),
    ("path", {"under": ["/srv/backup"]}, "/srv/backup"),
    ("path", {"under": ["/srv/backup"]}, "/srv/backupx"),
    ("path", {"under": ["/srv/backup"]}, "/etc/passwd"),
    ("path", {"under": ["/"]}, "/"),
    ("hostname", {}, "-a.org"),
    ("hostname", {}, "a-.org"),
    ("hostname", {}, "a..b"),
    ("hostname", {}, "a.org."),
    ("hostname", {}, "a_b.org"),
    ("hostname", {}, "*"),
    ("hostname", {}, "host:80"),
    ("hostname", {}, "1.2.3"),
    ("hostname", {}, "999.1.1.1"),
    ("hostname", {}, "fe80::1%eth0"),
    ("hostname", {}, "fe80::1%$(id)"),
    ("hostname", {}, "a" * 64 + ".org"),
    ("hostname", {}, ".".join(["a" * 63] * 4)),
    ("hostname", {"allow_ip": False}, "192.0.2.1"),
    ("hostname", {"allow_ip": False}, "2001:db8::1"),
    ("iqn", {}, "IQN.2024-01.org.example"),
    ("iqn", {}, "iqn.2024-13.org.example"),
    ("iqn", {}, "iqn.2024-1.org.example"),
    ("iqn", {}, "iqn.2024-01.Org.example"),
    ("iqn", {}, "iqn.2024-01.org.example:a_b"),
    ("iqn", {}, "iqn.2024-01.org.example:x#y"),
    ("iqn", {}, "iqn.2024-01.org.example:" + "a" * (224 - 24)),
    ("iqn", {}, "eui.02004567a425678d"),
    ("iqn", {}, "eui.02004567A425678"),
    ("iqn", {}, "naa.123"),
    ("iqn", {}, "naa." + HEX32 + "0"),
    ("dn", {}, "foo"),
    ("dn", {}, "cn=a, dc=x"),
    ("dn", {}, "cn=,dc=x"),
    ("dn", {}, "cn=Smith\\, John,dc=example,dc=org"),
    ("dn", {"under": "ou=people,dc=example,dc=org"}, "uid=x,ou=other,dc=example,dc=org"),
    ("dn", {"under": "ou=people,dc=example,dc=org"}, "dc=example,dc=org"),
    ("dn", {"under": "ou=people,dc=example,dc=org"}, "uid=x,ou=people,dc=example,dc=org,dc=x"),
    ("enum", {"choices": ["lvm", "zfs"]}, "LVM"),
    ("enum", {"choices": ["lvm", "zfs"]}, "xfs"),
    ("enum", {"choices": ["disk"], "ignore_case": True}, "disk\u200b"),
    ("date", {}, "20230229"),
    ("date", {}, "2024-02-29"),
    ("date", {}, "00000101"),
    ("date", {}, "20241301"),
    ("date", {}, "2024022"),
    ("date", {}, "\uff12\uff10\uff12\uff14\uff10\uff12\uff12\uff19"),
]


def make(type_name: str, options: dict[str, Any]) -> Any:
    return TYPES[type_name].from_options(options)


@pytest.mark.parametrize(("type_name", "options", "raw", "expected"), ACCEPT)
def test_accepts(type_name: str, options: dict[str, Any], raw: str, expected: Any) -> None:
    assert make(type_name, options).parse(raw) == (raw if expected is None else expected)


@pytest.mark.parametrize(("type_name", "options", "raw"), REJECT)
def test_rejects(type_name: str, options: dict[str, Any], raw: str) -> None:
    with pytest.raises(ValueError) as caught:
        make(type_name, options).parse(raw)
    message = str(caught.value)
    assert message.isprintable() and len(message) < 400


# Hostile values: rendered into rsnapshot.conf, bacula-sd.conf, scst.conf or argv, each of these
# would inject something somewhere. They must never pass, alone or inside a valid value.
TOKENS = [
    "\n", "\r", "\t", '"', "'", "}", "{", "$(id)", "`id`", ";rm -rf /", "\x00", "\u2028",
    "\u202e", "\x7f", "\x85", "\ufeff", "#",
]
VALID = {
    "string": "backup",
    "posix_name": "backup",
    "path_segment": "backup",
    "path": "/srv/backup",
    "hostname": "host.example.org",
    "iqn": "iqn.2024-01.org.example:backup",
    "dn": "cn=backup,dc=example,dc=org",
}


def hostile(valid: str) -> list[str]:
    values = [" " + valid, valid + " ", "../" + valid, valid + "/../x", "../"]
    for token in TOKENS:
        values += [token, valid + token, token + valid, valid[:4] + token + valid[4:]]
    return values


@pytest.mark.parametrize(
    ("type_name", "raw"),
    [(name, raw) for name, valid in VALID.items() for raw in hostile(valid)],
)
def test_hostile_values_rejected(type_name: str, raw: str) -> None:
    value_type = TYPES[type_name]()
    assert value_type.parse(VALID[type_name]) == VALID[type_name]
    with pytest.raises(ValueError):
        value_type.parse(raw)


EVERY_TYPE: dict[str, tuple[dict[str, Any], str]] = {
    "string": ({"charset": "printable"}, "any text"),
    "integer": ({}, "5"),
    "bytes": ({}, "1G"),
    "boolean": ({}, "TRUE"),
    "posix_name": ({}, "backup"),
    "path_segment": ({}, "backup"),
    "path": ({}, "/srv/backup"),
    "hostname": ({}, "192.0.2.1"),
    "iqn": ({}, "eui.02004567A425678D"),
    "dn": ({"charset": "printable"}, "cn=backup,dc=org"),
    "enum": ({"choices": ["lvm"], "ignore_case": True}, "lvm"),
    "date": ({}, "20240101"),
}


def test_every_type_is_covered() -> None:
    assert set(EVERY_TYPE) == set(TYPES)


@pytest.mark.parametrize("token", ["\n", "\r", "\t", "\x00", "\u2028", "\u202e", "\x1b", " "])
@pytest.mark.parametrize("type_name", sorted(EVERY_TYPE))
def test_every_type_rejects_control_characters_and_outer_space(type_name: str, token: str) -> None:
    options, valid = EVERY_TYPE[type_name]
    value_type = make(type_name, options)
    value_type.parse(valid)
    for raw in (valid + token, token + valid, "", token):
        with pytest.raises(ValueError):
            value_type.parse(raw)


# Issue 8 item 13: look-alikes from outside ASCII (Unicode digits, dotless and dotted i, the
# Kelvin sign, long s, sharp s) case-fold or count as digits in str.lower(), str.isdigit(),
# int() and re.IGNORECASE; every type must read ASCII only.
NON_ASCII: list[tuple[str, dict[str, Any], str]] = [
    ("bytes", {}, "1M\u0131b"),  # dotless i
    ("bytes", {}, "1M\u0130B"),  # dotted capital I
    ("bytes", {}, "1\u212a"),  # Kelvin sign
    ("bytes", {}, "1\u212aB"),
    ("bytes", {}, "\u0661\u0662"),  # Arabic-Indic digits
    ("bytes", {}, "1\u00b2"),  # superscript two
    ("integer", {}, "\u0661\u0662"),
    ("integer", {}, "\uff11\uff12"),  # fullwidth digits
    ("integer", {}, "1\u00b2"),
    ("date", {}, "\u0662\u0660\u0662\u0664\u0660\u0661\u0660\u0661"),
    ("enum", {"choices": ["ss", "x"], "ignore_case": True}, "\u00df"),  # sharp s casefolds to ss
    ("enum", {"choices": ["k", "x"], "ignore_case": True}, "\u212a"),
    ("enum", {"choices": ["s", "x"], "ignore_case": True}, "\u017f"),  # long s
    ("enum", {"choices": ["i", "x"], "ignore_case": True}, "\u0130"),
    ("string", {"pattern": "[0-9]+|\\d+", "charset": "printable"}, "\u0661\u0662"),
    ("string", {"pattern": "(?i)[a-z]+", "charset": "printable"}, "\u212a"),
    ("string", {"pattern": "\\w+", "charset": "printable"}, "\u00e9t\u00e9"),
    ("boolean", {}, "TRUE\u0130"),
    ("boolean", {}, "fal\u017fe"),
    ("hostname", {}, "\u0661.\u0662.\u0663.\u0664"),
    ("hostname", {}, "ex\u0131mple.org"),
    ("posix_name", {}, "b\u0131n"),
    ("path_segment", {}, "\u212aelvin"),
    ("iqn", {}, "iqn.\u0662\u0660\u0662\u0664-01.org.example"),
]


@pytest.mark.parametrize(("type_name", "options", "raw"), NON_ASCII)
def test_non_ascii_look_alikes_never_parse(type_name: str, options: dict[str, Any], raw: str) -> None:
    with pytest.raises(ValueError) as caught:
        make(type_name, options).parse(raw)
    assert "substring not found" not in str(caught.value)
    assert str(caught.value).startswith(("not ", "does not match", "non-printable",
                                         "character ", "only ")), caught.value


@pytest.mark.parametrize("size", ["1M\u0131b", "1\u212a", "\u0661"])
def test_non_ascii_sizes_in_declarations_are_spec_errors(size: str) -> None:
    with pytest.raises(SpecError) as caught:
        ValueSpec.from_mapping("value", {"attribute": "cn", "type": "bytes", "min": size})
    assert caught.value.key == "min" and caught.value.reason.startswith("not a size")


def test_ascii_case_still_folds() -> None:
    assert make("bytes", {}).parse("1mIb") == 1024**2
    assert make("enum", {"choices": ["Disk"], "ignore_case": True}).parse("dISK") == "Disk"
    assert make("string", {"pattern": "(?i)[a-z]+"}).parse("AbC") == "AbC"


def test_enum_choices_are_checked_like_values() -> None:
    with pytest.raises(SpecError):
        make("enum", {"choices": ["a\u202e"]})


def test_type_instances_are_frozen_and_registered() -> None:
    for name, cls in TYPES.items():
        assert cls.name == name and cls.__doc__
    with pytest.raises(dataclasses.FrozenInstanceError):
        StringType().max_length = 1  # type: ignore[misc]


# --- declarations -----------------------------------------------------------------------------

BAD_SPECS: list[tuple[dict[str, Any], str]] = [
    ({"type": "string"}, "attribute"),
    ({"attribute": "c n", "type": "string"}, "attribute"),
    ({"attribute": "cn"}, "type"),
    ({"attribute": "cn", "type": "text"}, "type"),
    ({"attribute": "cn", "type": ["string"]}, "type"),
    ({"attribute": "cn", "type": "string", "bogus": 1}, "bogus"),
    ({"attribute": "cn", "type": "boolean", "max": 1}, "max"),
    ({"attribute": "cn", "type": "string", "pattern": "("}, "pattern"),
    ({"attribute": "cn", "type": "string", "charset": "ascii"}, "charset"),
    ({"attribute": "cn", "type": "string", "max_length": -1}, "max_length"),
    ({"attribute": "cn", "type": "string", "min_length": 9, "max_length": 3}, "min_length"),
    ({"attribute": "cn", "type": "integer", "min": "x"}, "min"),
    ({"attribute": "cn", "type": "integer", "max": True}, "max"),
    ({"attribute": "cn", "type": "integer", "min": 5, "max": 1}, "min"),
    ({"attribute": "cn", "type": "bytes", "max": "10X"}, "max"),
    ({"attribute": "cn", "type": "bytes", "min": -1}, "min"),
    ({"attribute": "cn", "type": "bytes", "min": "1G", "max": "1M"}, "min"),
    ({"attribute": "cn", "type": "posix_name", "allow_digits_first": "yes"}, "allow_digits_first"),
    ({"attribute": "cn", "type": "path", "under": "/srv"}, "under"),
    ({"attribute": "cn", "type": "path", "under": ["/srv", "srv"]}, "under.1"),
    ({"attribute": "cn", "type": "path", "under": ["/srv/../etc"]}, "under.0"),
    ({"attribute": "cn", "type": "path", "under": ["/srv/"]}, "under.0"),
    ({"attribute": "cn", "type": "dn", "under": "not a dn"}, "under"),
    ({"attribute": "cn", "type": "dn", "charset": "word"}, "charset"),
    ({"attribute": "cn", "type": "enum"}, "choices"),
    ({"attribute": "cn", "type": "enum", "choices": []}, "choices"),
    ({"attribute": "cn", "type": "enum", "choices": ["a", "a"]}, "choices"),
    ({"attribute": "cn", "type": "enum", "choices": ["a", "A"], "ignore_case": True}, "choices"),
    ({"attribute": "cn", "type": "enum", "choices": ["a", "b\n"]}, "choices.1"),
    ({"attribute": "cn", "type": "integer", "default": "x"}, "default"),
    ({"attribute": "cn", "type": "integer", "default": 1.5}, "default"),
    ({"attribute": "cn", "type": "integer", "max": 9, "default": 10}, "default"),
    ({"attribute": "cn", "type": "integer", "required": True, "default": 1}, "default"),
    ({"attribute": "cn", "type": "integer", "multi": True, "default": 1}, "default"),
    ({"attribute": "cn", "type": "integer", "multi": True, "default": [1, "x"]}, "default.1"),
    ({"attribute": "cn", "type": "integer", "required": "no"}, "required"),
    ({"attribute": "cn", "type": "integer", "multi": 1}, "multi"),
    ({"attribute": "cn", "type": "integer", "description": 5}, "description"),
]


@pytest.mark.parametrize(("data", "key"), BAD_SPECS)
def test_spec_errors_carry_the_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(SpecError) as caught:
        ValueSpec.from_mapping("value", data)
    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key}: ")


def test_unknown_type_lists_the_known_ones() -> None:
    with pytest.raises(SpecError) as caught:
        ValueSpec.from_mapping("value", {"attribute": "cn", "type": "text"})
    assert all(name in caught.value.reason for name in TYPES)


@pytest.mark.parametrize("name", ["Size", "1size", "_size", "size-1", "size.x", "", "sïze"])
def test_value_names_must_be_identifiers(name: str) -> None:
    with pytest.raises(SpecError) as caught:
        ValueSpec.from_mapping(name, {"attribute": "cn", "type": "string"})
    assert caught.value.key == ""


def test_declaration_from_the_brief() -> None:
    specs = [
        ValueSpec.from_mapping(name, data)
        for name, data in yaml.safe_load(
            """
            name:  {attribute: cn, type: posix_name}
            size:  {attribute: provisiondSize, type: bytes, min: 1M, max: 10T}
            keep:  {attribute: sstBackupIntervalDaily, type: integer, min: 0, max: 99, default: 0}
            active: {attribute: sstIsActive, type: boolean, required: false, default: false}
            portals: {attribute: x, type: hostname, multi: true, required: false}
            note: {attribute: description, type: string, max_length: 200, required: false}
            expires: {attribute: e, type: date, default: 20301231}
            """
        ).items()
    ]
    by_name = {spec.name: spec for spec in specs}
    assert by_name["size"].required and by_name["size"].default is None
    assert not by_name["keep"].required and by_name["keep"].default == 0
    assert by_name["active"].default is False
    assert by_name["portals"].default == [] and by_name["portals"].multi
    assert by_name["expires"].default == datetime.date(2030, 12, 31)

    entry = {"cn": ["backup"], "provisiondsize": ["10G"], "x": ["a.example", "192.0.2.1"]}
    assert parse_entry(specs, entry) == {
        "name": "backup",
        "size": 10 * 1024**3,
        "keep": 0,
        "active": False,
        "portals": ["a.example", "192.0.2.1"],
        "note": None,
        "expires": datetime.date(2030, 12, 31),
    }
    entry |= {"sstbackupintervaldaily": ["007"], "sstisactive": ["TRUE"], "description": ["hi"]}
    parsed = parse_entry(specs, entry)
    assert (parsed["keep"], parsed["active"], parsed["note"]) == (7, True, "hi")


# --- entries and errors -----------------------------------------------------------------------


def spec(name: str, **data: Any) -> ValueSpec:
    return ValueSpec.from_mapping(name, {"attribute": "provisiondSize", "type": "bytes"} | data)


def test_missing_required_value() -> None:
    with pytest.raises(InvalidValue) as caught:
        parse_entry([spec("size")], {})
    assert (caught.value.name, caught.value.attribute, caught.value.reason) == (
        "size", "provisiondSize", "missing"
    )
    with pytest.raises(InvalidValue):
        parse_entry([spec("size")], {"provisiondsize": []})


def test_lookup_uses_the_lowercased_attribute_name() -> None:
    with pytest.raises(InvalidValue):
        parse_entry([spec("size")], {"provisiondSize": ["1G"]})
    assert parse_entry([spec("size")], {"provisiondsize": ["1G"]}) == {"size": 1024**3}


def test_single_valued_rejects_several_values() -> None:
    with pytest.raises(InvalidValue, match="2 values"):
        parse_entry([spec("size")], {"provisiondsize": ["1G", "2G"]})


def test_multi_valued() -> None:
    multi = spec("sizes", multi=True, required=False)
    assert parse_entry([multi], {}) == {"sizes": []}
    assert parse_entry([multi], {"provisiondsize": ["1K", "2K"]}) == {"sizes": [1024, 2048]}
    assert parse_entry([spec("s", multi=True, default=["1K"])], {}) == {"s": [1024]}
    with pytest.raises(InvalidValue):
        parse_entry([multi], {"provisiondsize": ["1K", "2X"]})


def test_first_error_in_declaration_order() -> None:
    specs = [spec("first", attribute="a"), spec("second", attribute="b")]
    with pytest.raises(InvalidValue) as caught:
        parse_entry(specs, {"a": ["bad"], "b": ["worse"]})
    assert caught.value.name == "first"
    with pytest.raises(InvalidValue) as caught:
        parse_entry(specs[::-1], {"a": ["bad"], "b": ["worse"]})
    assert caught.value.name == "second"


def test_bare_string_counts_as_one_value() -> None:
    assert parse_entry([spec("size")], {"provisiondsize": "1M"}) == {"size": 1024**2}


def test_invalid_value_message() -> None:
    with pytest.raises(InvalidValue) as caught:
        parse_entry([spec("size")], {"provisiondsize": ["12X"]})
    assert str(caught.value).startswith(
        "value \"size\" (attribute provisiondSize): not a size: '12X' "
    )


@pytest.mark.parametrize(
    "raw",
    [
        "12X\nbackup\t/etc/\tstolen/",
        "1\r\n\t--rsh=evil",
        "1G\u2028x",
        "\u202e1G",
        "\x00" * 10,
        "\u2028" * 100,
        "1" * 500,
        "\n".join(["x"] * 300),
    ],
)
def test_invalid_value_message_is_single_line_and_escaped(raw: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        parse_entry([spec("size")], {"provisiondsize": [raw]})
    message = str(caught.value)
    assert message.isprintable() and message.isascii()
    assert len(message) < 200
    assert "\n" not in caught.value.reason and "\t" not in caught.value.reason
    if "\n" in raw:
        assert "\\n" in message


def test_invalid_value_escapes_odd_names_too() -> None:
    error = InvalidValue("x\ny", "cn\t", "bad\u2028")
    assert str(error).isprintable()


# --- text forms and docs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "TRUE"),
        (False, "FALSE"),
        (0, "0"),
        (-7, "-7"),
        (10 * 1024**3, "10737418240"),
        (datetime.date(2024, 2, 9), "20240209"),
        ("a b", "a b"),
        (None, ""),
        (["a.example", "192.0.2.1"], "a.example,192.0.2.1"),
        ([], ""),
    ],
)
def test_as_text(value: Any, text: str) -> None:
    assert as_text(value) == text


def test_as_text_rejects_other_types() -> None:
    with pytest.raises(TypeError):
        as_text(1.5)


def test_as_text_round_trips_through_parse() -> None:
    for type_name, raw in [("boolean", "TRUE"), ("integer", "-3"), ("date", "20240229")]:
        value_type = TYPES[type_name]()
        assert as_text(value_type.parse(raw)) == raw


def test_sample_declaration_documents_and_loads() -> None:
    sample = sample_declaration()
    for cls in TYPES.values():
        assert f"# type: {cls.name}" in sample
        for option in dataclasses.fields(cls):
            assert f"option {option.name}:" in sample
    values = yaml.safe_load(sample)["values"]
    assert {data["type"] for data in values.values()} == set(TYPES)
    for name, data in values.items():
        ValueSpec.from_mapping(name, data)
