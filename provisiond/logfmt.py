"""How provisiond writes a log line, and what a syslog address and tag may be.

Operators grep syslog, so every message is one line of stable `key=value` pairs (`kv`) that
survives `grep dn=...` and simple parsers; control characters are escaped so a hostile LDAP
value cannot forge extra log lines. Every layer logs, so this sits at the bottom, apart from
the process's logging set-up (process/logs.py); the configuration loader checks syslog
settings with the same functions the set-up uses.
"""

from __future__ import annotations

import re

DEFAULT_SYSLOG_SOCKET = "/dev/log"

_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", '"': '\\"', "\\": "\\\\"}


def _is_control(char: str) -> bool:
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F or char in "\u2028\u2029"


# kv() runs for every log line, so both are one regex scan, not a Python call per character.
_QUOTE_NEEDED = re.compile('[ "\x00-\x1f\x7f-\x9f\u2028\u2029]')
_ESCAPED = re.compile('["\\\\\x00-\x1f\x7f-\x9f\u2028\u2029]')  # what _escape changes


def _escape(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    if _is_control(char):
        return f"\\x{ord(char):02x}" if ord(char) <= 0xFF else f"\\u{ord(char):04x}"
    return char


def _escape_match(match: re.Match[str]) -> str:
    return _escape(match.group())


def kv(**fields: object) -> str:
    """`key=value` pairs in the given order; `None` values are left out.

    A value is double-quoted (with `\\n \\t \\r \\" \\\\` and `\\xNN` escapes) when it is empty or
    contains a space, a double quote or a control character. An `=` alone does not force quotes:
    keys never contain `=`, so the first one splits unambiguously and DNs stay greppable
    (`dn=cn=a,ou=x`). Booleans render as `true`/`false`.
    """
    parts = []
    for key, value in fields.items():  # one loop, no call per value: this runs for every line
        if type(value) is str:
            text = value
        elif type(value) is int:  # never quoted (and not a bool: type() is exact)
            parts.append(f"{key}={value}")
            continue
        elif value is None:
            continue
        elif type(value) is bool:
            text = "true" if value else "false"
        else:
            text = str(value)
        if not text or _QUOTE_NEEDED.search(text) is not None:
            text = '"' + _ESCAPED.sub(_escape_match, text) + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)


# ASCII only: str.isdigit() takes "١٢" as a port, and int() reads it as 12.
_HOST = re.compile(r"[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]", re.ASCII)
_PORT = re.compile(r"[0-9]{1,5}", re.ASCII)
# RFC 5424 APP-NAME: 1-48 printable ASCII characters; ':', '[', ']' and '%' would confuse
# the `tag[pid]:` header and format strings.
_TAG = re.compile(r"[!-~]{1,48}", re.ASCII)


def parse_syslog_address(address: str | None) -> str | tuple[str, int]:
    """A unix socket path as is, or `host:port` / `[v6]:port` for UDP; ValueError if neither
    (the configuration loader calls this too, so a bad address stops `check`, not `run`)."""
    if not address:
        return DEFAULT_SYSLOG_SOCKET
    if address.startswith("/"):
        if any(_is_control(c) for c in address):
            raise ValueError(f"syslog address {address!r}: control character in the path")
        return address
    host, sep, port = address.rpartition(":")
    if not sep or not _HOST.fullmatch(host) or not _PORT.fullmatch(port) or not (
        0 < int(port) < 65536
    ):
        raise ValueError(f"syslog address {address!r}: expected a socket path or host:port")
    return host.strip("[]"), int(port)


def check_tag(tag: str) -> None:
    """ValueError unless `tag` is a valid syslog tag (the loader checks it too)."""
    if not _TAG.fullmatch(tag) or any(c in ":[]%" for c in tag):
        raise ValueError(f"syslog tag {tag!r}: use 1-48 printable ASCII characters without "
                         "spaces, ':', '[', ']' or '%'")
