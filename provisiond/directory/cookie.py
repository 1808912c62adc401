"""Sync cookies: what they say, and keeping the latest one on disk.

The server treats a cookie as opaque state and so does the change stream; this module reads
one only to validate a stored file, to find the newest CSN (the poll fallback searches from
it) and for tests. OpenLDAP writes `rid=RRR[,sid=SSS],csn=CSN[;CSN...][,delcsn=CSN]` (one
CSN per provider in multi-provider setups; `delcsn` since 2.5, after a delete); the poll
fallback writes `csn=CSN`. The legacy Perl daemon kept the raw cookie on one line of a file
and started from `rid=001,csn=` when it had none: that empty form means "no state".

The file is replaced atomically (temp file, fsync, rename, fsync of the directory) because a
torn or lost cookie after a power cut means either a full refresh or, worse, a cookie that is
newer than the work actually done.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from provisiond.host.files import atomic_write

CSN_PATTERN = re.compile(r"\d{14}\.\d{6}Z#[0-9a-fA-F]{6}#[0-9a-fA-F]{3}#[0-9a-fA-F]{6}")
_RID = re.compile(r"\d{1,3}")
_SID = re.compile(r"[0-9a-fA-F]{1,3}")
_FIELDS = ("rid", "sid", "csn", "delcsn")


@dataclass(frozen=True)
class Cookie:
    rid: str | None
    sid: str | None
    csns: tuple[str, ...]
    delcsn: str | None = None

    @property
    def text(self) -> str:
        parts = []
        if self.rid is not None:
            parts.append(f"rid={self.rid}")
        if self.sid is not None:
            parts.append(f"sid={self.sid}")
        parts.append("csn=" + ";".join(self.csns))
        if self.delcsn is not None:
            parts.append(f"delcsn={self.delcsn}")
        return ",".join(parts)


def _check_csn(value: str, where: str) -> str:
    if not CSN_PATTERN.fullmatch(value):
        raise ValueError(
            f"malformed CSN {value!r} in {where}: expected YYYYmmddHHMMSS.ffffffZ#cccccc#sid#mmmmmm"
        )
    return value


def parse_cookie(text: str) -> Cookie | None:
    """The cookie in `text`; None for a blank one or one without CSN (`rid=001,csn=`).

    Raises ValueError naming what is wrong with anything else."""
    text = text.strip()
    if not text:
        return None
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep:
            raise ValueError(f"malformed cookie {text!r}: {part!r} is not key=value")
        if key not in _FIELDS:
            raise ValueError(f"malformed cookie {text!r}: unknown field {key!r}")
        if key in fields:
            raise ValueError(f"malformed cookie {text!r}: {key} given twice")
        fields[key] = value.strip()
    rid, sid = fields.get("rid"), fields.get("sid")
    if rid is not None and not _RID.fullmatch(rid):
        raise ValueError(f"malformed cookie {text!r}: rid must be 1-3 decimal digits")
    if sid is not None and not _SID.fullmatch(sid):
        raise ValueError(f"malformed cookie {text!r}: sid must be 1-3 hex digits")
    if not fields.get("csn"):
        if fields.get("delcsn"):
            raise ValueError(f"malformed cookie {text!r}: delcsn without csn")
        return None
    csns = tuple(_check_csn(csn, f"cookie {text!r}") for csn in fields["csn"].split(";"))
    delcsn = fields.get("delcsn") or None
    if delcsn is not None:
        _check_csn(delcsn, f"cookie {text!r}")
    return Cookie(rid=rid, sid=sid, csns=csns, delcsn=delcsn)


def newest_csn(cookie: Cookie | str | None) -> str | None:
    """The latest CSN of any provider in the cookie (CSNs sort lexically in time order)."""
    if isinstance(cookie, str):
        cookie = parse_cookie(cookie)
    if cookie is None or not cookie.csns:
        return None
    return max(cookie.csns)


class CookieStore:
    """The latest cookie of one service, as `<state_dir>/<service>.cookie`."""

    def __init__(self, state_dir: Path, service: str) -> None:
        if not service or service.startswith(".") or "/" in service or "\0" in service:
            raise ValueError(f"service name {service!r} cannot be used as a file name")
        self.state_dir = Path(state_dir)
        self.service = service

    @property
    def path(self) -> Path:
        return self.state_dir / f"{self.service}.cookie"

    def load(self) -> str | None:
        """The stored cookie, or None when there is none (no file, blank, legacy empty form).

        Raises ValueError when the file holds something that is not a cookie."""
        try:
            with open(self.path, encoding="utf-8") as handle:
                line = handle.readline().strip()
        except FileNotFoundError:
            return None
        try:
            parsed = parse_cookie(line)
        except ValueError as exc:
            raise ValueError(f"{self.path}: {exc}") from exc
        return line if parsed is not None else None

    def save(self, cookie: str) -> None:
        if not cookie or "\n" in cookie or "\r" in cookie:
            raise ValueError("a cookie is one non-empty line")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, (cookie + "\n").encode(), mode=0o600)
