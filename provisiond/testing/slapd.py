"""A private, throwaway OpenLDAP server: the real slapd from Debian, no root, nothing in /etc.

Tests, the demo and the benchmark all need a directory that behaves exactly like production
(syncprov, entryCSN, the Assertion control, session logs that vanish on restart). Starting the
real binary costs about 50 ms, so every test that wants LDAP gets the real thing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from provisiond import paths

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
MODULE_DIR = "/usr/lib/ldap"
SYSTEM_SCHEMA_DIR = Path("/etc/ldap/schema")
PROJECT_SCHEMA_DIR = paths.schema_dir()  # the checkout's, the wheel's or the package's
BASE_SCHEMAS = ("core", "cosine", "nis", "inetorgperson")
DEFAULT_INDEXES = ("objectClass eq", "entryCSN eq", "entryUUID eq", "uid eq", "cn eq")


def slapd_available() -> bool:
    return os.access(SLAPD, os.X_OK) and os.access(SLAPADD, os.X_OK)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _schema_ldif(path: Path) -> str:
    """The LDIF entry for a schema file, with `cn={N}name` numbering stripped."""
    text = path.read_text()
    return text if text.endswith("\n") else text + "\n"


@dataclass
class Slapd:
    """One private slapd instance in `directory` (kept short: ldapi paths max 107 bytes)."""

    directory: Path
    suffix: str = "dc=example,dc=org"
    root_dn: str = "cn=admin,dc=example,dc=org"
    root_password: str = "secret"
    schema_files: tuple[Path, ...] = (PROJECT_SCHEMA_DIR / "provisiond.ldif",)
    indexes: tuple[str, ...] = (
        "provisiondMode eq",
        "provisiondState eq",
    )
    session_log: int = 10000
    no_sync: bool = True
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def socket_path(self) -> Path:
        return self.directory / "ldapi"

    @property
    def ldapi_uri(self) -> str:
        return "ldapi://" + urllib.parse.quote(str(self.socket_path), safe="")

    # -- set-up ----------------------------------------------------------------------------

    def config_ldif(self) -> str:
        db_dir = self.directory / "db"
        schemas = [SYSTEM_SCHEMA_DIR / f"{name}.ldif" for name in BASE_SCHEMAS]
        schemas += list(self.schema_files)
        indexes = "".join(f"olcDbIndex: {ix}\n" for ix in (*DEFAULT_INDEXES, *self.indexes))
        parts = [
            "dn: cn=config\nobjectClass: olcGlobal\ncn: config\n"
            f"olcPidFile: {self.directory / 'slapd.pid'}\n"
            f"olcArgsFile: {self.directory / 'slapd.args'}\n"
            "olcSizeLimit: unlimited\n"
            "olcServerID: 1\n",
            "dn: cn=module{0},cn=config\nobjectClass: olcModuleList\ncn: module{0}\n"
            f"olcModulePath: {MODULE_DIR}\nolcModuleLoad: back_mdb\nolcModuleLoad: syncprov\n",
            "dn: cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: schema\n",
        ]
        parts += [_schema_ldif(path) for path in schemas]
        uid, gid = os.getuid(), os.getgid()
        parts += [
            "dn: olcDatabase={-1}frontend,cn=config\nobjectClass: olcDatabaseConfig\n"
            "objectClass: olcFrontendConfig\nolcDatabase: {-1}frontend\nolcSizeLimit: unlimited\n",
            "dn: olcDatabase={0}config,cn=config\nobjectClass: olcDatabaseConfig\n"
            "olcDatabase: {0}config\n"
            f"olcAccess: to * by dn.exact=gidNumber={gid}+uidNumber={uid},"
            "cn=peercred,cn=external,cn=auth manage by * break\n",
            "dn: olcDatabase={1}mdb,cn=config\nobjectClass: olcDatabaseConfig\n"
            "objectClass: olcMdbConfig\nolcDatabase: {1}mdb\n"
            f"olcSuffix: {self.suffix}\nolcRootDN: {self.root_dn}\n"
            f"olcRootPW: {self.root_password}\nolcDbDirectory: {db_dir}\n"
            f"olcDbMaxSize: 1073741824\n{indexes}"
            + ("olcDbNoSync: TRUE\n" if self.no_sync else "")
            + "olcLimits: * size=unlimited time=unlimited\n"
            # any bound identity may write: tests run daemons as identities of their own
            "olcAccess: to * by users write by * read\n",
            "dn: olcOverlay={0}syncprov,olcDatabase={1}mdb,cn=config\n"
            "objectClass: olcOverlayConfig\nobjectClass: olcSyncProvConfig\n"
            "olcOverlay: {0}syncprov\nolcSpCheckpoint: 100 10\n"
            f"olcSpSessionlog: {self.session_log}\n",
        ]
        return "\n".join(parts)

    def base_ldif(self) -> str:
        rdn_value = self.suffix.split(",")[0].split("=", 1)[1]
        return (
            f"dn: {self.suffix}\nobjectClass: dcObject\nobjectClass: organization\n"
            f"dc: {rdn_value}\no: {rdn_value}\n"
        )

    def create(self, extra_ldif: str = "") -> None:
        """Write the configuration and the base entries (plus `extra_ldif`) with slapadd."""
        (self.directory / "slapd.d").mkdir(parents=True, exist_ok=True)
        (self.directory / "db").mkdir(exist_ok=True)
        self._slapadd("-n0", self.config_ldif())
        self._slapadd("-n1", self.base_ldif() + ("\n" + extra_ldif if extra_ldif else ""))

    def _slapadd(self, database: str, ldif: str) -> None:
        result = subprocess.run(
            [SLAPADD, "-q", database, "-F", str(self.directory / "slapd.d")],
            input=ldif.encode(),
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"slapadd {database} failed: {result.stderr.decode()[-2000:]}")

    # -- running ---------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        urls = f"{self.uri}/ {self.ldapi_uri}/"
        self.process = subprocess.Popen(
            [SLAPD, "-F", str(self.directory / "slapd.d"), "-h", urls, "-d", "0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.directory / "slapd.log", "ab"),  # noqa: SIM115 - owned by slapd
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.directory / "slapd.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"slapd exited with {self.process.returncode}: {log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.01)
        raise RuntimeError("slapd did not start listening in time")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        """Stop and start on the same port: the in-memory session log is lost."""
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def write_password_file(self, path: Path) -> Path:
        path.write_text(self.root_password + "\n")
        path.chmod(0o600)
        return path


def start_private_slapd(
    directory: Path | None = None, extra_ldif: str = "", **options: object
) -> Slapd:
    """Create and start an instance; `directory` defaults to a new short temp dir."""
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="pvd-", dir="/tmp"))
    server = Slapd(directory=directory, **options)  # type: ignore[arg-type]
    server.create(extra_ldif)
    server.start()
    return server


def destroy(server: Slapd) -> None:
    server.stop()
    shutil.rmtree(server.directory, ignore_errors=True)
