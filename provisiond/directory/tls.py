"""Verified TLS to the directory: the certificate chain and the host name, before any bind.

ldap3 can verify, but not in a way an operator can rely on: it checks the host name itself
after the handshake (with `ssl.match_hostname`, gone since Python 3.12), its reasons are
nested exception reprs (a host name mismatch prints the whole certificate), and its
asynchronous StartTLS, which the change stream needs, runs the handshake on the receiver
thread: a refused StartTLS or a failed handshake killed that thread with a traceback and left
the caller waiting 20 seconds for an answer that never came.

So TLS is set up here, whole, while the socket is being opened and before ldap3 sends
anything of its own: for `ldaps://` the handshake; for StartTLS (`ldap://` with `start_tls`)
the StartTLS request and its answer on the plain socket, then the handshake. OpenSSL checks
the chain against `ca_file` (or the system store) and the host name during the handshake. A
connection either comes out of it verified or not at all, identically for the synchronous
and the streaming strategy, so the bind (the password) can only ever follow a verified
handshake. The reason for a refusal is kept as one line for the logs, `check` and `status`.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

import ldap3
from ldap3.core.results import RESULT_CODES
from ldap3.protocol.rfc4511 import LDAPMessage
from ldap3.strategy.base import BaseStrategy
from pyasn1.codec.ber import decoder
from pyasn1.error import PyAsn1Error

from provisiond.config.syntax import uses_tls
from provisiond.directory.tls_socket import SerializedSSLSocket

START_TLS_OID = "1.3.6.1.4.1.1466.20037"
# LDAPMessage { messageID 1, extendedReq [APPLICATION 23] { requestName [0] START_TLS_OID } }
START_TLS_REQUEST = bytes([0x30, 0x1D, 0x02, 0x01, 0x01, 0x77, 0x18, 0x80, 0x16]) + \
    START_TLS_OID.encode()
MAX_START_TLS_ANSWER = 64 * 1024  # an ExtendedResponse; anything larger is not one


class TlsRefused(Exception):
    """A connection that did not come out verified; the message is the one-line reason."""


def describe(exc: BaseException) -> str:
    """One line an operator acts on: OpenSSL's verdict without its source locations."""
    if isinstance(exc, TlsRefused):
        return str(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed: {str(exc.verify_message).rstrip('.')}"
    if isinstance(exc, ssl.SSLError):  # e.g. WRONG_VERSION_NUMBER: not TLS at the other end
        what = (exc.reason or type(exc).__name__).replace("_", " ").lower()
        return f"TLS: handshake failed: {what}"
    if isinstance(exc, OSError):
        return f"TLS: handshake failed: {exc.strerror or exc}"
    return f"TLS: {exc}"


def _context(ca_file: str | None) -> ssl.SSLContext:
    """Chain and host name required; `ca_file` alone when given, else the system store."""
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except FileNotFoundError:
        raise TlsRefused(f"TLS: cannot read ca_file {ca_file}: no such file") from None
    except ssl.SSLError as exc:
        raise TlsRefused(f"TLS: ca_file {ca_file} holds no usable CA certificate "
                         f"({exc.reason or exc})") from None
    except OSError as exc:
        raise TlsRefused(f"TLS: cannot read ca_file {ca_file}: {exc.strerror or exc}") from None
    return context


def _start_tls(sock: socket.socket) -> None:
    """Ask for StartTLS on the plain socket and insist on a clean yes: the answer and nothing
    after it (bytes arriving before the handshake would be read as if they came over TLS)."""
    sock.sendall(START_TLS_REQUEST)
    data = b""
    try:
        while (size := BaseStrategy.compute_ldap_message_size(data)) < 0 or len(data) < size:
            chunk = sock.recv(4096)
            if not chunk:
                raise TlsRefused("TLS: the server closed the connection instead of answering "
                                 "StartTLS")
            data += chunk
            if len(data) > MAX_START_TLS_ANSWER:
                break
    except TimeoutError:
        raise TlsRefused("TLS: no answer to StartTLS within the timeout") from None
    try:
        message, rest = decoder.decode(data, asn1Spec=LDAPMessage())
        if message["protocolOp"].getName() != "extendedResp":
            raise ValueError(message["protocolOp"].getName())
        answer = message["protocolOp"]["extendedResp"]
        number, code = int(message["messageID"]), int(answer["resultCode"])
        text = str(answer["diagnosticMessage"])
    except (PyAsn1Error, KeyError, ValueError, TypeError):
        raise TlsRefused("TLS: the answer to StartTLS is not an LDAP extended response") from None
    if number not in (0, 1):  # 0: a notice of disconnection; 1: the answer to our request
        raise TlsRefused("TLS: the answer to StartTLS is not an LDAP extended response")
    if code != 0 or number == 0:
        name = RESULT_CODES.get(code, str(code))
        raise TlsRefused(f"TLS: the server refused StartTLS: {name}" + (f", {text}" if text else ""))
    if rest:
        raise TlsRefused("TLS: the server sent data before the TLS handshake")


class VerifiedTls(ldap3.Tls):
    """ldap3's TLS hook (`wrap_socket`, called while the socket opens) doing all of the above.
    One per connection attempt: `refused` keeps why the last attempt failed, which ldap3's
    own exception (re-created from a string, per address tried) no longer tells."""

    def __init__(self, ca_file: str | None, *, start_tls: bool) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED)
        self.ca_file = ca_file
        self.negotiate_start_tls = start_tls
        self.refused: str | None = None

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        del do_handshake  # always now: nothing may be sent before the peer is verified
        try:
            context = _context(self.ca_file)
            if not connection.strategy.sync:
                # a stream is read by ldap3's receiver thread while the caller writes it
                # (tls_socket.py); a synchronous connection has one thread and no such cost
                context.sslsocket_class = SerializedSSLSocket
            if self.negotiate_start_tls:
                _start_tls(connection.socket)
            connection.socket = context.wrap_socket(connection.socket,
                                                    server_hostname=connection.server.host)
        except (TlsRefused, OSError) as exc:  # ssl.SSLError is an OSError
            self.refused = describe(exc)
            # ldap3 leaves a socket that failed here open (the connection never counted as
            # open, so unbind() skips it): close it now, not when the collector gets to it
            connection.socket.close()
            raise


def server(uri: str, *, start_tls: bool, ca_file: str | None, timeout: float) -> ldap3.Server:
    """An ldap3 Server for `uri`; over TLS (`ldaps://`, or `ldap://` with `start_tls`) it only
    ever hands ldap3 a verified socket."""
    tls = VerifiedTls(ca_file, start_tls=start_tls) if uses_tls(uri, start_tls) else None
    result = ldap3.Server(uri, connect_timeout=timeout, tls=tls, get_info=ldap3.NONE)
    if tls is not None:
        # ldap3 calls `tls.wrap_socket` right after connecting only for servers it thinks are
        # ldaps; for StartTLS that is where VerifiedTls negotiates it (ldap3's own StartTLS
        # is never used). The port stays what the URI says (389 when it says none).
        result.ssl = True
    return result


def tls_refusal(server_: ldap3.Server) -> str | None:
    """Why TLS refused the last connection attempt to `server_`, if it did."""
    tls = server_.tls
    return tls.refused if isinstance(tls, VerifiedTls) else None
