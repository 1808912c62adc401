"""Stream connections: idle for longer than the timeout, and cleanly gone when closed."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from provisiond.directory.connection import ConnectionFactory, close_quietly
from provisiond.model.settings import LdapSettings
from provisiond.testing.slapd import Slapd
from tests.support import wait_for


def factory(slapd: Slapd, password_file: Path) -> ConnectionFactory:
    return ConnectionFactory(LdapSettings(uri=slapd.uri, bind_dn=slapd.root_dn,
                                          bind_password_file=str(password_file), timeout=1))


def test_a_closed_stream_connection_ends_its_receiver(slapd: Slapd, password_file: Path) -> None:
    """ldap3's receiver retries socket errors forever when a receive_timeout is set: a closed
    stream then left a thread spinning on the CPU. It must end instead."""
    connection = factory(slapd, password_file).open(stream=True)
    receiver = connection.strategy.receiver
    assert receiver is not None and receiver.is_alive()
    connection.unbind()
    wait_for(lambda: not receiver.is_alive(), timeout=5, what="the receiver thread to end")


def test_an_idle_stream_socket_does_not_time_out(slapd: Slapd, password_file: Path) -> None:
    connection = factory(slapd, password_file).open(stream=True)
    try:
        assert connection.socket.gettimeout() is None
        time.sleep(1.5)  # longer than the 1 s timeout the connection was opened with
        assert connection.strategy.receiver.is_alive() and not connection.closed
    finally:
        connection.unbind()


def test_a_stream_socket_is_closed_only_once_its_receiver_has_ended(
        slapd: Slapd, password_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ldap3 closes a stream's socket while its receiver thread may still be about to read
    it. The descriptor's number is then free, the next file or pipe opened gets it, and the
    late read takes that one's bytes: a TLS read (OpenSSL read()s the number it was given)
    took the first bytes of slapadd's standard input in the TLS tests ("entry -1 has no
    dn"), and in the daemon it could take a hook's output. So the socket is shut down first
    (the receiver reads the end, and the number stays taken), the receiver is waited for,
    and only then is the descriptor closed."""
    connection = factory(slapd, password_file).open(stream=True)
    receiver = connection.strategy.receiver
    stream_socket = connection.socket
    unsafe: list[bool] = []  # per close: by another thread while the receiver could read
    close = socket.socket.close

    def recording_close(self: socket.socket) -> None:
        if self is stream_socket:  # the receiver closes it itself when it ends: that is safe
            unsafe.append(receiver.is_alive() and threading.current_thread() is not receiver)
        close(self)

    monkeypatch.setattr(socket.socket, "close", recording_close)
    close_quietly(connection)
    assert unsafe and not any(unsafe), "the socket was closed while its receiver could read it"
    assert not receiver.is_alive()
    assert connection.closed and stream_socket.fileno() == -1
