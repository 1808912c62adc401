"""The shipped schema: the LDIF is generated from the .schema file and loads into slapd."""

from __future__ import annotations

import re
from pathlib import Path

from provisiond.testing.schema import schema_to_ldif

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "etc" / "schema"
ARC = "2.25.28380662826128960243768550210952883964"


def test_ldif_is_generated_from_the_schema_file() -> None:
    source = (SCHEMA_DIR / "provisiond.schema").read_text()
    assert (SCHEMA_DIR / "provisiond.ldif").read_text() == schema_to_ldif(source, "provisiond")


def test_oids_live_under_the_uuid_arc_and_are_unique() -> None:
    ldif = (SCHEMA_DIR / "provisiond.ldif").read_text()
    assert f"olcObjectIdentifier: provisiond {ARC}" in ldif
    oids = re.findall(r"^olc(?:AttributeTypes|ObjectClasses): \( (\S+)", ldif, re.M)
    assert oids and len(oids) == len(set(oids))
    assert all(oid.startswith(("provisiondAttributeType:", "provisiondObjectClass:"))
               for oid in oids)


def test_provisioning_attributes_match_stoney_syntaxes() -> None:
    text = (SCHEMA_DIR / "provisiond.schema").read_text()

    def definition(name: str) -> str:
        match = re.search(rf"NAME '{name}'(.*?)\)\n", text, re.S)
        assert match, name
        return " ".join(match.group(1).split())

    assert "EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15" in definition(
        "provisiondMode")
    assert "EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15" in definition(
        "provisiondState")
    assert "SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE" in definition(
        "provisiondExecutionDate")
    assert "EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27{3}" in definition(
        "provisiondReturnValue")
