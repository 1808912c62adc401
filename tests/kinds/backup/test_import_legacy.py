"""`provisiond import-legacy`: prov-backup-rsnapshot's INI file and cookie to provisiond."""

from __future__ import annotations

import stat
from pathlib import Path

import ldap3
import pytest
import yaml

from provisiond.cli import main
from provisiond.config import load_config
from provisiond.kinds.backup.legacy import (
    LegacyError,
    convert,
    ldap_uri,
    legacy_cookie,
    log_level,
    parse_ini,
)
from provisiond.testing.slapd import Slapd
from tests.kinds.backup.support import (
    ACCOUNTS,
    Site,
    add_account,
    connect,
    running,
    wait_mode,
)

PASSWORD = "Legacy-Pw-9f2e%uid%"
CSN1 = "20130812122900.123456Z#000000#001#000000"
CSN2 = "20130812122901.654321Z#000000#002#000000"


def legacy_ini(**overrides: str) -> str:
    values = {
        "SERVER": "ldap.stoney-cloud.org", "PORT": "636",
        "ADMIN_USER": "cn=Manager,dc=stoney-cloud,dc=org", "ADMIN_PASSWORD": PASSWORD,
        "SERVICE_SUBTREE": ACCOUNTS, "COOKIE_FILE": "/nonexistent/cookie",
        "RSNAPSHOT_CONFIG_FILE": "/etc/rsnapshot/rsnapshot.conf.%uid%",
        "MOUNTPOINT": "/srv/backup", **overrides,
    }
    return f"""# prov-backup-rsnapshot configuration
[Global]
LOG_DEBUG = 0
LOG_INFO = 1
LOG_WARNING = 1
LOG_ERR = 1
ENVIRONMENT = backup-01

[Database]
BACKEND = LDAP
SERVER = {values['SERVER']}
PORT = {values['PORT']}
ADMIN_USER = {values['ADMIN_USER']}
ADMIN_PASSWORD = {values['ADMIN_PASSWORD']}
SERVICE_SUBTREE = {values['SERVICE_SUBTREE']}
COOKIE_FILE = {values['COOKIE_FILE']}
DEFAULT_COOKIE = rid=001,csn=
SEARCH_FILTER = (&(entryCSN>=%entryCSN%)(objectClass=*))

[Service]
MODUS = selfcare
TRANSPORTAPI = LocalCLI
SERVICE = Backup
TYPE = Rsnapshot
SYSLOG = prov-backup-rsnapshot

[Gateway]
HOST = localhost
USER = provisioning
PASSWORD = gateway-secret

[Backup]
RSNAPSHOT_CONFIG_FILE = {values['RSNAPSHOT_CONFIG_FILE']}
SET_QUOTA_CMD = /usr/sbin/setquota
CREATE_CHROOT_CMD = /usr/libexec/createBackupDirectory.sh
MOUNTPOINT = {values['MOUNTPOINT']}
"""


def test_conversion_is_a_loadable_configuration(tmp_path: Path) -> None:
    secret = tmp_path / "bind.secret"
    result = convert(parse_ini(legacy_ini(), "old.conf"), secret_file=str(secret),
                     state_dir=str(tmp_path / "state"))
    assert PASSWORD not in result.yaml and "gateway-secret" not in result.yaml
    assert result.password == PASSWORD and result.cookie_file == "/nonexistent/cookie"
    data = yaml.safe_load(result.yaml)
    assert data["ldap"] == {"uri": "ldaps://ldap.stoney-cloud.org:636",
                            "bind_dn": "cn=Manager,dc=stoney-cloud,dc=org",
                            "bind_password_file": str(secret)}
    assert data["logging"] == {"level": "info", "tag": "prov-backup-rsnapshot"}
    assert data["services"]["backup"]["kind"] == "backup-account"
    assert data["services"]["backup"]["vars"] == {
        "backup_root": "/var/backup", "base": ACCOUNTS, "rsnapshot_config_dir": "/etc/rsnapshot",
        "setquota": "/usr/sbin/setquota", "quota_mount_point": "/srv/backup"}
    assert "#   [Backup] CREATE_CHROOT_CMD = " in result.yaml
    assert "#   [Gateway] PASSWORD = (secret, not shown)" in result.yaml

    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    path = tmp_path / "provisiond.yaml"
    path.write_text(result.yaml)
    spec = load_config(path).services[0]
    assert spec.base == ACCOUNTS and spec.vars["quota_mount_point"] == "/srv/backup"


