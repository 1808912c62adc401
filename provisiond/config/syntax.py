"""LDAP syntax in the configuration: URIs, DNs and search filters, checked at load.

ldap3 accepts `ldap//x` or `ldap://a b` as a server and only fails when connecting, and
sends `(a=b))((c=d)` to the server (or fails with its own exception) when the first entry
is searched for: a daemon that started with such a value fails later, in a retry loop or
with a traceback. So each is parsed here (filters and DNs with ldap3's own parsers), and a
ValueError says why, for the loader to report with the file and key.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from typing import Any, Protocol

from ldap3.core.exceptions import LDAPException
from ldap3.operation.search import parse_filter

from provisiond.model.value_types import DnType, HostnameType, has_control_characters

SCHEMES = ("ldap", "ldaps", "ldapi")
# A unix socket path must fit in sockaddr_un.sun_path (108 bytes with the final NUL).
MAX_SOCKET_PATH = 107
_URI = re.compile(r"(?P<scheme>[A-Za-z]+)://(?P<authority>[^/?#]*)/?", re.ASCII)
_HOST_PORT = re.compile(r"(?P<host>\[[^\]]*\]|[^:\[\]]*)(?::(?P<port>[0-9]{1,5}))?", re.ASCII)
# RFC 4512 attribute description: a name or an OID, then ;options
_ATTRIBUTE = re.compile(r"(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)*)(?:;[A-Za-z0-9-]+)*",
                        re.ASCII)


def check_uri(uri: str) -> str:
    """An LDAP URI as ldap3 takes it: ldap://host[:port], ldaps://host[:port] or
    ldapi://<percent-encoded socket path>, an optional trailing '/' and nothing else."""
    match = _URI.fullmatch(uri)
    if match is None:
        raise ValueError(f"not an LDAP URI: {uri!r} (expected ldap://host[:port], "
                         "ldaps://host[:port] or ldapi://%2Fpath%2Fto%2Fsocket)")
    scheme, authority = match["scheme"].lower(), match["authority"]
    if scheme not in SCHEMES:
        raise ValueError(f"{uri!r}: the scheme must be ldap, ldaps or ldapi, not {scheme!r}")
    if scheme == "ldapi":
        path = urllib.parse.unquote(authority)
        if not path.startswith("/") or has_control_characters(path):
            raise ValueError(f"{uri!r}: ldapi needs the absolute socket path, percent-encoded "
                             "(ldapi://%2Frun%2Fslapd%2Fldapi)")
        if len(path.encode()) > MAX_SOCKET_PATH:
            raise ValueError(f"{uri!r}: the socket path is longer than {MAX_SOCKET_PATH} bytes")
        return uri
    parts = _HOST_PORT.fullmatch(authority)
    if parts is None or not parts["host"]:
        raise ValueError(f"{uri!r}: expected {scheme}://host or {scheme}://host:port")
    host, port = parts["host"], parts["port"]
    try:
        if host.startswith("["):
            ipaddress.IPv6Address(host[1:-1])
        else:
            HostnameType().parse(host)
    except ValueError as exc:
        raise ValueError(f"{uri!r}: bad host: {exc}") from None
    if port is not None and not 0 < int(port) < 65536:
        raise ValueError(f"{uri!r}: the port must be from 1 to 65535, not {port}")
    return uri


def check_dn(dn: str) -> str:
    """A DN (RFC 4514) as ldap3 parses it; escaped specials are allowed."""
    return DnType(charset="printable").parse(dn)


def check_filter(text: str) -> str:
    """One complete LDAP filter in parentheses (RFC 4515), nothing after it, with attribute
    names that are names or OIDs; returned without surrounding whitespace."""
    text = text.strip()
    if has_control_characters(text):
        raise ValueError(f"control character in the filter {text!r}")
    if not (text.startswith("(") and text.endswith(")")):
        raise ValueError(f"not an LDAP filter in parentheses: {text!r}")
    try:
        tree = parse_filter(text, None, auto_escape=False, auto_encode=False, validator=None,
                            check_names=False)
    except LDAPException as exc:
        raise ValueError(f"not an LDAP filter: {text!r} ({exc})") from None
    _check_attributes(tree, text)
    return text


def _check_attributes(node: Any, text: str) -> None:
    assertion = getattr(node, "assertion", None) or {}
    attribute = assertion.get("attr")
    # `(:1.2.3:=x)`, an extensible match by rule alone, has no attribute (attr False)
    if attribute is not False and "attr" in assertion and not (
        isinstance(attribute, str) and _ATTRIBUTE.fullmatch(attribute)
    ):
        raise ValueError(f"not an LDAP filter: {text!r} (bad attribute name {attribute!r})")
    for child in node.elements:
        _check_attributes(child, text)


class TlsSettings(Protocol):
    """What of the `ldap:` settings TLS depends on (LdapSettings, read-only)."""

    @property
    def uri(self) -> str: ...
    @property
    def write_uri(self) -> str | None: ...
    @property
    def start_tls(self) -> bool: ...
    @property
    def ca_file(self) -> str | None: ...


def uses_tls(uri: str, start_tls: bool) -> bool:
    return uri.lower().startswith("ldaps://") or (start_tls and uri.lower().startswith("ldap://"))


def settings_problem(settings: TlsSettings) -> tuple[str, str] | None:
    """(key, reason) when the TLS settings contradict the URIs; None when they make sense."""
    uris = [uri for uri in (settings.uri, settings.write_uri) if uri]
    if settings.start_tls:
        for uri in uris:
            if uri.lower().startswith("ldaps://"):
                return "start_tls", (f"{uri} is TLS from the first byte: drop start_tls, "
                                     "or use ldap:// for StartTLS")
            if uri.lower().startswith("ldapi://"):
                return "start_tls", f"{uri} is a local socket: StartTLS needs ldap://"
    if settings.ca_file and not any(uses_tls(uri, settings.start_tls) for uri in uris):
        return "ca_file", f"no connection uses TLS ({settings.uri} without start_tls)"
    return None
