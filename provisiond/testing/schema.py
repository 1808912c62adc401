"""Convert an OpenLDAP `.schema` file into a cn=config LDIF entry.

The `.schema` file is the one source of truth; the LDIF beside it is generated from it so the
two can never drift (a test compares them). Only what our schema files use is supported:
objectIdentifier macros, attributetype and objectclass definitions, `#` comments.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_DEFINITION = re.compile(r"^(attributetype|objectclass|objectidentifier)\s+(.*)$", re.I | re.S)


def _statements(text: str) -> list[str]:
    """Join continuation lines (leading white space) into one statement each."""
    statements: list[str] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0] in " \t" and statements:
            statements[-1] += " " + line.strip()
        else:
            statements.append(line.strip())
    return statements


def schema_to_ldif(text: str, name: str) -> str:
    """Return the cn=config LDIF for schema `text` as entry `cn=<name>,cn=schema,cn=config`."""
    lines = [
        f"dn: cn={name},cn=schema,cn=config",
        "objectClass: olcSchemaConfig",
        f"cn: {name}",
    ]
    for statement in _statements(text):
        match = _DEFINITION.match(statement)
        if not match:
            raise ValueError(f"unsupported schema statement: {statement[:60]}")
        keyword, body = match.group(1).lower(), re.sub(r"\s+", " ", match.group(2))
        attribute = {
            "objectidentifier": "olcObjectIdentifier",
            "attributetype": "olcAttributeTypes",
            "objectclass": "olcObjectClasses",
        }[keyword]
        lines.append(f"{attribute}: {body}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Regenerate etc/schema/*.ldif from the .schema files given (default: all in etc/schema)."""
    args = argv if argv is not None else sys.argv[1:]
    paths = [Path(a) for a in args] or sorted(Path("etc/schema").glob("*.schema"))
    for path in paths:
        ldif = schema_to_ldif(path.read_text(), path.stem)
        path.with_suffix(".ldif").write_text(ldif)
        print(f"wrote {path.with_suffix('.ldif')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
