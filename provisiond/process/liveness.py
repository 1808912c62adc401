"""Whether each service of the running daemon has a change stream, shared with `status`.

`status` is a separate process that reads the directory; it cannot see the daemon's streams.
A service whose stream is down processes nothing while the directory looks fine to `status`,
so the daemon publishes its streams' state in the state directory (`streams.json`, written on
change by the main loop, removed on exit) and `status` trusts it only when its pid is the
running daemon's. The same state decides whether the systemd watchdog is still pinged.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from provisiond.host.files import atomic_write
from provisiond.logfmt import kv

log = logging.getLogger("provisiond.daemon")

FILE_NAME = "streams.json"


@dataclass(frozen=True)
class ServiceStream:
    service: str
    connected: bool
    reason: str
    since: float  # Unix time the stream last came up or went down
    running: bool  # the stream's thread is alive


def path(state_dir: Path) -> Path:
    return Path(state_dir) / FILE_NAME


def down_for(stream: ServiceStream, now: float | None = None) -> float:
    """Seconds the service has been without a stream (0 while connected)."""
    if stream.connected and stream.running:
        return 0.0
    return max(0.0, (time.time() if now is None else now) - stream.since)


def render(pid: int, streams: Iterable[ServiceStream]) -> bytes:
    services = {s.service: {k: v for k, v in asdict(s).items() if k != "service"}
                for s in streams}
    return (json.dumps({"pid": pid, "services": services}, indent=2, sort_keys=True)
            + "\n").encode()


class Publisher:
    """Writes `streams.json` when its content changes; a failure is logged once per reason
    and never stops the daemon."""

    def __init__(self, state_dir: Path, pid: int) -> None:
        self.path = path(state_dir)
        self.pid = pid
        self._last: bytes | None = None
        self._error: str | None = None

    def publish(self, streams: Iterable[ServiceStream]) -> None:
        data = render(self.pid, streams)
        if data == self._last:
            return
        try:
            atomic_write(self.path, data, mode=0o644)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if reason != self._error:
                log.error(kv(event="streams-file-failed", path=str(self.path), reason=reason))
                self._error = reason
            return
        self._last, self._error = data, None

    def remove(self) -> None:
        if read(self.path.parent).get("pid") == self.pid:
            self.path.unlink(missing_ok=True)
        self._last = None


def read(state_dir: Path) -> Mapping[str, Any]:
    """The published state ({} when there is none or it cannot be read)."""
    try:
        data = json.loads(path(state_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def of_daemon(state_dir: Path, pid: int | None) -> Mapping[str, Mapping[str, Any]] | None:
    """Each service's stream as the daemon running as `pid` published it; None when unknown
    (no daemon, or the file is from another process)."""
    data = read(state_dir)
    services = data.get("services")
    if pid is None or data.get("pid") != pid or not isinstance(services, dict):
        return None
    return services
