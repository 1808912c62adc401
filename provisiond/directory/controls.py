"""The LDAP controls ldap3 has no helper for: RFC 4533 (Content Synchronization) and RFC 4528
(Assertion).

ldap3 sends a request control given as `(oid, criticality, ber_bytes)` and hands back the raw
value of any response control it does not know, so all that is missing is the ASN.1: pure
functions from values to bytes and back, which keeps them testable against fixed byte vectors.
The Sync Request is encoded with pyasn1 (already an ldap3 dependency); the three sync values
the server sends (Sync State, Sync Done, Sync Info) are read directly with `ber.read`, as
pyasn1's decoder cost several percent of the daemon's CPU (issue 12); tests compare them with
pyasn1's reading of RFC 4533's ASN.1.

The Assertion control carries a BER-encoded LDAP `Filter`; ldap3's own filter parser and
compiler build it, so a filter string means exactly what it means in a search.
"""

from __future__ import annotations

import functools
import uuid
import warnings
from dataclasses import dataclass
from typing import Literal

from provisiond.directory import ber
from provisiond.directory.ber import element, octets

with warnings.catch_warnings():
    # pyasn1 0.6 deprecates names that ldap3 2.9.1 still imports (tagMap, typeMap).
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from ldap3.core.exceptions import LDAPInvalidFilterError
    from ldap3.operation.search import compile_filter, parse_filter
    from ldap3.utils.asn1 import encode as ldap_ber_encode
    from pyasn1.type import namedtype, namedval, univ

SYNC_REQUEST_OID = "1.3.6.1.4.1.4203.1.9.1.1"
SYNC_STATE_OID = "1.3.6.1.4.1.4203.1.9.1.2"
SYNC_DONE_OID = "1.3.6.1.4.1.4203.1.9.1.3"
SYNC_INFO_OID = "1.3.6.1.4.1.4203.1.9.1.4"
ASSERTION_OID = "1.3.6.1.1.12"

SyncMode = Literal["refreshOnly", "refreshAndPersist"]
StateName = Literal["present", "add", "modify", "delete"]
InfoKind = Literal["newcookie", "refreshDelete", "refreshPresent", "syncIdSet"]


class ControlError(ValueError):
    """A control value that does not decode as the RFC says it should."""


# -- ASN.1 (RFC 4533 section 2; the LDAP module uses IMPLICIT TAGS) ----------------------------


class _SyncCookie(univ.OctetString):
    pass


class _SyncRequestValue(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType(
            "mode",
            univ.Enumerated(namedValues=namedval.NamedValues(("refreshOnly", 1), ("refreshAndPersist", 3))),
        ),
        namedtype.OptionalNamedType("cookie", _SyncCookie()),
        namedtype.DefaultedNamedType("reloadHint", univ.Boolean(False)),
    )


_STATES: dict[int, StateName] = {0: "present", 1: "add", 2: "modify", 3: "delete"}

# syncInfoValue is a CHOICE of IMPLICIT context tags: newcookie a primitive OCTET STRING, the
# other three SEQUENCEs, so constructed.
_INFO_CHOICES: dict[int, InfoKind] = {
    0x80: "newcookie", 0xA1: "refreshDelete", 0xA2: "refreshPresent", 0xA3: "syncIdSet"
}


# -- values ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncState:
    """The Sync State control on a search entry: what happened to the entry `uuid`."""

    state: StateName
    uuid: str
    cookie: str | None


@dataclass(frozen=True)
class SyncDone:
    """The Sync Done control on searchResDone (end of a refreshOnly search)."""

    cookie: str | None
    refresh_deletes: bool


@dataclass(frozen=True)
class SyncInfo:
    """A Sync Info intermediate response. `refresh_done` is only meaningful for the two phase
    markers, `refresh_deletes` and `uuids` only for syncIdSet."""

    kind: InfoKind
    cookie: str | None
    refresh_done: bool = False
    refresh_deletes: bool = False
    uuids: tuple[str, ...] = ()


# -- encoding and decoding ---------------------------------------------------------------------


def sync_request_control(
    mode: SyncMode, cookie: str | None, reload_hint: bool = False
) -> tuple[str, bool, bytes]:
    """The Sync Request control, critical (a server that ignores it would return a plain
    search and the caller would take it for a sync)."""
    value = _SyncRequestValue()
    value["mode"] = mode
    if cookie:
        value["cookie"] = cookie.encode("utf-8")
    if reload_hint:
        value["reloadHint"] = True
    return SYNC_REQUEST_OID, True, bytes(ldap_ber_encode(value))


def _cookie(raw: bytes | None) -> str | None:
    if not raw:
        return None  # slapd sometimes sends an empty cookie: "nothing new", not a new state
    return raw.decode("utf-8", errors="replace")


def _uuid_text(raw: bytes) -> str:
    if len(raw) != 16:
        raise ControlError(f"syncUUID has {len(raw)} bytes, expected 16")
    return str(uuid.UUID(bytes=raw))


def _end(data: bytes, at: int) -> None:
    if at != len(data):
        raise ber.Malformed(f"{len(data) - at} bytes after the last component")


def _optional(body: bytes, at: int, tag: int) -> tuple[bytes | None, int]:
    """The content of the component at `at` if it has `tag` (OPTIONAL or DEFAULT, so it may
    be left out), else None; and where the next component starts."""
    if at < len(body) and body[at] == tag:
        _, content, at = ber.read(body, at)
        return content, at
    return None, at


