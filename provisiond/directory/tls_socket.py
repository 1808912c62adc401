"""A TLS socket that one thread may read while another writes it.

OpenSSL forbids using one SSL object from two threads at once, and Python's ssl module takes
no lock of its own around SSL_read and SSL_write (it only releases the GIL there). ldap3's
ASYNC_STREAM strategy does just that: its receiver thread sits in SSL_read on the change
stream's connection while the caller's thread writes the bind and the search. When the server
sends something right after the handshake (an OpenSSL server sends its TLS 1.3 session
tickets then), both run at once, and now and then, more often on a loaded machine, the write
failed with "[SSL] internal error" or the bind's answer was lost ("no response from server").

So every read and every write of the SSL object takes one lock, and a read never waits
while it holds it: under the lock it only takes what is there (the socket made non-blocking
for that call, so OpenSSL answers "want read" instead of waiting), and it waits for more
bytes outside the lock (a poll on the descriptor). A reader waiting for the answer to a
request thus never holds up the writer of that request. (Waiting inside the lock deadlocked:
SSL_read consumed the session tickets and went on waiting for data the bind would bring.)

The socket stays an ssl.SSLSocket (VerifiedTls makes it through SSLContext.sslsocket_class),
for stream connections only: a read here costs about 30 us more CPU than a plain one (the
timeout switched off and back, a second attempt after the poll), which a synchronous
connection, read and written by one thread, has no reason to pay.
"""

from __future__ import annotations

import select
import ssl
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

_LOCK = "_provisiond_io_lock"
T = TypeVar("T")


class SerializedSSLSocket(ssl.SSLSocket):
    """ssl.SSLSocket whose reads and writes of the SSL object never overlap (module doc)."""

    def _io_lock(self) -> threading.Lock:
        # SSLSocket is built by _create, never by __init__: the lock is made on first use
        lock = self.__dict__.get(_LOCK)
        return lock if lock is not None else self.__dict__.setdefault(_LOCK, threading.Lock())

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        return self._serialized_read(lambda: super(SerializedSSLSocket, self).recv(buflen, flags))

    def recv_into(self, buffer: WriteableBuffer, nbytes: int | None = None,
                  flags: int = 0) -> int:
        return self._serialized_read(
            lambda: super(SerializedSSLSocket, self).recv_into(buffer, nbytes, flags))

    def send(self, data: ReadableBuffer, flags: int = 0) -> int:
        with self._io_lock():
            return super().send(data, flags)

    def settimeout(self, value: float | None) -> None:
        # a read switches the timeout off and back under the lock: so does everyone else
        with self._io_lock():
            super().settimeout(value)

    def setblocking(self, flag: bool) -> None:
        with self._io_lock():
            super().setblocking(flag)

    def _serialized_read(self, read: Callable[[], T]) -> T:
        while True:
            with self._io_lock():
                timeout = self.gettimeout()
                if getattr(self, "_sslobj", None) is None or timeout == 0:
                    return read()  # not TLS (any more), or non-blocking already: as it is
                super().settimeout(0.0)
                try:
                    return read()
                except ssl.SSLWantReadError:
                    events = select.POLLIN | select.POLLPRI
                except ssl.SSLWantWriteError:  # renegotiation: OpenSSL must send first
                    events = select.POLLOUT
                finally:
                    super().settimeout(timeout)
            self._wait(events, timeout)

    def _wait(self, events: int, timeout: float | None) -> None:
        """Until the descriptor is ready for `events` (or has an error or the end of the
        stream: the next read says which), or `timeout` (the socket's) has passed: then
        TimeoutError, as a read of an ssl.SSLSocket raises it."""
        descriptor = self.fileno()
        if descriptor < 0:
            return  # closed meanwhile: the next read says so
        poller = select.poll()
        poller.register(descriptor, events)
        if not poller.poll(None if timeout is None else timeout * 1000):
            raise TimeoutError("The read operation timed out")
