"""Log lines for operators: kv rendering, real syslog datagrams, and redaction of secrets."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisiond.logfmt import kv
from provisiond.process.logs import (
    FACILITIES,
    LEVELS,
    Redactor,
    StderrFormatter,
    setup_logging,
)


def test_kv_plain_values_in_order() -> None:
    assert kv(service="demo", dn="cn=a,ou=x", rc=0, ms=12) == "service=demo dn=cn=a,ou=x rc=0 ms=12"
    assert kv(b=1, a=2) == "b=1 a=2"


def test_kv_quotes_and_escapes() -> None:
    assert kv(msg="two words") == 'msg="two words"'
    assert kv(msg='say "hi"') == 'msg="say \\"hi\\""'
    assert kv(msg="a\\b c") == 'msg="a\\\\b c"'
    assert kv(msg="line1\nline2\tx") == 'msg="line1\\nline2\\tx"'
    assert kv(msg="bell\x07\x7f") == 'msg="bell\\x07\\x7f"'
    assert kv(msg="") == 'msg=""'
    assert kv(path="/srv/ä/b\\c") == "path=/srv/ä/b\\c"  # nothing to quote, kept verbatim


def test_kv_omits_none_and_renders_bools() -> None:
    assert kv(a=None, b=True, c=False, d=None, e=1.5) == "b=true c=false e=1.5"
    assert kv() == ""


def test_kv_cannot_forge_lines() -> None:
    rendered = kv(dn="cn=x\nFAKE: root login", uuid="u")
    assert "\n" not in rendered and "\r" not in rendered


def reference_value(value: object) -> str:
    """kv's rule for one value, spelt out a character at a time (the model kv must match)."""
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    controls = [c for c in text if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029"]
    if text and " " not in text and '"' not in text and not controls:
        return text
    named = {"\n": "\\n", "\t": "\\t", "\r": "\\r", '"': '\\"', "\\": "\\\\"}
    escaped = "".join(named.get(c) or (f"\\x{ord(c):02x}" if ord(c) <= 0xFF else
                                       f"\\u{ord(c):04x}") if c in named or c in controls else c
                      for c in text)
    return f'"{escaped}"'


def test_kv_matches_the_rule_for_every_kind_of_character() -> None:
    every = "".join(map(chr, range(0xA1))) + "\u2028\u2029\u00e9\u4e2d\U0001f600="
    values: list[object] = [every, every[::-1], "", " ", "a b", "\\", "x\\y z", '"', "é",
                            "\U0001f600", "\u2029x", 0, -3, 1.5, True, False, ("t", 1)]
    values += [every[i:i + 3] for i in range(len(every) - 2)]
    for value in values:
        assert kv(k=value) == f"k={reference_value(value)}", repr(value)


def test_mappings_for_config_validation() -> None:
    assert LEVELS["info"] == logging.INFO and set(LEVELS) >= {"debug", "warning", "error"}
    assert FACILITIES["daemon"] == 3 and FACILITIES["local0"] == 16 and FACILITIES["local7"] == 23


@pytest.fixture
def restore_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("provisiond")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield logger
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


@pytest.fixture
def syslog_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "log")
    assert len(path) < 100, "AF_UNIX paths are limited to 107 bytes"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield path, sock
    sock.close()


def receive(sock: socket.socket) -> bytes:
    return sock.recv(65536)


def to_syslog(path: str, facility: str = "daemon", tag: str = "provisiond",
              level: str = "info") -> None:
    setup_logging(syslog_address=path, facility=facility, tag=tag, level=level,
                  foreground=False)


def test_syslog_datagram_format_and_priority(
    restore_logger: logging.Logger, syslog_socket: tuple[str, socket.socket]
) -> None:
    path, sock = syslog_socket
    setup_logging(syslog_address=path, facility="local0", tag="provisiond", level="info",
                  foreground=False)
    logger = logging.getLogger("provisiond.pipeline")  # children go through the same handlers
    logger.debug("not at info level")
    logger.warning("disk %s nearly full", "sdb")
    logger.info("wrote path=/srv/x")
    pid = os.getpid()
    assert receive(sock) == f"<132>provisiond[{pid}]: disk sdb nearly full".encode()  # 16*8+4
    assert receive(sock) == f"<134>provisiond[{pid}]: wrote path=/srv/x".encode()  # 16*8+6


def test_reconfigure_replaces_handlers(
    restore_logger: logging.Logger, syslog_socket: tuple[str, socket.socket]
) -> None:
    path, sock = syslog_socket
    for _ in range(3):
        setup_logging(syslog_address=path, facility="daemon", tag="pvd", level="debug",
                      foreground=False)
    assert len(restore_logger.handlers) == 1 and restore_logger.propagate is False
    restore_logger.error("once")
    assert receive(sock) == f"<27>pvd[{os.getpid()}]: once".encode()  # 3*8+3
    sock.settimeout(0.1)
    with pytest.raises(TimeoutError):
        receive(sock)


def test_every_level_has_its_syslog_priority(
    restore_logger: logging.Logger, syslog_socket: tuple[str, socket.socket]
) -> None:
    to_syslog(syslog_socket[0], facility="local3", tag="pvd", level="debug")
    sock = syslog_socket[1]
    logging.addLevelName(25, "NOTICE")  # a level syslog does not know is sent as a warning
    for level in (logging.DEBUG, logging.INFO, 25, logging.WARNING, logging.ERROR,
                  logging.CRITICAL, logging.INFO):
        restore_logger.log(level, "at %s", logging.getLevelName(level))
    facility = 19 * 8
    for severity, name in ((7, "DEBUG"), (6, "INFO"), (4, "NOTICE"), (4, "WARNING"), (3, "ERROR"),
                           (2, "CRITICAL"), (6, "INFO")):
        assert receive(sock) == f"<{facility + severity}>pvd[{os.getpid()}]: at {name}".encode()


