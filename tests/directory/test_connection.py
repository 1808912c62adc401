"""Stream connections: idle for longer than the timeout, and cleanly gone when closed."""

from __future__ import annotations

import time
from pathlib import Path

from provisiond.directory.connection import ConnectionFactory
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
