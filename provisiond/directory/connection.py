"""Opening LDAP connections from the `ldap:` settings.

Two kinds are needed: a streaming connection for the change stream (ldap3's ASYNC_STREAM,
whose receiver thread hands sync events to a callback) and plain synchronous connections for
reads and for the claims and reports, which all go to `write_uri` (one designated provider:
compare-and-swap claims are not safe across multi-master replication). Over TLS (`ldaps://`,
or StartTLS on `ldap://`) both are verified, chain and host name, before the bind
(`directory/tls.py`).
"""

from __future__ import annotations

import math
import socket
import threading
import weakref
from collections.abc import Callable
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPException

from provisiond.config.syntax import settings_problem
from provisiond.directory import tls
from provisiond.model.settings import LdapSettings, read_secret

# A stream's socket must not time out while idle: ldap3 leaves connect_timeout on the socket
# when receive_timeout is None (an idle persistent search died after `timeout` seconds), and
# with a receive_timeout its receiver thread retries every socket error forever, spinning on
# a closed socket. So streams get no receive_timeout and their socket timeout is cleared
# after connecting; a dead peer is found by TCP keepalive instead.
KEEPALIVE_IDLE_SECONDS = 30
KEEPALIVE_INTERVAL_SECONDS = 10
KEEPALIVE_PROBES = 3
RECEIVER_END_SECONDS = 5.0  # a receiver that does not end by then is left (ldap3 closes)
# What ldap3 and the socket layer raise for an unreachable server or settings they reject at
# run time (a malformed URI, a missing CA file, a NaN or infinite timeout).
CONNECT_ERRORS = (LDAPException, OSError, ValueError, TypeError, OverflowError)


# Every factory, so a thread's end can close what it opened through any of them (the engine's
# and the aggregates mirror's).
_FACTORIES: weakref.WeakSet[ConnectionFactory] = weakref.WeakSet()
_FACTORIES_LOCK = threading.Lock()


class DirectoryUnavailable(Exception):
    """The server cannot be reached or refused the bind: a transient condition."""


class ConnectionFactory:
    """Builds bound ldap3 connections; the bind password is read from its file on each open
    so a rotated secret is picked up without a restart."""

    def __init__(self, settings: LdapSettings) -> None:
        self.settings = settings
        self._local = threading.local()
        with _FACTORIES_LOCK:
            _FACTORIES.add(self)

    def open(self, *, stream: bool = False, write: bool = False) -> ldap3.Connection:
        """A bound connection; every failure, whatever its kind (unreachable server, TLS not
        verified, refused bind, unreadable password file, settings ldap3 rejects), is
        DirectoryUnavailable. Over TLS the bind only ever follows a verified handshake."""
        uri = (self.settings.write_uri or self.settings.uri) if write else self.settings.uri
        problem = settings_problem(self.settings)
        if problem is not None:
            raise DirectoryUnavailable(f"cannot connect to {uri}: {problem[1]}")
        password = self._password()
        try:
            server = tls.server(uri, start_tls=self.settings.start_tls,
                                ca_file=self.settings.ca_file, timeout=self.settings.timeout)
            connection = ldap3.Connection(
                server,
                user=self.settings.bind_dn,
                password=password,
                client_strategy=ldap3.ASYNC_STREAM if stream else ldap3.SYNC,
                # ldap3 packs this into a struct timeval: it must be a whole number
                receive_timeout=None if stream else max(1, math.ceil(self.settings.timeout)),
                raise_exceptions=False,
                auto_referrals=False,
                read_only=False,
            )
        except CONNECT_ERRORS as exc:
            raise DirectoryUnavailable(f"cannot connect to {uri}: {exc}") from exc
        try:
            connection.open()  # TLS (and StartTLS) happen in here, verified, or it raises
            if stream and connection.socket is not None:
                connection.socket.settimeout(None)  # see the comment at the top
            # ASYNC_STREAM leaves connection.result None: the bind's own answer counts
            if not connection.bind():
                raise DirectoryUnavailable(
                    f"bind to {uri} as {self.settings.bind_dn or 'anonymous'} failed: "
                    f"{_failure(connection)}")
            enable_keepalive(connection)
        except BaseException as exc:
            close_quietly(connection)
            if isinstance(exc, CONNECT_ERRORS):
                refused = tls.tls_refusal(server)
                if refused is not None:
                    raise DirectoryUnavailable(f"{refused} ({uri})") from exc
                raise DirectoryUnavailable(f"cannot connect to {uri}: {exc}") from exc
            raise
        return connection

    def _password(self) -> str | None:
        path = self.settings.bind_password_file
        if not path:
            return None
        try:
            return read_secret(path)
        except UnicodeDecodeError:  # its message would quote a byte of the secret
            raise DirectoryUnavailable(f"the bind password file {path} is not UTF-8") from None
        except OSError as exc:
            raise DirectoryUnavailable(
                f"cannot read the bind password file {path}: {exc.strerror or exc}") from exc

    def thread_connection(self, *, write: bool = False) -> ldap3.Connection:
        """One reusable synchronous connection per thread (ldap3 connections are not shared
        safely between threads), reopened when it was closed by a server restart."""
        key = "write" if write else "read"
        connection = getattr(self._local, key, None)
        if connection is None or connection.closed or not connection.bound:
            connection = self.open(write=write)
            setattr(self._local, key, connection)
        return connection

    def drop_thread_connection(self) -> None:
        for key in ("read", "write"):
            connection = getattr(self._local, key, None)
            if connection is not None:
                close_quietly(connection)
                setattr(self._local, key, None)


