"""Migration from stoney cloud's prov-backup-rsnapshot: its INI file and its cookie.

The Perl daemon read one INI file with the sections [Global] (log switches, ENVIRONMENT),
[Database] (the LDAP server, bind DN and password, service subtree, cookie file, search
filter), [Service] (mode, transport, service and type names, syslog tag), [Gateway] and
[Backup] (rsnapshot configuration file pattern, setquota, chroot script, mount point).
`parse_ini` reads it and `convert` produces the equivalent provisiond YAML: a `backup-account`
service with the site's values as vars. The bind password never appears in that text; it is
returned separately for the caller to put into a private file. Everything without an
equivalent is listed, as comments, at the end of the YAML so nothing is dropped silently.

Pure functions: no file is read or written here (`provisiond import-legacy` does the I/O).
"""

from __future__ import annotations

import configparser
import json
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from provisiond.directory.cookie import parse_cookie
from provisiond.model.values import DnType

SECTIONS = ("Global", "Database", "Service", "Gateway", "Backup")
CONFIG_NAME = "rsnapshot.conf.%uid%"
KIND = "backup-account"
_TRUE = {"1", "yes", "true", "on"}
_SECRET_RE = re.compile(r"PASS|SECRET|CREDENTIAL", re.IGNORECASE)
_TAG_RE = re.compile(r"[A-Za-z0-9._-]{1,48}")
_NAME_RE = re.compile(r"[a-z][a-z0-9_-]*")
_URI_RE = re.compile(
    r"(?:(?P<scheme>ldaps?)://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(?P<port>[0-9]+))?/?"
)
# Keys `convert` turns into configuration (the rest is listed as not converted).
CONVERTED = frozenset({
    ("Global", "LOG_DEBUG"), ("Global", "LOG_INFO"), ("Global", "LOG_WARNING"),
    ("Global", "LOG_ERR"),
    ("Database", "BACKEND"), ("Database", "SERVER"), ("Database", "PORT"),
    ("Database", "ADMIN_USER"), ("Database", "ADMIN_PASSWORD"),
    ("Database", "SERVICE_SUBTREE"), ("Database", "COOKIE_FILE"),
    ("Database", "DEFAULT_COOKIE"),
    ("Service", "SYSLOG"),
    ("Backup", "RSNAPSHOT_CONFIG_FILE"), ("Backup", "SET_QUOTA_CMD"), ("Backup", "MOUNTPOINT"),
})
# Keys with a known meaning but no setting of their own, and why.
REPLACED = {
    ("Database", "SEARCH_FILTER"): "provisiond builds its own filters (only entries that "
    "request work are streamed; the cookie replaces the entryCSN bound)",
    ("Service", "MODUS"): "provisiond always acts on the entries below base",
    ("Service", "TRANSPORTAPI"): "hooks run locally with an argument list, never a shell",
    ("Service", "SERVICE"): f"the service kind is {KIND}",
    ("Service", "TYPE"): f"the service kind is {KIND}",
    ("Backup", "CREATE_CHROOT_CMD"): "replaced by the backup-chroot hook; check that "
    "backup_root and the directory names match the layout your script created",
    ("Global", "ENVIRONMENT"): "no equivalent: the configuration file is per host",
}


class LegacyError(ValueError):
    """The legacy configuration cannot be converted; the message says which key and why."""


@dataclass(frozen=True)
class LegacyConfig:
    """The INI file: section -> KEY -> value, names as the file spells them."""

    source: str
    sections: Mapping[str, Mapping[str, str]]

    def section(self, name: str) -> Mapping[str, str]:
        for section, keys in self.sections.items():
            if section.lower() == name.lower():
                return keys
        return {}

    def get(self, section: str, key: str) -> str | None:
        for name, value in self.section(section).items():
            if name.upper() == key.upper():
                return value
        return None


@dataclass(frozen=True)
class Conversion:
    yaml: str
    password: str | None  # to be written to the secret file, never printed
    cookie_file: str | None  # the legacy COOKIE_FILE, if any
    default_cookie: str | None  # DEFAULT_COOKIE when it names a CSN, else None
    warnings: tuple[str, ...] = field(default_factory=tuple)


