"""Logging for operators who watch syslog.

Operators grep syslog, so every message is one line of stable `key=value` pairs (`kv`) that
survives `grep dn=...` and simple parsers; control characters are escaped so a hostile LDAP
value cannot forge extra log lines. Records go to syslog in the classic `tag[pid]: message`
form (and to stderr with timestamps when running in the foreground). A missing syslog socket
must not stop the daemon, so it falls back to stderr with a warning.

The bind password must never reach a log line: `Redactor` replaces configured secrets in every
record on every handler, and the `provisiond` logger does not propagate to the root logger, so no
handler can see an unredacted record.
"""

from __future__ import annotations

import errno
import logging
import logging.handlers
import os
import socket
import sys
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

from provisiond.logfmt import check_tag, parse_syslog_address

LOGGER_NAME = "provisiond"
REDACTED = "***"

LEVELS: Mapping[str, int] = MappingProxyType(
    {
        "debug": logging.DEBUG,
        "info": logging.INFO,
        "warning": logging.WARNING,
        "error": logging.ERROR,
        "critical": logging.CRITICAL,
    }
)

_SLH = logging.handlers.SysLogHandler
FACILITIES: Mapping[str, int] = MappingProxyType(
    {
        "kern": _SLH.LOG_KERN,
        "user": _SLH.LOG_USER,
        "mail": _SLH.LOG_MAIL,
        "daemon": _SLH.LOG_DAEMON,
        "auth": _SLH.LOG_AUTH,
        "syslog": _SLH.LOG_SYSLOG,
        "lpr": _SLH.LOG_LPR,
        "news": _SLH.LOG_NEWS,
        "uucp": _SLH.LOG_UUCP,
        "cron": _SLH.LOG_CRON,
        "authpriv": _SLH.LOG_AUTHPRIV,
        "ftp": _SLH.LOG_FTP,
        **{f"local{n}": _SLH.LOG_LOCAL0 + n for n in range(8)},
    }
)


def _lighter_records() -> None:
    """No LogRecord looks up its caller's frame, thread, process or multiprocessing name: no
    formatter here prints them (the syslog line's pid is read when it is formatted), and the
    daemon makes several records per entry (the logging HOWTO's "Optimization" switches)."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


class SyslogFormatter(logging.Formatter):
    """`tag[pid]: message`, the classic syslog form. A record without exception or stack text
    (nearly all) is put together directly, without Formatter's pass over the record's dict
    and its look for a timestamp: this runs for every line the daemon logs."""

    def __init__(self, tag: str) -> None:
        super().__init__(f"{tag}[%(process)d]: %(message)s")
        self.tag = tag

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            record.process = os.getpid()
            return super().format(record)
        record.message = record.getMessage()
        return f"{self.tag}[{os.getpid()}]: {record.message}"  # records carry no pid (below)


class StderrFormatter(logging.Formatter):
    """`2026-01-31T12:00:00.123 INFO provisiond.x: message`, the foreground's lines. The
    timestamp's seconds are formatted once per second, not for every record."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s",
                         datefmt="%Y-%m-%dT%H:%M:%S")
        self.second: tuple[int, str] = (-1, "")  # one tuple: replaced whole, never torn

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second, text = self.second
        if int(record.created) != second:
            text = super().formatTime(record, datefmt)
            self.second = (int(record.created), text)
        return text


