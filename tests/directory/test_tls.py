"""TLS to the directory, verified for real (issue 9.2): a throwaway CA and certificates made with
openssl, slapd speaking `ldaps://` and StartTLS, and servers that are not who they claim to be.

The chain and the host name are checked by default; a wrong CA, an expired certificate and a
host name mismatch are refused with one line saying why; and the bind password never travels
over a connection that was not verified. That last one is shown, not assumed: an impostor
server records every byte it can read (decrypting whatever TLS the client lets it complete).
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ldap3
import pytest
from ldap3.protocol.rfc4511 import LDAPMessage
from ldap3.strategy.base import BaseStrategy
from pyasn1.codec.ber import decoder

from provisiond.config.syntax import settings_problem
from provisiond.directory.connection import ConnectionFactory, DirectoryUnavailable, close_quietly
from provisiond.model.settings import LdapSettings
from provisiond.testing.slapd import Slapd
from provisiond.testing.tls import KeyPair, Pki, TlsSlapd, make_pki
from tests.conftest import DEMO_OU, require_slapd
from tests.support import (
    SyslogCapture,
    add_item,
    demo_service,
    mode_of,
    run_cli,
    start_daemon,
    stop_daemon,
    wait_for,
    write_config,
)

PASSWORD = "secret"  # the private slapd's root password (Slapd.root_password)
LDAPS, START_TLS = "ldaps", "ldap"
# A refusal must come quickly: ldap3's own asynchronous StartTLS waited 20 s for an answer its
# receiver thread had died before delivering.
PROMPT_SECONDS = 3.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def servers(pki: Pki) -> Iterator[Callable[[str, str], TlsSlapd]]:
    """`servers(certificate, scheme)`: a running TLS slapd, started once per module."""
    require_slapd()
    import shutil
    import tempfile

    started: dict[tuple[str, str], TlsSlapd] = {}

    def get(certificate: str, scheme: str) -> TlsSlapd:
        if (certificate, scheme) not in started:
            server = TlsSlapd(directory=Path(tempfile.mkdtemp(prefix="pvt-", dir="/tmp")),
                              certificate=getattr(pki, certificate), scheme=scheme)
            server.create(DEMO_OU)
            server.start()
            started[certificate, scheme] = server
        return started[certificate, scheme]

    yield get
    for server in started.values():
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


@pytest.fixture
def thread_errors(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Exceptions that ended a thread (ldap3's receiver thread died on a failed StartTLS)."""
    seen: list[str] = []
    monkeypatch.setattr(threading, "excepthook",
                        lambda args: seen.append(f"{args.exc_type.__name__}: {args.exc_value}"))
    return seen


def settings(uri: str, password_file: Path, **options: Any) -> LdapSettings:
    return LdapSettings(uri=uri, bind_dn="cn=admin,dc=example,dc=org",
                        bind_password_file=str(password_file), timeout=5, **options)


def secret(tmp_path: Path) -> Path:
    path = tmp_path / "bind.secret"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o600)
    return path


def refusal(factory: ConnectionFactory, stream: bool) -> tuple[str, float]:
    started = time.monotonic()
    with pytest.raises(DirectoryUnavailable) as caught:
        factory.open(stream=stream)
    return str(caught.value), time.monotonic() - started


# -- verified connections ----------------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True], ids=["sync", "stream"])
@pytest.mark.parametrize("scheme", [LDAPS, START_TLS], ids=["ldaps", "starttls"])
def test_a_verified_connection_binds_and_reads(
    servers: Callable[[str, str], TlsSlapd], pki: Pki, tmp_path: Path, scheme: str,
    stream: bool
) -> None:
    server = servers("server", scheme)
    factory = ConnectionFactory(settings(server.uri, secret(tmp_path), ca_file=str(pki.ca),
                                         start_tls=scheme == START_TLS))
    connection = factory.open(stream=stream)
    try:
        assert isinstance(connection.socket, ssl.SSLSocket)
        peer = connection.socket.getpeercert(binary_form=True)
        assert peer == ssl.PEM_cert_to_DER_cert(pki.server.certificate.read_text())
        if not stream:
            assert connection.search("ou=demo,dc=example,dc=org", "(objectClass=*)",
                                     search_scope=ldap3.BASE)
    finally:
        close_quietly(connection)  # as the daemon closes: not under a stream's late read