def closing_thread_connections(target: Callable[..., None]) -> Callable[..., None]:
    """`target` as a thread's body that closes the connections the thread opened (through
    any factory) when it ends. Left to the garbage collector (connection and strategy form a
    cycle), they stayed open, and slapd held them, for a while after each reload or
    reconnection."""

    def body(*args: Any) -> None:
        try:
            target(*args)
        finally:
            with _FACTORIES_LOCK:
                factories = list(_FACTORIES)
            for factory in factories:
                factory.drop_thread_connection()

    return body


def _failure(connection: ldap3.Connection) -> str:
    """Why an operation failed, from whatever ldap3 kept (`result` is None on async
    strategies; `last_error` holds the description there)."""
    result = connection.result if isinstance(connection.result, dict) else {}
    text = str(result.get("description") or connection.last_error or "no reason given")
    return f"{text} ({result['message']})" if result.get("message") else text


def close_quietly(connection: ldap3.Connection) -> None:
    """Close a connection (one that failed to become usable too: its socket, and on
    ASYNC_STREAM the receiver thread, would otherwise stay behind on every retry).

    A stream's receiver thread must have ended before its socket's descriptor is closed.
    ldap3's unbind closes it at once, while the receiver may be about to read it; the number
    is then free, the next file, pipe or socket opened gets it, and the late read takes that
    one's bytes (over TLS, OpenSSL read()s the number it was given: the TLS tests saw
    slapadd lose the first bytes of its standard input). So the socket is shut down first:
    the receiver reads the end of the stream while the number stays taken; it is waited for,
    and only then does ldap3 close. An unbind request cannot be sent after the shutdown; the
    server takes the closed connection as one."""
    receiver = getattr(connection.strategy, "receiver", None)
    sock = connection.socket
    if (sock is not None and receiver is not None and receiver.is_alive()
            and receiver is not threading.current_thread()):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        receiver.join(RECEIVER_END_SECONDS)
    try:
        connection.unbind()
    except Exception:  # noqa: BLE001 - it is broken already; closing is all we want
        pass
    if not connection.closed:  # the unbind failed before ldap3 closed the socket
        try:
            connection.strategy.close()
        except Exception:  # noqa: BLE001 - as above
            pass


def enable_keepalive(connection: ldap3.Connection) -> None:
    """TCP keepalive so a network partition without a FIN is noticed within about a minute."""
    sock = getattr(connection, "socket", None)
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE_SECONDS),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_SECONDS),
        ("TCP_KEEPCNT", KEEPALIVE_PROBES),
    ):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