class SyslogHandler(logging.handlers.SysLogHandler):
    """One datagram per record on a unix socket, as SysLogHandler sends it (no ident, no
    trailing NUL), with the `<PRI>` prefix of each level made once instead of per record."""

    def __init__(self, address: str, facility: int) -> None:
        super().__init__(address=address, facility=facility)
        self.append_nul = False  # like glibc syslog(3); rsyslog and journald accept both
        self.priorities: dict[str, bytes] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            prefix = self.priorities.get(record.levelname)
            if prefix is None:
                priority = self.encodePriority(self.facility, self.mapPriority(record.levelname))
                prefix = self.priorities[record.levelname] = f"<{priority}>".encode()
            data = prefix + self.format(record).encode()
            # (typeshed leaves out SysLogHandler's socket and its reconnect)
            try:
                self.socket.send(data)  # type: ignore[attr-defined]
            except OSError:  # syslogd restarted: connect again, once (as SysLogHandler does)
                self.socket.close()  # type: ignore[attr-defined]
                self._connect_unixsocket(self.address)  # type: ignore[attr-defined]
                self.socket.send(data)  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - logging's rule: a failed record never raises
            self.handleError(record)


class Redactor(logging.Filter):
    """Replaces every occurrence of the given secrets with `***` in a record's message, its
    arguments, and any exception or stack text. Never drops a record."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Longest first, so a secret that contains another is replaced whole.
        self.secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep both parts, redacted
            message = f"{record.msg} {record.args!r}"
        record.msg = self.redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def _probe_unix(path: str) -> None:
    """Raise the OSError that connecting to a unix syslog socket gives (datagram or stream)."""
    for socktype in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_UNIX, socktype) as probe:
            try:
                probe.connect(path)
                return
            except OSError as exc:
                if socktype == socket.SOCK_STREAM or exc.errno != errno.EPROTOTYPE:
                    raise


def _open_syslog(
    address: str | tuple[str, int], facility: int, tag: str
) -> logging.handlers.SysLogHandler | None:
    """A connected handler, or None after a warning on stderr if syslog cannot be reached.
    (Since Python 3.11 the handler itself ignores a failed connect and would then print a
    traceback for every record, hence the probe.)"""
    try:
        handler: logging.handlers.SysLogHandler
        if isinstance(address, str):
            _probe_unix(address)
            handler = SyslogHandler(address, facility)
        else:
            handler = logging.handlers.SysLogHandler(
                address=address, facility=facility, socktype=socket.SOCK_DGRAM)
            handler.append_nul = False  # as SyslogHandler
        sock = getattr(handler, "socket", None)
        if sock is None or sock.fileno() < 0:  # syslogd went away just now
            handler.close()
            raise ConnectionError(f"cannot connect to {address}")
        return handler
    except OSError as exc:
        print(
            f"{tag}: warning: cannot open syslog at {address!r} ({exc.strerror or exc}); "
            "logging to stderr only",
            file=sys.stderr,
            flush=True,
        )
        return None


def setup_logging(
    *,
    syslog_address: str | None,
    facility: str,
    tag: str,
    level: str,
    foreground: bool,
    secrets: Sequence[str] = (),
) -> None:
    """(Re)configure the `provisiond` logger; safe to call again on SIGHUP (old handlers are
    closed and replaced). Raises ValueError for an unknown level/facility or a bad address."""
    if level.lower() not in LEVELS:
        raise ValueError(f"log level {level!r}: expected one of {', '.join(LEVELS)}")
    if facility.lower() not in FACILITIES:
        raise ValueError(f"syslog facility {facility!r}: expected one of {', '.join(FACILITIES)}")
    check_tag(tag)
    address = parse_syslog_address(syslog_address)

    handlers: list[logging.Handler] = []
    syslog = _open_syslog(address, FACILITIES[facility.lower()], tag)
    if syslog is None:
        foreground = True  # stderr is the only place left (the journal, under systemd)
    else:
        syslog.setFormatter(SyslogFormatter(tag))
        handlers.append(syslog)
    if foreground:
        stderr = logging.StreamHandler(sys.stderr)
        stderr.setFormatter(StderrFormatter())
        handlers.append(stderr)

    _lighter_records()
    redactor = Redactor(secrets)
    logger = logging.getLogger(LOGGER_NAME)
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()
    for handler in handlers:
        handler.addFilter(redactor)
        logger.addHandler(handler)
    logger.setLevel(LEVELS[level.lower()])
    logger.propagate = False  # root handlers would bypass the redactor