def _cookie_and_flag(body: bytes, flag_default: bool) -> tuple[bytes | None, bool, int]:
    """`cookie syncCookie OPTIONAL, <flag> BOOLEAN DEFAULT <flag_default>`, how the Sync Done
    value and each SEQUENCE of a Sync Info begin; and where the next component starts."""
    cookie, at = _optional(body, 0, 0x04)
    flag, at = _optional(body, at, 0x01)
    if flag is None:
        return cookie, flag_default, at
    if len(flag) != 1:
        raise ber.Malformed("a BOOLEAN is one byte")  # X.690 8.2.1; any non-zero is TRUE
    return cookie, flag != b"\x00", at


def _sync_uuids(body: bytes, at: int) -> tuple[str, ...]:
    """`syncUUIDs SET OF syncUUID`, the last component of a syncIdSet."""
    tag, members, end = ber.read(body, at)
    if tag != 0x31:
        raise ber.Malformed("syncUUIDs is not a SET OF")
    _end(body, end)
    uuids: list[str] = []
    at = 0
    while at < len(members):
        tag, raw, at = ber.read(members, at)
        if tag != 0x04:
            raise ber.Malformed("a syncUUID is not an OCTET STRING")
        uuids.append(_uuid_text(raw))
    return tuple(uuids)


def decode_sync_state(value: bytes) -> SyncState:
    """The Sync State control's value, read directly: one comes with every change the stream
    delivers (three per provisioned entry: its request, its claim, its report), and pyasn1's
    decoder cost about a tenth of the daemon's CPU per entry (issue 12). The test compares
    it with pyasn1's reading of the same bytes (RFC 4533's syncStateValue as a pyasn1 spec)."""
    data = bytes(value)
    try:
        tag, body, end = ber.read(data)
        if tag != 0x30 or end != len(data):
            raise ber.Malformed("not one SEQUENCE")
        tag, state, at = ber.read(body)
        if tag != 0x0A or not state:
            raise ber.Malformed("state is not an ENUMERATED")
        tag, raw_uuid, at = ber.read(body, at)
        if tag != 0x04:
            raise ber.Malformed("entryUUID is not an OCTET STRING")
        raw_cookie = b""
        if at < len(body):
            tag, raw_cookie, at = ber.read(body, at)
            if tag != 0x04 or at != len(body):
                raise ber.Malformed("cookie is not the last OCTET STRING")
    except ber.Malformed as exc:
        raise ControlError(f"malformed Sync State value: {exc}") from exc
    number = int.from_bytes(state, "big", signed=True)
    if number not in _STATES:
        raise ControlError(f"unknown sync state {number}")
    return SyncState(
        state=_STATES[number],
        uuid=_uuid_text(raw_uuid),
        cookie=_cookie(raw_cookie),
    )


def decode_sync_done(value: bytes) -> SyncDone:
    """The Sync Done control's value, read directly like the Sync State's."""
    data = bytes(value)
    try:
        tag, body, end = ber.read(data)
        if tag != 0x30:
            raise ber.Malformed("not a SEQUENCE")
        _end(data, end)
        cookie, deletes, at = _cookie_and_flag(body, False)
        _end(body, at)
    except ber.Malformed as exc:
        raise ControlError(f"malformed Sync Done value: {exc}") from exc
    return SyncDone(cookie=_cookie(cookie), refresh_deletes=deletes)


def decode_sync_info(value: bytes) -> SyncInfo:
    """The Sync Info intermediate response's value, read directly: one comes with every new
    cookie the server sends, and pyasn1's decoder cost 3.5 to 5 % of the daemon's CPU
    (issue 12). The test compares it with pyasn1's reading of the same bytes."""
    data = bytes(value)
    try:
        tag, body, end = ber.read(data)
        _end(data, end)
        kind = _INFO_CHOICES.get(tag)
        if kind is None:
            raise ber.Malformed(f"unknown choice (tag {tag:#04x})")
        if kind == "newcookie":
            return SyncInfo(kind=kind, cookie=_cookie(body))
        if kind == "syncIdSet":
            cookie, deletes, at = _cookie_and_flag(body, False)
            return SyncInfo(kind=kind, cookie=_cookie(cookie), refresh_deletes=deletes,
                            uuids=_sync_uuids(body, at))
        cookie, done, at = _cookie_and_flag(body, True)
        _end(body, at)
        return SyncInfo(kind=kind, cookie=_cookie(cookie), refresh_done=done)
    except ber.Malformed as exc:
        raise ControlError(f"malformed Sync Info value: {exc}") from exc


def equality_assertion(terms: tuple[tuple[str, str], ...]) -> tuple[str, bool, bytes]:
    """The Assertion control for `(&(a=v)(b=w)...)`, encoded directly: a claim asserts its
    entry's entryCSN, a filter new for every claim, and ldap3's filter compiler costs about
    0.2 ms of CPU per call (issue 12). Only plain equality terms; tests compare the bytes with
    `assertion_control`'s."""
    matches = b"".join(element(0xA3, octets(name) + octets(value))  # equalityMatch
                       for name, value in terms)
    return ASSERTION_OID, True, element(0xA0, matches)  # and


@functools.lru_cache(maxsize=64)
def assertion_control(filter_text: str) -> tuple[str, bool, bytes]:
    """The Assertion control: the server performs the operation only if the target entry
    matches `filter_text`, else fails it with assertionFailed (122). Cached: a claim asserts
    one of a handful of filters (one per request of each service), and encoding one with
    ldap3's filter compiler costs a claim about 3 % of its CPU (issue 12)."""
    try:
        root = parse_filter(
            filter_text, None, auto_escape=True, auto_encode=True, validator=None, check_names=False
        )
    except LDAPInvalidFilterError as exc:
        raise ValueError(f"invalid LDAP filter {filter_text!r}: {exc}") from exc
    if len(root.elements) != 1:
        raise ValueError(f"not a single LDAP filter: {filter_text!r}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        encoded = ldap_ber_encode(compile_filter(root.elements[0]))
    return ASSERTION_OID, True, bytes(encoded)