def parse_ini(text: str, source: str = "<legacy configuration>") -> LegacyConfig:
    """Read the INI text (Config::IniFiles style: `KEY = value`, `#` and `;` comments, no
    interpolation, so `%uid%` and `%entryCSN%` stay as they are)."""
    parser = configparser.ConfigParser(interpolation=None, strict=False,
                                       default_section="\0no default section",
                                       comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text, source)
    except configparser.Error as exc:
        raise LegacyError(f"{source}: not an INI file: {' '.join(str(exc).split())}") from exc
    sections = {name: dict(parser.items(name)) for name in parser.sections()}
    legacy = LegacyConfig(source, sections)
    if not legacy.section("Database"):
        raise LegacyError(f"{source}: no [Database] section; is this prov-backup-rsnapshot's "
                          "configuration?")
    return legacy


def legacy_cookie(text: str) -> str | None:
    """The starting cookie from the legacy cookie file's text (its first non-blank line):
    `rid=001,csn=<CSN>`, the multi-provider `rid=001,sid=001,csn=<CSN>;<CSN>` or
    `sid=...,csn=...` forms; None for an empty one such as `rid=001,csn=`. LegacyError for
    anything that is not a cookie (never a silent fallback to a full reload)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    if len(lines) > 1:
        raise LegacyError(f"cookie file has {len(lines)} lines; expected one cookie")
    try:
        cookie = parse_cookie(lines[0])
    except ValueError as exc:
        raise LegacyError(str(exc)) from exc
    return cookie.text if cookie is not None else None


def ldap_uri(server: str, port: str | None) -> str:
    """SERVER (a host name, an address or an ldap[s]:// URI) and PORT as one URI; port 636
    without a scheme means ldaps."""
    match = _URI_RE.fullmatch(server.strip())
    if not match:
        raise LegacyError(f"[Database] SERVER {server!r}: not a host name or ldap(s):// URI")
    number = match["port"] or (port.strip() if port and port.strip() else None)
    if number is not None and not (number.isdigit() and 0 < int(number) < 65536):
        raise LegacyError(f"[Database] PORT {number!r}: not a TCP port")
    if match["port"] and port and port.strip() and port.strip() != match["port"]:
        raise LegacyError(f"[Database] SERVER {server!r} and PORT {port!r} disagree")
    scheme = match["scheme"] or ("ldaps" if number == "636" else "ldap")
    return f"{scheme}://{match['host']}" + (f":{int(number)}" if number else "")


def log_level(legacy: LegacyConfig) -> str:
    """The most detailed LOG_* switch that is on ([Global]); error if none is."""
    for key, level in (("LOG_DEBUG", "debug"), ("LOG_INFO", "info"),
                       ("LOG_WARNING", "warning")):
        if (legacy.get("Global", key) or "").strip().lower() in _TRUE:
            return level
    return "error"


def _quote(value: str) -> str:
    """A YAML scalar that reads back as exactly `value` (JSON strings are YAML)."""
    return json.dumps(value, ensure_ascii=False)


def _dn(section: str, key: str, value: str) -> str:
    try:
        return DnType(charset="printable").parse(value.strip())
    except ValueError as exc:
        raise LegacyError(f"[{section}] {key}: {exc}") from exc


def _absolute(section: str, key: str, value: str) -> str:
    path = value.strip()
    if len(path) > 1:
        path = path.rstrip("/")
    if not path.startswith("/") or posixpath.normpath(path) != path or not path.isprintable():
        raise LegacyError(f"[{section}] {key} {value!r}: not a normalized absolute path")
    return path


def _unconverted(legacy: LegacyConfig) -> list[str]:
    lines = []
    for section, keys in legacy.sections.items():
        canonical = next((s for s in SECTIONS if s.lower() == section.lower()), section)
        for key, value in keys.items():
            if (canonical, key.upper()) in CONVERTED:
                continue
            shown = "(secret, not shown)" if _SECRET_RE.search(key) else _quote(value)
            why = REPLACED.get((canonical, key.upper()), "no equivalent in provisiond")
            lines.append(f"#   [{section}] {key} = {shown}: {why}")
    return lines


def convert(legacy: LegacyConfig, *, secret_file: str, state_dir: str,
            service: str = "backup") -> Conversion:
    """The provisiond YAML equivalent to `legacy` (see the module docstring)."""
    if not _NAME_RE.fullmatch(service):
        raise LegacyError(f"service name {service!r}: lowercase letters, digits, - and _")
    warnings: list[str] = []
    backend = (legacy.get("Database", "BACKEND") or "LDAP").strip()
    if backend.upper() != "LDAP":
        raise LegacyError(f"[Database] BACKEND {backend!r}: only LDAP can be converted")
    server = legacy.get("Database", "SERVER")
    if not server or not server.strip():
        raise LegacyError("[Database] SERVER is missing")
    uri = ldap_uri(server, legacy.get("Database", "PORT"))
    subtree = legacy.get("Database", "SERVICE_SUBTREE")
    if not subtree or not subtree.strip():
        raise LegacyError("[Database] SERVICE_SUBTREE is missing")
    base = _dn("Database", "SERVICE_SUBTREE", subtree)
    bind_dn = legacy.get("Database", "ADMIN_USER")
    password = legacy.get("Database", "ADMIN_PASSWORD")
    if password is not None and ("\n" in password or "\r" in password or "\0" in password):
        raise LegacyError("[Database] ADMIN_PASSWORD: contains a line break or NUL")

    default_cookie = None
    if legacy.get("Database", "DEFAULT_COOKIE"):
        try:
            default_cookie = legacy_cookie(legacy.get("Database", "DEFAULT_COOKIE") or "")
        except LegacyError as exc:
            raise LegacyError(f"[Database] DEFAULT_COOKIE: {exc}") from exc
    cookie_file = legacy.get("Database", "COOKIE_FILE")
    cookie_file = _absolute("Database", "COOKIE_FILE", cookie_file) if cookie_file else None

    tag = (legacy.get("Service", "SYSLOG") or "").strip()
    if tag and not _TAG_RE.fullmatch(tag):
        warnings.append(f"[Service] SYSLOG {tag!r} is not a usable syslog tag; "
                        "provisiond's default tag is kept")
        tag = ""

    vars_: list[tuple[str, str]] = [("base", base)]
    config_file = legacy.get("Backup", "RSNAPSHOT_CONFIG_FILE")
    if config_file:
        path = _absolute("Backup", "RSNAPSHOT_CONFIG_FILE", config_file)
        directory, name = posixpath.split(path)
        if name != CONFIG_NAME:
            warnings.append(f"[Backup] RSNAPSHOT_CONFIG_FILE names files {name!r}; provisiond "
                            f"writes {CONFIG_NAME.replace('%uid%', '<uid>')}: rename the "
                            "existing files or they are left behind")
        if directory != "/":
            vars_.append(("rsnapshot_config_dir", directory))
    setquota = legacy.get("Backup", "SET_QUOTA_CMD")
    if setquota:
        vars_.append(("setquota", _absolute("Backup", "SET_QUOTA_CMD", setquota)))
    mountpoint = legacy.get("Backup", "MOUNTPOINT")
    if mountpoint:
        vars_.append(("quota_mount_point", _absolute("Backup", "MOUNTPOINT", mountpoint)))

    lines = [
        f"# provisiond configuration converted from prov-backup-rsnapshot's {legacy.source}",
        "# by `provisiond import-legacy`. Review it, install it as",
        "# /etc/provisiond/provisiond.yaml and run `provisiond check` before starting.",
        "# The bind password is not in this file: provisiond reads it from bind_password_file.",
        "ldap:",
        f"  uri: {_quote(uri)}",
    ]
    if bind_dn and bind_dn.strip():
        lines.append(f"  bind_dn: {_quote(_dn('Database', 'ADMIN_USER', bind_dn))}")
        lines.append(f"  bind_password_file: {_quote(secret_file)}")
        if password is None:
            warnings.append(f"[Database] ADMIN_USER without ADMIN_PASSWORD: put the password "
                            f"into {secret_file} (mode 0600) yourself")
    elif password:
        warnings.append("[Database] ADMIN_PASSWORD without ADMIN_USER: binding anonymously")
        password = None
    lines += [
        "sync:",
        "  mode: persist",
        f"state_dir: {_quote(state_dir)}",
        "logging:",
        f"  level: {log_level(legacy)}",
    ]
    if tag:
        lines.append(f"  tag: {_quote(tag)}")
    lines += [
        "services:",
        f"  {service}:",
        f"    kind: {KIND}",
        "    vars:",
        "      # the chroots: check this is where CREATE_CHROOT_CMD made them",
        f"      backup_root: {_quote('/var/backup')}",
        *(f"      {name}: {_quote(value)}" for name, value in vars_),
    ]
    unconverted = _unconverted(legacy)
    if unconverted:
        lines += ["#", "# Not converted:", *unconverted]
    return Conversion(yaml="\n".join(lines) + "\n", password=password,
                      cookie_file=cookie_file, default_cookie=default_cookie,
                      warnings=tuple(warnings))
