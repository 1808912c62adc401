"""What the server sent, as text, without losing anything that names an entry.

ldap3 decodes a DN that is not valid UTF-8 with latin-1 instead (slapd accepts such DNs, e.g.
`cn=\\ED\\A0\\80`), and a read, claim or report sent with that string names another entry: the
claim fails with noSuchObject and the entry is never processed. ldap3 keeps the bytes it
received (`raw_dn`), so DNs are made from those: valid UTF-8 as it is, and every byte that is
not part of valid UTF-8 as an RFC 4514 hex escape (`\\ED`), which the server parses back to the
same byte. The DN then reaches its entry, and shows in logs and messages as printable text.

Attribute values are decoded for reading (undecodable bytes become U+FFFD); the value types
reject what they cannot use.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from ldap3.core.exceptions import LDAPException
from ldap3.utils.dn import parse_dn

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")  # entryUUID
_ESCAPED = range(0xDC80, 0xDD00)  # how "surrogateescape" carries the bytes 0x80-0xFF


def checked_uuid(text: str) -> str:
    """`text` if it is an entryUUID as the server writes it, else ValueError: what names a
    record in the daemon's state (journal, provisioned store)."""
    if not UUID.fullmatch(text):
        raise ValueError(f"not an entryUUID: {text!r}")
    return text


def dn_text(raw: bytes | str) -> str:
    """A DN as the server sent it: text where it is valid UTF-8, `\\XX` for other bytes."""
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="surrogateescape")
        return "".join(f"\\{ord(c) - 0xDC00:02X}" if ord(c) in _ESCAPED else c for c in text)


def response_dn(response: Mapping[str, Any]) -> str:
    """The DN of one of ldap3's response dicts, from the bytes received when it kept them
    (its fast decoder does; the other one keeps only text)."""
    raw = response.get("raw_dn")
    if isinstance(raw, bytes | bytearray):
        return dn_text(bytes(raw))
    return str(response.get("dn") or "")


def text_attributes(raw: Mapping[str, Sequence[bytes]]) -> Mapping[str, tuple[str, ...]]:
    """Lower-cased names, values decoded as UTF-8 (undecodable bytes replaced)."""
    return MappingProxyType(
        {
            name.lower(): tuple(
                v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v)
                for v in values
            )
            for name, values in raw.items()
        }
    )


@functools.lru_cache(maxsize=16384)
def dn_key(dn: str) -> tuple[tuple[str, str], ...]:
    """A DN's RDNs, attribute types and values lower-cased, escapes and spacing resolved by
    ldap3's DN parser: the one way provisiond compares DNs. Raises ValueError.

    Cached (a pure function of the text): every render of a file of all entries looks its
    members and their references up by DN, and ldap3's parser costs tens of microseconds a
    DN; a burst of 1,000 iSCSI targets parsed the same few thousand DNs at each of dozens of
    renders (issue 12). A few thousand DNs are a few MiB at most."""
    try:
        parts = parse_dn(dn, escape=False, strip=True)
    except (LDAPException, ValueError, TypeError) as exc:
        raise ValueError(str(exc) or "not a DN") from exc
    return tuple((attribute.lower(), value.lower()) for attribute, value, _sep in parts)


def same_dn(left: str, right: str) -> bool:
    """Whether two DNs name the same entry as far as we can tell without the schema's
    matching rules (case-insensitive); something that is not a DN equals nothing."""
    try:
        return dn_key(left) == dn_key(right)
    except ValueError:
        return False
