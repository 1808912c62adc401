"""A throwaway PKI and a private slapd speaking TLS, for the TLS tests.

Verification is only proven against a real TLS server with real certificates: a CA, a server
certificate for 127.0.0.1 and localhost, and the ones a client must refuse (an expired one, one
for another host name, a CA that signed none of them). They are made with the `openssl` command
line tool (Debian's openssl 3.0; no Python dependency just for tests) with EC keys, which take
milliseconds where RSA takes a second.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from provisiond.testing.slapd import Slapd

OPENSSL = "openssl"
SERVER_NAMES = "DNS:localhost,IP:127.0.0.1"
OTHER_NAMES = "DNS:ldap.example.org"
# An expired certificate is made with `openssl ca`, the only openssl 3.0 command that takes
# explicit validity dates (`x509 -req` and `req -x509` count days from now).
EXPIRED_FROM, EXPIRED_UNTIL = "20200101000000Z", "20210101000000Z"
CA_CONFIG = """\
[ca]
default_ca = throwaway
[throwaway]
database = {dir}/index.txt
new_certs_dir = {dir}
serial = {dir}/serial
default_md = sha256
policy = anything
copy_extensions = copy
unique_subject = no
x509_extensions = server
[server]
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[anything]
commonName = supplied
"""


@dataclass(frozen=True)
class KeyPair:
    certificate: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA that signed every server certificate below
    other_ca: Path  # a CA that signed none of them: the "wrong CA"
    server: KeyPair  # valid now, for localhost and 127.0.0.1
    expired: KeyPair  # for the right names, valid only in 2020
    wrong_host: KeyPair  # valid now, for ldap.example.org only


def _openssl(*argv: str) -> None:
    result = subprocess.run([OPENSSL, *argv], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {argv[0]} failed: {result.stderr[-2000:]}")


def _new_key(path: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", str(path))
    path.chmod(0o600)  # slapd reads it; nobody else should


def _self_signed_ca(directory: Path, name: str) -> KeyPair:
    pair = KeyPair(directory / f"{name}.pem", directory / f"{name}.key")
    _new_key(pair.key)
    _openssl("req", "-x509", "-new", "-key", str(pair.key), "-out", str(pair.certificate),
             "-days", "2", "-subj", f"/CN=provisiond {name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return pair


def _request(directory: Path, name: str, names: str) -> tuple[KeyPair, Path]:
    pair = KeyPair(directory / f"{name}.pem", directory / f"{name}.key")
    _new_key(pair.key)
    csr = directory / f"{name}.csr"
    _openssl("req", "-new", "-key", str(pair.key), "-out", str(csr),
             "-subj", f"/CN={names.split(',')[0].split(':', 1)[1]}",
             "-addext", f"subjectAltName={names}",
             "-addext", "extendedKeyUsage=serverAuth")
    return pair, csr


def _signed(directory: Path, ca: KeyPair, name: str, names: str) -> KeyPair:
    pair, csr = _request(directory, name, names)
    extensions = directory / f"{name}.ext"
    # the key identifiers too: Python 3.13 verifies strictly (VERIFY_X509_STRICT) by default
    extensions.write_text(f"subjectAltName={names}\nextendedKeyUsage=serverAuth\n"
                          "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca.certificate), "-CAkey", str(ca.key),
             "-CAcreateserial", "-days", "2", "-extfile", str(extensions),
             "-out", str(pair.certificate))
    return pair


def _signed_expired(directory: Path, ca: KeyPair, name: str, names: str) -> KeyPair:
    pair, csr = _request(directory, name, names)
    database = directory / "ca-db"
    database.mkdir(exist_ok=True)
    (database / "index.txt").write_text("")
    (database / "serial").write_text("01\n")
    config = database / "ca.cnf"
    config.write_text(CA_CONFIG.format(dir=database))
    _openssl("ca", "-batch", "-notext", "-config", str(config), "-in", str(csr),
             "-cert", str(ca.certificate), "-keyfile", str(ca.key),
             "-startdate", EXPIRED_FROM, "-enddate", EXPIRED_UNTIL,
             "-out", str(pair.certificate))
    return pair


def make_pki(directory: Path) -> Pki:
    """Every certificate the TLS tests need, in `directory` (about 0.1 s)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _self_signed_ca(directory, "ca")
    other = _self_signed_ca(directory, "other-ca")
    return Pki(
        ca=ca.certificate,
        other_ca=other.certificate,
        server=_signed(directory, ca, "server", SERVER_NAMES),
        expired=_signed_expired(directory, ca, "expired", SERVER_NAMES),
        wrong_host=_signed(directory, ca, "wrong-host", OTHER_NAMES),
    )


@dataclass
class TlsSlapd(Slapd):
    """A private slapd presenting `certificate`: on `ldaps://` when `scheme` is "ldaps", else
    on `ldap://` with StartTLS. Its `uri` is the one clients use."""

    certificate: KeyPair | None = None
    scheme: str = "ldap"

    @property
    def uri(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def config_ldif(self) -> str:
        # cn=config is the first entry (slapadd insists); the TLS settings are attributes of it
        ldif = super().config_ldif()
        if self.certificate is None:
            return ldif
        first, separator, rest = ldif.partition("\n\n")
        tls = (f"olcTLSCertificateFile: {self.certificate.certificate}\n"
               f"olcTLSCertificateKeyFile: {self.certificate.key}")
        return f"{first.rstrip()}\n{tls}{separator}{rest}"