def test_syslog_line_is_the_standard_format(
    restore_logger: logging.Logger, syslog_socket: tuple[str, socket.socket]
) -> None:
    # the line is built without logging.Formatter; it must stay what that would make of it
    to_syslog(syslog_socket[0])
    sock = syslog_socket[1]
    standard = logging.Formatter("provisiond[%(process)d]: %(message)s")
    sent: list[logging.LogRecord] = []
    spy = logging.Handler()
    spy.emit = sent.append  # type: ignore[method-assign]
    restore_logger.addHandler(spy)
    restore_logger.info(kv(event="wrote", path="/srv/ä b", n=3))
    restore_logger.warning("%d%% of %s", 90, "/srv")
    restore_logger.info("stack", stack_info=True)
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        restore_logger.exception("failed")
    assert len(sent) == 4
    priority = {logging.INFO: b"<30>", logging.WARNING: b"<28>", logging.ERROR: b"<27>"}
    for record in sent:
        record.process = os.getpid()  # records carry none (logs._lighter_records)
        assert receive(sock) == priority[record.levelno] + standard.format(record).encode()


def test_syslog_restart_is_survived(
    restore_logger: logging.Logger, syslog_socket: tuple[str, socket.socket]
) -> None:
    path, sock = syslog_socket
    to_syslog(path)
    restore_logger.info("before")
    assert receive(sock).endswith(b": before")
    sock.close()  # syslogd stops, and a new one binds the same path
    os.unlink(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as again:
        again.bind(path)
        again.settimeout(2)
        restore_logger.info("after")
        assert receive(again) == f"<30>provisiond[{os.getpid()}]: after".encode()


def test_udp_address(restore_logger: logging.Logger) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(2)
        port = sock.getsockname()[1]
        setup_logging(syslog_address=f"127.0.0.1:{port}", facility="daemon", tag="provisiond",
                      level="info", foreground=False)
        restore_logger.info("over udp")
        assert sock.recv(65536) == f"<30>provisiond[{os.getpid()}]: over udp".encode()


def test_missing_socket_warns_and_falls_back_to_stderr(
    restore_logger: logging.Logger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging(syslog_address=str(tmp_path / "no-such-socket"), facility="daemon",
                  tag="provisiond", level="info", foreground=False)
    restore_logger.warning("still %s", "logged")
    err = capsys.readouterr().err
    assert "cannot open syslog" in err
    assert "WARNING provisiond: still logged" in err


def test_foreground_adds_timestamped_stderr(
    restore_logger: logging.Logger,
    syslog_socket: tuple[str, socket.socket],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, sock = syslog_socket
    setup_logging(syslog_address=path, facility="daemon", tag="provisiond", level="info",
                  foreground=True)
    restore_logger.info("both")
    assert receive(sock).endswith(b": both")
    line = capsys.readouterr().err.strip()
    assert line.endswith("INFO provisiond: both") and line[:4].isdigit() and "T" in line[:11]


def test_stderr_line_is_the_standard_format() -> None:
    # seconds are formatted once per second: each line must still carry its own time
    standard = logging.Formatter("%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s",
                                 datefmt="%Y-%m-%dT%H:%M:%S")
    formatter = StderrFormatter()
    for created in (1e9 + 0.5, 1e9 + 0.999, 1e9 + 1.0, 1e9 + 1.25, 1e9 + 61.0, 1e9 + 0.1):
        record = logging.LogRecord("provisiond.x", logging.INFO, __file__, 1, "event=x", None,
                                   None)
        record.created, record.msecs = created, int(created % 1 * 1000)
        assert formatter.format(record) == standard.format(record)


@pytest.mark.parametrize(
    "kwargs",
    [{"level": "loud"}, {"facility": "local9"}, {"tag": "two words"}, {"syslog_address": "host"}],
)
def test_bad_settings_are_rejected(restore_logger: logging.Logger, kwargs: dict[str, str]) -> None:
    settings = {"syslog_address": "/dev/null/x", "facility": "daemon", "tag": "t",
                "level": "info", **kwargs}
    with pytest.raises(ValueError):
        setup_logging(foreground=False, **settings)


def test_secret_is_redacted_everywhere(
    restore_logger: logging.Logger,
    syslog_socket: tuple[str, socket.socket],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, sock = syslog_socket
    secret = "s3cr3t-bind-pw"
    setup_logging(syslog_address=path, facility="daemon", tag="provisiond", level="info",
                  foreground=True, secrets=[secret, ""])
    restore_logger.info("bind failed for password %s", secret)
    logging.getLogger("provisiond.directory").warning(kv(uri="ldap://x", pw=secret))
    try:
        raise RuntimeError(f"server said: {secret}")
    except RuntimeError:
        restore_logger.exception("unexpected")
    first, second, third = receive(sock), receive(sock), receive(sock)
    assert first.endswith(b"bind failed for password ***")
    assert second.endswith(b"uri=ldap://x pw=***")
    assert b"RuntimeError: server said: ***" in third
    everything = first + second + third + capsys.readouterr().err.encode()
    assert secret.encode() not in everything


def test_redactor_alone() -> None:
    redactor = Redactor(["abc", "abcdef"])
    record = logging.LogRecord("provisiond", logging.INFO, __file__, 1, "x=%s y=%d", ("abcdef", 3),
                               None)
    assert redactor.filter(record) is True
    assert record.getMessage() == "x=*** y=3"
    broken = logging.LogRecord("provisiond", logging.INFO, __file__, 1, "%s %s", ("abc",), None)
    redactor.filter(broken)
    assert "abc" not in broken.getMessage()