def test_the_host_name_is_checked_by_name_too(
    servers: Callable[[str, str], TlsSlapd], pki: Pki, tmp_path: Path
) -> None:
    """`localhost` is in the server certificate; `ldap.example.org` only in the other one."""
    good, wrong = servers("server", LDAPS), servers("wrong_host", LDAPS)
    password = secret(tmp_path)
    ConnectionFactory(settings(f"ldaps://localhost:{good.port}", password,
                               ca_file=str(pki.ca))).open().unbind()
    uri = f"ldaps://localhost:{wrong.port}"
    reason, _ = refusal(ConnectionFactory(settings(uri, password, ca_file=str(pki.ca))), False)
    assert reason == ("TLS: certificate verify failed: Hostname mismatch, certificate is not "
                      f"valid for 'localhost' ({uri})")


def test_without_ca_file_the_system_store_is_used(
    servers: Callable[[str, str], TlsSlapd], pki: Pki, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """No `ca_file`: OpenSSL's default store (Debian's /etc/ssl/certs, or SSL_CERT_FILE), which
    does not know the throwaway CA until it is put there."""
    server = servers("server", LDAPS)
    factory = ConnectionFactory(settings(server.uri, secret(tmp_path)))
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    reason, _ = refusal(factory, False)
    assert reason == ("TLS: certificate verify failed: unable to get local issuer certificate "
                      f"({server.uri})")
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))
    factory.open().unbind()


# -- refusals ---------------------------------------------------------------------------------

REFUSALS = [
    ("server", "other_ca", "unable to get local issuer certificate"),
    ("expired", "ca", "certificate has expired"),
    ("wrong_host", "ca", "IP address mismatch, certificate is not valid for '127.0.0.1'"),
]


@pytest.mark.parametrize("stream", [False, True], ids=["sync", "stream"])
@pytest.mark.parametrize("scheme", [LDAPS, START_TLS], ids=["ldaps", "starttls"])
@pytest.mark.parametrize("certificate, ca, why", REFUSALS,
                         ids=["wrong CA", "expired", "host name mismatch"])
def test_a_bad_certificate_is_refused_with_one_line(
    servers: Callable[[str, str], TlsSlapd], pki: Pki, tmp_path: Path, thread_errors: list[str],
    certificate: str, ca: str, why: str, scheme: str, stream: bool
) -> None:
    server = servers(certificate, scheme)
    factory = ConnectionFactory(settings(server.uri, secret(tmp_path),
                                         ca_file=str(getattr(pki, ca)),
                                         start_tls=scheme == START_TLS))
    reason, seconds = refusal(factory, stream)
    assert reason == f"TLS: certificate verify failed: {why} ({server.uri})"
    assert seconds < PROMPT_SECONDS
    assert thread_errors == []


@pytest.mark.parametrize("stream", [False, True], ids=["sync", "stream"])
def test_a_server_without_tls_refuses_start_tls_and_nothing_is_bound(
    slapd: Slapd, tmp_path: Path, thread_errors: list[str], stream: bool
) -> None:
    """The fixture's slapd has no certificate: it answers StartTLS with protocolError. The
    password must not follow in clear; a recording proxy sees every byte sent."""
    with Recorder(("127.0.0.1", slapd.port)) as proxy:
        uri = f"ldap://127.0.0.1:{proxy.port}"
        factory = ConnectionFactory(settings(uri, secret(tmp_path), start_tls=True))
        reason, seconds = refusal(factory, stream)
    assert proxy.received and PASSWORD.encode() not in proxy.received
    assert reason == ("TLS: the server refused StartTLS: protocolError, unsupported extended "
                      f"operation ({uri})")
    assert seconds < PROMPT_SECONDS and thread_errors == []


