"""The LDAP controls ldap3 has no helper for: RFC 4533 (Content Synchronization) and RFC 4528
(Assertion).

ldap3 sends a request control given as `(oid, criticality, ber_bytes)` and hands back the raw
value of any response control it does not know, so all that is missing is the ASN.1. It is
written here with pyasn1 (already an ldap3 dependency) as pure functions from values to bytes
and back, which keeps them testable against fixed byte vectors.

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
    from pyasn1.codec.ber import decoder
    from pyasn1.error import PyAsn1Error
    from pyasn1.type import constraint, namedtype, namedval, tag, univ

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


class _SyncUUID(univ.OctetString):
    subtypeSpec = constraint.ValueSizeConstraint(16, 16)


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



class _SyncDoneValue(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.OptionalNamedType("cookie", _SyncCookie()),
        namedtype.DefaultedNamedType("refreshDeletes", univ.Boolean(False)),
    )


class _RefreshPhase(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.OptionalNamedType("cookie", _SyncCookie()),
        namedtype.DefaultedNamedType("refreshDone", univ.Boolean(True)),
    )


class _SyncIdSet(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.OptionalNamedType("cookie", _SyncCookie()),
        namedtype.DefaultedNamedType("refreshDeletes", univ.Boolean(False)),
        namedtype.NamedType("syncUUIDs", univ.SetOf(componentType=_SyncUUID())),
    )


def _context(number: int, constructed: bool) -> tag.Tag:
    form = tag.tagFormatConstructed if constructed else tag.tagFormatSimple
    return tag.Tag(tag.tagClassContext, form, number)


class _SyncInfoValue(univ.Choice):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("newcookie", _SyncCookie().subtype(implicitTag=_context(0, False))),
        namedtype.NamedType("refreshDelete", _RefreshPhase().subtype(implicitTag=_context(1, True))),
        namedtype.NamedType("refreshPresent", _RefreshPhase().subtype(implicitTag=_context(2, True))),
        namedtype.NamedType("syncIdSet", _SyncIdSet().subtype(implicitTag=_context(3, True))),
    )


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


def _decode(value: bytes, spec: univ.Asn1Item, what: str) -> univ.Asn1Item:
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            decoded, rest = decoder.decode(bytes(value), asn1Spec=spec)
    except (PyAsn1Error, TypeError) as exc:
        raise ControlError(f"malformed {what} value: {exc}") from exc
    if rest:
        raise ControlError(f"malformed {what} value: {len(rest)} trailing bytes")
    return decoded


def _cookie(component: univ.Asn1Item | bytes | None) -> str | None:
    if component is None or (not isinstance(component, bytes) and not component.isValue):
        return None
    raw = bytes(component)
    if not raw:
        return None  # slapd sometimes sends an empty cookie: "nothing new", not a new state
    return raw.decode("utf-8", errors="replace")


def _uuid_text(raw: univ.Asn1Item | bytes) -> str:
    octets = bytes(raw)
    if len(octets) != 16:
        raise ControlError(f"syncUUID has {len(octets)} bytes, expected 16")
    return str(uuid.UUID(bytes=octets))


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
    decoded = _decode(value, _SyncDoneValue(), "Sync Done")
    return SyncDone(
        cookie=_cookie(decoded["cookie"]),
        refresh_deletes=bool(decoded["refreshDeletes"]),
    )


def decode_sync_info(value: bytes) -> SyncInfo:
    decoded = _decode(value, _SyncInfoValue(), "Sync Info")
    kind = decoded.getName()
    inner = decoded.getComponent()
    if kind == "newcookie":
        return SyncInfo(kind="newcookie", cookie=_cookie(inner))
    if kind in ("refreshDelete", "refreshPresent"):
        return SyncInfo(
            kind=kind, cookie=_cookie(inner["cookie"]), refresh_done=bool(inner["refreshDone"])
        )
    if kind == "syncIdSet":
        return SyncInfo(
            kind="syncIdSet",
            cookie=_cookie(inner["cookie"]),
            refresh_deletes=bool(inner["refreshDeletes"]),
            uuids=tuple(_uuid_text(item) for item in inner["syncUUIDs"]),
        )
    raise ControlError(f"unknown Sync Info choice {kind!r}")


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
