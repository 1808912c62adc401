"""Search entries decoded to their raw values only, on the change stream's connections.

ldap3 turns every search entry it receives into two dicts: `raw_attributes` (the bytes) and
`attributes` (each value decoded to text, or formatted by the schema). provisiond reads only
the raw ones (decode.text_attributes), and the change stream and the mirrors' refresh passes
receive every entry of a subtree: building `attributes` was about a tenth of the daemon's CPU
in a burst with a file of all entries (issue 12). On these connections a search entry is
decoded as ldap3 decodes it, less that dict; every other response still goes through ldap3's
own decoder. `tests/directory/test_raw_entries.py` compares the results with ldap3's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ldap3
from ldap3.utils.conv import to_unicode

SEARCH_RESULT_ENTRY = 4  # the protocolOp of ldap3's fast decoder


def _text(raw: bytes) -> str:
    """ldap3's to_unicode(raw, from_server=True) with its default server encoding, UTF-8,
    tried first without its four configuration look-ups (ldap3 decodes every attribute name
    and DN of every entry this way)."""
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return str(to_unicode(raw, from_server=True))  # its other encodings, or its error


def _raw_attributes(attribute_list: list[Any]) -> dict[str, list[bytes] | None]:
    """As ldap3's raw_attributes_to_dict_fast, in a plain dict (names are compared
    lower-cased by decode.text_attributes, not looked up by case)."""
    return {_text(attribute[3][0][3]): [bytes(value[3]) for value in attribute[3][1][3]] or None
            for attribute in attribute_list}


def raw_entries_only(connection: ldap3.Connection) -> ldap3.Connection:
    """Make `connection` decode search entries without the `attributes` dict (see the module
    doc); returns it. Only for connections whose entries are read through `raw_attributes`."""
    strategy = connection.strategy
    decode_other: Callable[[dict[str, Any]], dict[str, Any]] = strategy.decode_response_fast
    decode_control = strategy.decode_control_fast

    def decode_response_fast(message: dict[str, Any]) -> dict[str, Any]:
        if message["protocolOp"] != SEARCH_RESULT_ENTRY:
            return decode_other(message)
        payload = message["payload"]
        result: dict[str, Any] = {
            "raw_dn": payload[0][3],
            "dn": _text(payload[0][3]),
            "raw_attributes": _raw_attributes(payload[1][3]),
            "attributes": {},
            "type": "searchResEntry",
        }
        if message["controls"]:
            result["controls"] = dict(decode_control(control[3])
                                      for control in message["controls"])
        return result

    strategy.decode_response_fast = decode_response_fast
    return connection