@pytest.mark.parametrize(("text", "expected"), [
    (f"rid=001,csn={CSN1}\n", f"rid=001,csn={CSN1}"),
    (f"rid=001,sid=001,csn={CSN1};{CSN2}\n", f"rid=001,sid=001,csn={CSN1};{CSN2}"),
    (f"sid=001,csn={CSN1};{CSN2}", f"sid=001,csn={CSN1};{CSN2}"),
    ("rid=001,csn=\n", None),
    ("\n", None),
])
def test_legacy_cookie_forms(text: str, expected: str | None) -> None:
    assert legacy_cookie(text) == expected


@pytest.mark.parametrize("text", [
    "rid=001,csn=2013-08-12", f"rid=001,csn={CSN1}\nrid=002,csn={CSN2}", "garbage",
    f"rid=001,csn={CSN1};", "rid=1234,csn=" + CSN1,
])
def test_malformed_cookies_are_refused(text: str) -> None:
    with pytest.raises(LegacyError):
        legacy_cookie(text)


@pytest.mark.parametrize(("server", "port", "uri"), [
    ("ldap.example.org", "636", "ldaps://ldap.example.org:636"),
    ("ldap.example.org", "389", "ldap://ldap.example.org:389"),
    ("ldap.example.org", "", "ldap://ldap.example.org"),
    ("ldaps://ldap.example.org", "636", "ldaps://ldap.example.org:636"),
    ("ldap://10.0.0.1:3389", None, "ldap://10.0.0.1:3389"),
    ("[::1]", "389", "ldap://[::1]:389"),
])
def test_ldap_uri(server: str, port: str | None, uri: str) -> None:
    assert ldap_uri(server, port) == uri


@pytest.mark.parametrize(("server", "port"), [
    ("ldap.example.org; rm -rf /", "389"), ("ldap.example.org", "99999"),
    ("ldap://a:389", "636"), ("http://a", None),
])
def test_bad_servers_are_refused(server: str, port: str | None) -> None:
    with pytest.raises(LegacyError):
        ldap_uri(server, port)


def test_log_level_and_refusals() -> None:
    assert log_level(parse_ini("[Database]\nA=1\n[Global]\nLOG_DEBUG = 1\n")) == "debug"
    assert log_level(parse_ini("[Database]\nA=1\n[Global]\nLOG_ERR = 1\n")) == "error"
    with pytest.raises(LegacyError, match=r"no \[Database\] section"):
        parse_ini("[Global]\nLOG_ERR = 1\n")
    with pytest.raises(LegacyError, match="BACKEND 'File'"):
        convert(parse_ini(legacy_ini().replace("BACKEND = LDAP", "BACKEND = File")),
                secret_file="/s", state_dir="/st")
    with pytest.raises(LegacyError, match="SERVICE_SUBTREE"):
        convert(parse_ini(legacy_ini(SERVICE_SUBTREE="not a dn")), secret_file="/s",
                state_dir="/st")
    warned = convert(parse_ini(legacy_ini(RSNAPSHOT_CONFIG_FILE="/etc/rs/%uid%.conf")),
                     secret_file="/s", state_dir="/st")
    assert any("'%uid%.conf'" in warning for warning in warned.warnings)


