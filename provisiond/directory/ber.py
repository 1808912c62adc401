"""BER elements, for the two requests provisiond encodes itself (directory/modify.py and the
claim's Assertion control in directory/controls.py): encoding them through ldap3's pyasn1
objects costs more CPU per entry than the rest of the claim (issue 12)."""

from __future__ import annotations


def element(tag: int, content: bytes) -> bytes:
    """One BER element with a definite length (short form below 128 bytes, else long)."""
    size = len(content)
    if size < 0x80:
        return bytes((tag, size)) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content


def octets(value: str | bytes) -> bytes:
    """An OCTET STRING (text as UTF-8)."""
    return element(0x04, value.encode("utf-8") if isinstance(value, str) else value)


def integer(number: int) -> bytes:
    """An INTEGER, in the fewest two's complement bytes."""
    return element(0x02, number.to_bytes(number.bit_length() // 8 + 1, "big", signed=True))


class Malformed(ValueError):
    """Bytes that are not the BER element expected."""


def read(data: bytes, at: int = 0) -> tuple[int, bytes, int]:
    """The element at `at`: (its tag, its content, where the next one starts). Definite
    lengths only (what RFC 4511 allows); raises Malformed."""
    if at + 2 > len(data):
        raise Malformed("truncated element")
    tag, first = data[at], data[at + 1]
    at += 2
    if first & 0x80:
        count = first & 0x7F
        if count == 0 or count > 4 or at + count > len(data):
            raise Malformed("bad length")
        size = int.from_bytes(data[at:at + count], "big")
        at += count
    else:
        size = first
    if at + size > len(data):
        raise Malformed("element longer than its container")
    return tag, data[at:at + size], at + size
