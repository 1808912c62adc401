"""The systemd notification protocol (sd_notify(3)), with the standard library only.

Under a `Type=notify` unit systemd passes `NOTIFY_SOCKET`, the path of an AF_UNIX datagram
socket (a leading `@` means the abstract namespace); each datagram is newline-separated
`KEY=VALUE` assignments: `READY=1` once the service is up, `STATUS=...` a one-line state for
`systemctl status`, `WATCHDOG=1` as a keep-alive when the unit sets `WatchdogSec=`
(`WATCHDOG_USEC` and `WATCHDOG_PID` tell the interval and whom it is meant for), `RELOADING=1`
and `STOPPING=1` around a reload and a stop.

Without `NOTIFY_SOCKET` (a terminal, cron, tests, another init) every call does nothing: there is
no dependency on systemd being present. A failed send is logged once and otherwise ignored; the
notification socket going away must never stop provisioning.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

from provisiond.logfmt import kv

log = logging.getLogger("provisiond.notify")


def _address(value: str) -> str | bytes | None:
    if value.startswith("@"):
        return b"\0" + value[1:].encode()  # abstract namespace
    if value.startswith("/"):
        return value
    return None  # vsock and other forms are not used by a service manager for us


def watchdog_timeout(environ: Mapping[str, str] | None = None) -> float | None:
    """The unit's `WatchdogSec=` in seconds, or None when no watchdog is enabled for this
    process."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None  # meant for another process (e.g. our parent before a fork)
    return int(usec) / 1_000_000


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between `WATCHDOG=1` pings (half the configured timeout, as systemd advises),
    or None when no watchdog is enabled for this process."""
    timeout = watchdog_timeout(environ)
    return timeout / 2 if timeout is not None else None


def stderr_is_journal(environ: Mapping[str, str] | None = None) -> bool:
    """Whether stderr is connected to the journal (`JOURNAL_STREAM` names its device:inode),
    in which case logging to stderr as well as to syslog would write every line twice."""
    env = os.environ if environ is None else environ
    device, _, inode = env.get("JOURNAL_STREAM", "").partition(":")
    if not device.isdigit() or not inode.isdigit():
        return False
    try:
        info = os.fstat(2)
    except OSError:
        return False
    return (info.st_dev, info.st_ino) == (int(device), int(inode))


class Notifier:
    """Sends notifications to the service manager; a no-op when there is none."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self.address = _address(raw) if raw else None
        self.watchdog_timeout = watchdog_timeout(env)
        self.watchdog = self.watchdog_timeout / 2 if self.watchdog_timeout else None
        self._warned = False
        self._last_status: str | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str | int) -> bool:
        """Send one datagram of `KEY=VALUE` lines (keys upper-cased); True if it was sent."""
        if self.address is None:
            return False
        lines = []
        for key, value in fields.items():
            text = " ".join(str(value).split())  # one line per assignment
            lines.append(f"{key.upper()}={text}")
        payload = ("\n".join(lines) + "\n").encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall(payload)
        except OSError as exc:
            if not self._warned:
                log.warning(kv(event="notify-failed", socket=str(self.address), reason=str(exc)))
                self._warned = True
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        fields: dict[str, str | int] = {"READY": 1}
        if status is not None:
            fields["STATUS"] = status
            self._last_status = status
        return self.send(**fields)

    def status(self, text: str) -> bool:
        """A new `STATUS=` line; unchanged text is not sent again."""
        if text == self._last_status:
            return False
        self._last_status = text
        return self.send(STATUS=text)

    def ping(self) -> bool:
        """`WATCHDOG=1`: the main loop is alive."""
        return self.send(WATCHDOG=1)

    def reloading(self) -> bool:
        self._last_status = "reloading the configuration"
        return self.send(RELOADING=1, STATUS=self._last_status)

    def stopping(self) -> bool:
        self._last_status = "stopping: finishing entries in progress"
        return self.send(STOPPING=1, STATUS=self._last_status)