def test_command_writes_secret_and_cookie_and_prints_no_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cookie = tmp_path / "legacy.cookie"
    cookie.write_text(f"rid=001,sid=001,csn={CSN1};{CSN2}\n")
    ini = tmp_path / "Rsnapshot.conf"
    ini.write_text(legacy_ini(COOKIE_FILE=str(cookie)))
    secret, state = tmp_path / "etc" / "bind.secret", tmp_path / "state"
    argv = ["import-legacy", str(ini), "--secret-file", str(secret), "--state-dir", str(state)]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert PASSWORD not in out and PASSWORD not in err
    assert yaml.safe_load(out)["ldap"]["bind_password_file"] == str(secret)
    assert secret.read_text() == PASSWORD + "\n"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert (state / "backup.cookie").read_text() == f"rid=001,sid=001,csn={CSN1};{CSN2}\n"

    # Running it again is harmless; a different secret or cookie needs --force.
    assert main(argv) == 0
    capsys.readouterr()
    cookie.write_text(f"rid=001,csn={CSN2}\n")
    assert main(argv) == 73
    assert "already holds another cookie" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0
    assert (state / "backup.cookie").read_text() == f"rid=001,csn={CSN2}\n"
    secret.write_text("another\n")
    assert main(argv) == 73
    assert main([*argv, "--force"]) == 0
    assert secret.read_text() == PASSWORD + "\n"


def test_command_writes_nothing_when_the_cookie_is_bad(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cookie = tmp_path / "legacy.cookie"
    cookie.write_text("rid=001,csn=20130812\n")  # the old CSN regex's silent fallback case
    ini = tmp_path / "Rsnapshot.conf"
    ini.write_text(legacy_ini(COOKIE_FILE=str(cookie)))
    secret, state = tmp_path / "bind.secret", tmp_path / "state"
    assert main(["import-legacy", str(ini), "--secret-file", str(secret),
                 "--state-dir", str(state)]) == 65
    out, err = capsys.readouterr()
    assert out == "" and "malformed CSN" in err
    assert not secret.exists() and not state.exists()
    assert main(["import-legacy", str(tmp_path / "missing.conf")]) == 66


def test_imported_configuration_runs_from_the_legacy_cookie(
    stoney: Slapd, site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The converted configuration, pointed at a test server and site, starts from the
    legacy cookie: an account the old daemon already handled stays untouched, a new request
    is provisioned, and the cookie moves on."""
    conn = connect(stoney)
    done = add_account(conn, "1111111", mode="added")  # handled by the legacy daemon
    conn.search(stoney.suffix, "(objectClass=*)", ldap3.BASE, attributes=["contextCSN"])
    context_csn = conn.response[0]["attributes"]["contextCSN"][0]
    cookie = tmp_path / "legacy.cookie"
    cookie.write_text(f"rid=001,csn={context_csn}\n")
    port = stoney.uri.rsplit(":", 1)[1]
    ini = tmp_path / "Rsnapshot.conf"
    ini.write_text(legacy_ini(SERVER="127.0.0.1", PORT=port, ADMIN_USER=stoney.root_dn,
                              ADMIN_PASSWORD=stoney.root_password, COOKIE_FILE=str(cookie)))
    state, secret = tmp_path / "state", tmp_path / "bind.secret"
    assert main(["import-legacy", str(ini), "--secret-file", str(secret),
                 "--state-dir", str(state)]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    config["services"]["backup"]["vars"].update(site.vars())
    config["logging"]["syslog_address"] = str(tmp_path / "no-syslog.sock")
    path = tmp_path / "provisiond.yaml"
    path.write_text(yaml.safe_dump(config))
    with running(path):
        dn = add_account(conn, "2222222")
        wait_mode(conn, dn, "added")
    assert not site.chroot("1111111").exists()
    assert conn.search(done, "(sstProvisioningMode=added)", ldap3.BASE)
    stored = (state / "backup.cookie").read_text().strip()
    assert stored != f"rid=001,csn={context_csn}" and "csn=" in stored