@pytest.mark.parametrize("stream", [False, True], ids=["sync", "stream"])
def test_tls_to_the_wrong_port_says_so(
    slapd: Slapd, servers: Callable[[str, str], TlsSlapd], pki: Pki, tmp_path: Path,
    thread_errors: list[str], stream: bool
) -> None:
    """`ldaps://` to a plain LDAP port, StartTLS to an `ldaps://` port: a line, not a hang."""
    password = secret(tmp_path)
    plain = f"ldaps://127.0.0.1:{slapd.port}"
    reason, seconds = refusal(ConnectionFactory(settings(plain, password, ca_file=str(pki.ca))),
                              stream)
    assert reason.startswith("TLS: handshake failed: ") and reason.endswith(f" ({plain})")
    assert "\n" not in reason and seconds < PROMPT_SECONDS
    tls_port = f"ldap://127.0.0.1:{servers('server', LDAPS).port}"
    reason, seconds = refusal(ConnectionFactory(settings(tls_port, password, start_tls=True,
                                                         ca_file=str(pki.ca))), stream)
    assert reason == ("TLS: the server closed the connection instead of answering StartTLS "
                      f"({tls_port})")
    assert seconds < PROMPT_SECONDS and thread_errors == []


def test_the_recording_proxy_sees_a_plain_bind(slapd: Slapd, tmp_path: Path) -> None:
    """The control for the test above: without StartTLS the password is there to be seen."""
    with Recorder(("127.0.0.1", slapd.port)) as proxy:
        factory = ConnectionFactory(settings(f"ldap://127.0.0.1:{proxy.port}", secret(tmp_path)))
        factory.open().unbind()
    assert PASSWORD.encode() in proxy.received


@pytest.mark.parametrize("uri, options, problem", [
    ("ldaps://h", {"start_tls": True}, "start_tls: ldaps://h is TLS from the first byte: "
     "drop start_tls, or use ldap:// for StartTLS"),
    ("ldap://h", {"start_tls": True, "write_uri": "ldaps://w"},
     "start_tls: ldaps://w is TLS from the first byte: drop start_tls, or use ldap:// for "
     "StartTLS"),
    ("ldapi://%2Frun%2Fs", {"start_tls": True},
     "start_tls: ldapi://%2Frun%2Fs is a local socket: StartTLS needs ldap://"),
    ("ldap://h", {"ca_file": "/etc/ca.pem"},
     "ca_file: no connection uses TLS (ldap://h without start_tls)"),
])
def test_settings_that_make_no_sense_together_are_refused(
    tmp_path: Path, uri: str, options: dict[str, Any], problem: str
) -> None:
    ldap = settings(uri, secret(tmp_path), **options)
    assert settings_problem(ldap) == tuple(problem.split(": ", 1))
    reason, _ = refusal(ConnectionFactory(ldap), False)
    assert reason == f"cannot connect to {uri}: {problem.split(': ', 1)[1]}"


def test_ca_file_is_fine_when_one_of_the_uris_uses_tls(tmp_path: Path) -> None:
    assert settings_problem(settings("ldapi://%2Frun%2Fs", secret(tmp_path), ca_file="/x",
                                     write_uri="ldaps://w")) is None


# -- the password never reaches an unverified server -------------------------------------------

