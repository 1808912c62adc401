"""`provisiond diagnose -o FILE.tar.gz`: one file to attach to a support request.

It gathers the version (and those of the libraries), the configuration with secrets redacted,
`status --json`, the output of `check`, recent provisiond lines from syslog or the journal
when readable, and listings (size, mode, owner, SHA-256) of the template, hook, kind and state
directories. It works with a broken configuration too (the error goes into the bundle).

It never reads the bind password file into the bundle: the password is read only to redact it
from everything else, and a file that is the password file is left out of every listing.

Configuration files are redacted structurally, not line by line: an inline secret can sit in a
flow mapping (`ldap: {uri: ..., bind_password: S}`) where no line pattern finds it. Each file is
parsed, the value of every secret-looking key is replaced at any depth, and the result is
dumped again (comments do not survive, nor do secrets in them). Those values are also redacted
from everything else in the bundle (a loader error may quote them). A file that does not parse
cannot be redacted this way, so it is left out with a note saying why.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import os
import platform
import pwd
import re
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from provisiond import __version__, paths
from provisiond.config import Config, ConfigError, load_config
from provisiond.host.files import atomic_write
from provisiond.operate.redaction import Redactor, inline_secrets, scrub

SYSLOG_FILES = ("/var/log/syslog", "/var/log/daemon.log", "/var/log/messages")
SYSLOG_TAIL_BYTES = 8 * 1024 * 1024
DEFAULT_LINES = 2000
LIBRARIES = ("ldap3", "pyasn1", "PyYAML", "Jinja2", "python-daemon", "psutil")
MIN_SPREAD_SECRET = 4  # shorter inline values are redacted in place only (not bundle-wide)
DUMP_HEADER = ("# parsed and dumped again by provisiond diagnose, sensitive values redacted "
               "(comments and layout are not kept)\n")


@dataclass(frozen=True)
class ConfigFile:
    """One configuration file as the bundle shows it."""

    name: str  # in the bundle, below config/
    data: Any = None  # parsed YAML
    left_out: str = ""  # why the file is not in the bundle ("" when it is)

    @classmethod
    def read(cls, path: Path, name: str) -> ConfigFile:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            return cls(name, left_out=f"cannot read {path}: {exc.strerror or exc}")
        try:
            return cls(name, yaml.safe_load(text))
        except yaml.YAMLError as exc:  # the message may quote the text: only say where
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            return cls(name, left_out=f"{path} is not valid YAML{where}, so its sensitive values "
                                      "cannot be redacted structurally")

    def show(self, redact: Callable[[str], str]) -> tuple[str, str]:
        """(bundle name, content): the redacted YAML, or a note why it is left out."""
        if not self.left_out:
            try:
                dumped = yaml.safe_dump(scrub(self.data, redact), sort_keys=False,
                                        allow_unicode=True, default_flow_style=False)
                return f"config/{self.name}", DUMP_HEADER + dumped
            except (yaml.YAMLError, RecursionError) as exc:
                reason = f"cannot be redacted: {type(exc).__name__}"
                return f"config/{self.name}.left-out.txt", f"left out: {reason}\n"
        return f"config/{self.name}.left-out.txt", f"left out: {self.left_out}\n"


def _bind_password_file(files: Sequence[ConfigFile]) -> str | None:
    """ldap.bind_password_file of the main file, even when the configuration does not load."""
    ldap = files[0].data.get("ldap") if files and isinstance(files[0].data, dict) else None
    path = ldap.get("bind_password_file") if isinstance(ldap, dict) else None
    return path if isinstance(path, str) and path else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def listing(directories: Sequence[Path], excluded: Sequence[Path] = (), *,
            hashes: bool = True) -> str:
    """One line per file: mode, owner, size, mtime, sha256, path (excluded paths left out)."""
    skip = {os.path.realpath(p) for p in excluded}
    lines = []
    for directory in directories:
        lines.append(f"# {directory}")
        if not directory.is_dir():
            lines.append("  (not a directory or not there)")
            continue
        try:
            found = sorted(p for p in directory.rglob("*") if not p.is_dir())
        except OSError as exc:
            lines.append(f"  (cannot list: {exc.strerror or exc})")
            continue
        for path in found:
            if os.path.realpath(path) in skip:
                lines.append(f"  (left out: {path.relative_to(directory)} is the secret file)")
                continue
            try:
                info = path.lstat()
                digest = _sha256(path) if hashes and stat.S_ISREG(info.st_mode) else "-"
            except OSError as exc:
                lines.append(f"  {path.relative_to(directory)}: {exc.strerror or exc}")
                continue
            changed = datetime.fromtimestamp(info.st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            lines.append(f"  {stat.filemode(info.st_mode)} {_owner(info.st_uid):<8} "
                         f"{info.st_size:>9} {changed} {digest} {path.relative_to(directory)}")
    return "\n".join(lines) + "\n"


def _tail(path: str, limit: int) -> list[str]:
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - limit))
        data = handle.read()
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[1:] if size > limit else lines


def syslog_lines(tag: str, lines: int, files: Sequence[str] | None = None) -> str:
    """Recent lines of provisiond from the journal and the syslog files that can be read."""
    files = SYSLOG_FILES if files is None else files
    parts: list[str] = []
    journalctl = shutil.which("journalctl")
    if journalctl:
        try:
            result = subprocess.run(
                [journalctl, "--no-pager", "-o", "short-iso", "-n", str(lines), "-t", tag],
                capture_output=True, text=True, timeout=30, check=False,
            )
            text = result.stdout.strip()
            if result.returncode == 0 and text and not text.startswith("-- No entries --"):
                parts.append(f"# journalctl -t {tag} -n {lines}\n{text}\n")
            else:
                parts.append(f"# journalctl -t {tag}: {result.stderr.strip() or 'no entries'}\n")
        except (OSError, subprocess.SubprocessError) as exc:
            parts.append(f"# journalctl: {exc}\n")
    marker = re.compile(rf"\b{re.escape(tag)}(\[\d+\])?:")
    for name in files:
        if not os.path.exists(name):
            continue
        try:
            found = [line for line in _tail(name, SYSLOG_TAIL_BYTES) if marker.search(line)]
        except OSError as exc:
            parts.append(f"# {name}: {exc.strerror or exc}\n")
            continue
        parts.append(f"# {name} (last {min(lines, len(found))} {tag} lines)\n"
                     + "".join(line + "\n" for line in found[-lines:]))
    return "".join(parts) or "# no journal and no readable syslog file\n"


def version_text(config: Config | None) -> str:
    lines = [f"provisiond {__version__}",
             f"python {sys.version.split()[0]} ({sys.executable})",
             f"platform {platform.platform()}",
             f"host {socket.gethostname()}",
             f"module {Path(__file__).resolve().parent}",
             f"hooks {paths.hooks_dir()}"]
    for name in LIBRARIES:
        try:
            lines.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            lines.append(f"{name} (not found)")
    dpkg = shutil.which("dpkg-query")
    if dpkg:
        result = subprocess.run([dpkg, "-W", "-f", "${Package} ${Version} ${db:Status-Abbrev}\n",
                                 "provisiond"], capture_output=True, text=True, check=False,
                                timeout=30)
        package = result.stdout.strip() or "provisiond is not installed as a package"
        lines.append(f"package {package}")
    if config is not None:
        lines.append(f"config {config.source}")
    return "\n".join(lines) + "\n"


def config_files(source: Path) -> list[Path]:
    files = [source]
    services = source.parent / "services.d"
    if services.is_dir():
        files += sorted(services.glob("*.yaml"))
    return files


class Bundle:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.buffer = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buffer, mode="w:gz")  # noqa: SIM115 - see close()
        self.names: list[str] = []

    def add(self, name: str, text: str) -> None:
        data = text.encode("utf-8", "replace")
        info = tarfile.TarInfo(f"{self.prefix}/{name}")
        info.size = len(data)
        info.mtime = int(time.time())
        info.mode = 0o644
        self.tar.addfile(info, io.BytesIO(data))
        self.names.append(name)

    def close(self) -> bytes:
        self.tar.close()
        return self.buffer.getvalue()


def _read_secrets(password_file: str | None) -> list[str]:
    """The bind password, to redact it, when the configuration did not load."""
    from provisiond.model.settings import read_secret

    try:
        secret = read_secret(password_file) if password_file else ""
    except OSError:
        return []
    return [secret] if secret else []


def _guarded(function: Callable[[], str]) -> str:
    try:
        return function()
    except Exception as exc:  # noqa: BLE001 - a bundle with the error beats no bundle
        return f"failed: {type(exc).__name__}: {exc}\n"


def build(config_path: str | None, *, lines: int = DEFAULT_LINES) -> tuple[bytes, list[str]]:
    source = Path(config_path) if config_path else paths.DEFAULT_CONFIG
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    bundle = Bundle(f"provisiond-diagnose-{socket.gethostname()}-{stamp}")
    config: Config | None = None
    config_error: str | None = None
    try:
        config = load_config(source)
    except ConfigError as exc:
        config_error = str(exc)
    sources = config_files(source)
    files = [ConfigFile.read(p, p.name if p == source else f"services.d/{p.name}")
             for p in sources]
    password_file = _bind_password_file(files)
    secret_files = [Path(password_file)] if password_file else []
    secrets = config.secrets() if config else _read_secrets(password_file)
    inline = [s for f in files for s in inline_secrets(f.data) if len(s) >= MIN_SPREAD_SECRET]
    redact = Redactor([*secrets, *inline])

    bundle.add("version.txt", version_text(config))
    for path, file in zip(sources, files, strict=True):
        if not any(os.path.realpath(path) == os.path.realpath(s) for s in secret_files):
            bundle.add(*file.show(redact))
    if config_error:
        bundle.add("config-error.txt", redact(config_error) + "\n")
    if config is not None:
        from provisiond.operate.check import run_checks
        from provisiond.operate.status import collect

        def status() -> str:
            return json.dumps(collect(config), indent=2) + "\n"

        def check() -> str:
            out = io.StringIO()
            code = run_checks(config, out=out)
            return out.getvalue() + f"exit status {code}\n"

        bundle.add("status.json", redact(_guarded(status)))
        bundle.add("check.txt", redact(_guarded(check)))
        bundle.add("templates.txt", listing(list(config.templates), secret_files))
        bundle.add("hooks.txt", listing([Path(p) for p in config.hooks.path], secret_files))
        bundle.add("kinds.txt", listing(list(paths.kinds_dirs()), secret_files))
        bundle.add("state.txt", listing([config.state_dir], secret_files, hashes=False))
        if config.metrics.path:
            metrics = Path(config.metrics.path)
            bundle.add("metrics.prom", _guarded(lambda: metrics.read_text(errors="replace")))
        tag = config.logging.tag
    else:
        tag = "provisiond"
    bundle.add("syslog.txt", redact(_guarded(lambda: syslog_lines(tag, lines))))
    manifest = (
        "provisiond diagnostics bundle\n\n"
        "Secrets are redacted; the bind password file is never included.\n"
        "Files: " + ", ".join([*bundle.names, "README.txt"]) + "\n"
    )
    bundle.add("README.txt", manifest)
    return bundle.close(), bundle.names


def write_private(path: Path, data: bytes) -> None:
    """Write the bundle readable by its owner only (it holds the configuration)."""
    atomic_write(path, data, mode=0o600)