class Recorder:
    """A TCP proxy to `upstream` keeping every byte the client sends (what a network eavesdropper
    would see)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received = b""
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Recorder:
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        server = socket.create_connection(self.upstream)
        self._spawn(self._pump, client, server, True)
        self._spawn(self._pump, server, client, False)

    def _pump(self, source: socket.socket, sink: socket.socket, record: bool) -> None:
        source.settimeout(10)
        try:
            while data := source.recv(65536):
                if record:
                    self.received += data
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


START_TLS_OID = b"1.3.6.1.4.1.1466.20037"


def ldap_result(message_id: int, tag: int, code: int, extra: bytes = b"") -> bytes:
    """An LDAPResult (code, empty matchedDN and message) under application `tag`."""
    body = bytes([0x0A, 1, code, 0x04, 0, 0x04, 0]) + extra
    op = bytes([tag, len(body)]) + body
    number = message_id.to_bytes(message_id.bit_length() // 8 + 1, "big")  # ldap3 counts on
    return bytes([0x30, len(op) + 2 + len(number), 0x02, len(number)]) + number + op


class Impostor:
    """A server that is not the directory: it presents `certificate` (on `ldaps://`, or after
    answering StartTLS with `start_tls_code`), keeps every byte it can read in the clear, and
    accepts any bind. A client that verifies gives it nothing to read past the handshake."""

    def __init__(self, certificate: KeyPair, *, start_tls_code: int | None = None) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certificate.certificate, certificate.key)
        self.start_tls_code = start_tls_code
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def uri(self) -> str:
        scheme = "ldaps" if self.start_tls_code is None else "ldap"
        return f"{scheme}://127.0.0.1:{self.port}"

    def __enter__(self) -> Impostor:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()
        self.thread.join(timeout=10)

    def _serve(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        sock.settimeout(5)
        try:
            if self.start_tls_code is not None:
                self._message(sock)
                name = bytes([0x8A, len(START_TLS_OID)]) + START_TLS_OID
                sock.sendall(ldap_result(1, 0x78, self.start_tls_code, name))
                if self.start_tls_code != 0:
                    while self._message(sock):  # whatever the client sends now is in clear
                        pass
                    return
            sock = self.context.wrap_socket(sock, server_side=True)
            while message := self._message(sock):
                decoded, _ = decoder.decode(message, asn1Spec=LDAPMessage())
                if decoded["protocolOp"].getName() == "bindRequest":
                    sock.sendall(ldap_result(int(decoded["messageID"]), 0x61, 0))
        except (OSError, ssl.SSLError):
            pass
        finally:
            sock.close()

    def _message(self, sock: socket.socket) -> bytes:
        data = b""
        while (size := BaseStrategy.compute_ldap_message_size(data)) < 0 or len(data) < size:
            chunk = sock.recv(4096)
            if not chunk:
                return b""
            data += chunk
            self.received += chunk
        return data


@pytest.mark.parametrize("stream", [False, True], ids=["sync", "stream"])
@pytest.mark.parametrize("start_tls_code", [None, 0, 2],
                         ids=["ldaps", "StartTLS accepted", "StartTLS refused"])
@pytest.mark.parametrize("certificate, ca", [("server", "other_ca"), ("expired", "ca"),
                                             ("wrong_host", "ca")],
                         ids=["wrong CA", "expired", "host name mismatch"])
def test_the_password_never_reaches_an_unverified_server(
    pki: Pki, tmp_path: Path, thread_errors: list[str], certificate: str, ca: str,
    start_tls_code: int | None, stream: bool
) -> None:
    with Impostor(getattr(pki, certificate), start_tls_code=start_tls_code) as impostor:
        factory = ConnectionFactory(settings(impostor.uri, secret(tmp_path),
                                             ca_file=str(getattr(pki, ca)),
                                             start_tls=start_tls_code is not None))
        reason, seconds = refusal(factory, stream)
        impostor.thread.join(timeout=2)
        assert not impostor.thread.is_alive(), "the refused connection was left open"
    assert PASSWORD.encode() not in impostor.received
    assert reason.startswith("TLS: ") and reason.endswith(f"({impostor.uri})")
    assert seconds < PROMPT_SECONDS and thread_errors == []


@pytest.mark.parametrize("stream", [False, True], ids=["sync", "stream"])
@pytest.mark.parametrize("start_tls_code", [None, 0], ids=["ldaps", "StartTLS"])
def test_the_impostor_does_read_a_bind_it_is_trusted_with(
    pki: Pki, tmp_path: Path, start_tls_code: int | None, stream: bool
) -> None:
    """The control: presenting a certificate the client trusts, the impostor reads the bind."""
    with Impostor(pki.server, start_tls_code=start_tls_code) as impostor:
        factory = ConnectionFactory(settings(impostor.uri, secret(tmp_path), ca_file=str(pki.ca),
                                             start_tls=start_tls_code is not None))
        close_quietly(factory.open(stream=stream))
    assert PASSWORD.encode() in impostor.received


# -- the commands --------------------------------------------------------------------------

def tls_config(tmp_path: Path, server: TlsSlapd, ca: Path, root: Path) -> Path:
    return write_config(tmp_path / "cfg", server, demo_service(root),
                        ldap={"ca_file": str(ca), "start_tls": server.scheme == START_TLS})


@pytest.mark.parametrize("scheme", [LDAPS, START_TLS], ids=["ldaps", "starttls"])
def test_check_exits_69_with_the_reason(
    servers: Callable[[str, str], TlsSlapd], pki: Pki, tmp_path: Path, scheme: str
) -> None:
    good = servers("server", scheme)
    result = run_cli("check", "--config", str(tls_config(tmp_path / "a", good, pki.ca,
                                                             tmp_path / "root")))
    assert result.returncode == 0, result.stdout + result.stderr

    expired = servers("expired", scheme)
    result = run_cli("check", "--config", str(tls_config(tmp_path / "b", expired, pki.ca,
                                                             tmp_path / "root")))
    assert result.returncode == 69, result.stdout + result.stderr
    line = (f"FAIL  bind to {expired.uri} as cn=admin,dc=example,dc=org: TLS: certificate verify "
            f"failed: certificate has expired ({expired.uri})")
    assert line in result.stdout.splitlines(), result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_run_with_a_wrong_ca_stays_up_and_reconnects_once_it_is_fixed(
    servers: Callable[[str, str], TlsSlapd], pki: Pki, tmp_path: Path
) -> None:
    """`run` keeps retrying with backoff and says why; `status` shows the service without a
    stream; a corrected CA file (read on every connect) lets the next retry in."""
    server = servers("server", LDAPS)
    ca = tmp_path / "ca.pem"
    ca.write_bytes(pki.other_ca.read_bytes())
    root = tmp_path / "root"
    root.mkdir()
    config = tls_config(tmp_path, server, ca, root)
    syslog = SyslogCapture(tmp_path / "cfg" / "syslog.sock")
    daemon = start_daemon(config, log=tmp_path / "daemon.log")
    reason = f"TLS: certificate verify failed: unable to get local issuer certificate ({server.uri})"
    try:
        wait_for(lambda: reason in syslog.text(), what="the TLS reason logged")
        # `status` itself trusts the right CA; the daemon keeps the configuration it loaded
        config.write_text(config.read_text().replace(str(ca), str(pki.ca)))
        wait_for(lambda: (r := run_cli("--config", str(config), "status")).returncode == 69
                 and "stream     NONE for " in r.stdout and f": {reason}\n" in r.stdout,
                 what="status to show no stream, and why")
        assert daemon.poll() is None
        connection = ldap3.Connection(ldap3.Server(server.uri, tls=ldap3.Tls(
            ca_certs_file=str(pki.ca), validate=ssl.CERT_REQUIRED)), server.root_dn, PASSWORD,
            auto_bind=True)
        dn = add_item(connection, "waiting")
        ca.write_bytes(pki.ca.read_bytes())
        wait_for(lambda: mode_of(connection, dn) == "added", timeout=60,
                 what="the entry made while the CA was wrong")
    finally:
        assert stop_daemon(daemon) == 0
        syslog.close()
    assert "Traceback" not in (tmp_path / "daemon.log").read_text()


@pytest.mark.parametrize("start_tls_code", [None, 0], ids=["ldaps", "StartTLS"])
def test_a_stream_binds_every_time_while_its_receiver_reads(
    pki: Pki, tmp_path: Path, start_tls_code: int | None
) -> None:
    """ldap3 reads a stream's socket in a thread of its own while the caller writes the bind
    (and the search). One TLS connection must not be read and written by two threads at
    once: OpenSSL failed with "[SSL] internal error" now and then, when the server's session
    tickets (OpenSSL sends them right after the handshake; the impostor is such a server)
    were being read as the bind was written. A hundred stream connections all bind."""
    failures = []
    for _ in range(100):
        with Impostor(pki.server, start_tls_code=start_tls_code) as impostor:
            factory = ConnectionFactory(settings(impostor.uri, secret(tmp_path),
                                                 ca_file=str(pki.ca),
                                                 start_tls=start_tls_code is not None))
            try:
                close_quietly(factory.open(stream=True))
            except DirectoryUnavailable as exc:
                failures.append(str(exc))
    assert failures == []
