"""`provisiond diagnose`: a complete bundle, secrets redacted, never the secret file."""

from __future__ import annotations

import json
import stat
import tarfile
from pathlib import Path

import pytest
import yaml

from provisiond.config import load_config
from provisiond.core.engine import Engine
from provisiond.operate import diagnose as operate_diagnose
from provisiond.operate.redaction import Redactor, inline_secrets, scrub
from tests.operate.conftest import Site
from tests.support import add_item, run_cli


def members(bundle: Path) -> dict[str, str]:
    with tarfile.open(bundle, "r:gz") as tar:
        found = {}
        for member in tar.getmembers():
            handle = tar.extractfile(member)
            assert handle is not None
            found[member.name.split("/", 1)[1]] = handle.read().decode()
    return found


def test_bundle_has_everything_but_secrets(site: Site, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    secret = site.slapd.root_password
    add_item(site.conn, "bad", description="tab\there")
    assert Engine(load_config(site.config)).once() == 1
    # a secret pasted inline somewhere (an operator's mistake) and a URI with credentials
    text = site.config.read_text() + (
        f"# old: bind_password: {secret}\n# uri: ldap://admin:hunter2@ldap.example.org/\n")
    site.config.write_text(text)
    services_d = site.directory / "services.d"
    services_d.mkdir()
    (services_d / "extra.yaml").write_text("{}\n# api_token: abc123\n")
    syslog = tmp_path / "syslog"
    syslog.write_text(
        "Nov 22 08:00:00 host cron[1]: unrelated\n"
        f"Nov 22 08:00:01 host provisiond[42]: event=failed service=demo msg=\"{secret}\"\n"
        "Nov 22 08:00:02 host provisiond[42]: event=added service=demo\n")
    monkeypatch.setattr(operate_diagnose, "SYSLOG_FILES", (str(syslog),))
    monkeypatch.setattr(operate_diagnose.shutil, "which", lambda name: None)  # no journalctl

    bundle = tmp_path / "out" / "diag.tar.gz"
    bundle.parent.mkdir()
    result = run_cli("--config", str(site.config), "diagnose", "-o", str(bundle))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600

    # run in-process too, where the monkeypatched syslog file applies
    data_bytes, names = operate_diagnose.build(str(site.config))
    bundle.write_bytes(data_bytes)
    found = members(bundle)
    assert {"version.txt", "config/provisiond.yaml", "config/services.d/extra.yaml",
            "status.json", "check.txt", "templates.txt", "hooks.txt", "kinds.txt",
            "state.txt", "syslog.txt", "README.txt"} <= set(found)
    for name, content in found.items():
        assert secret not in content, name
        assert "hunter2" not in content and "abc123" not in content, name
    assert not any("bind.secret" in name for name in found)
    config_text = found["config/provisiond.yaml"]
    assert "bind_password_file:" in config_text  # a path, kept
    assert "# old:" not in config_text and "ldap.example.org" not in config_text  # comments
    assert "provisiond 0.1.0" in found["version.txt"]
    status = json.loads(found["status.json"])
    assert status["summary"]["failed"] == 1
    assert "ok    bind to" in found["check.txt"]
    assert "demo/item.conf.j2" in found["templates.txt"]
    assert "demo-hook" in found["hooks.txt"]
    assert "demo.cookie" in found["state.txt"]
    assert "event=added" in found["syslog.txt"] and "unrelated" not in found["syslog.txt"]
    assert 'msg="***"' in found["syslog.txt"]


def test_secret_file_is_left_out_of_listings(site: Site, tmp_path: Path) -> None:
    config = load_config(site.config)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    secret_file = Path(config.ldap.bind_password_file or "")
    (hooks / "bind.secret").symlink_to(secret_file)
    text = operate_diagnose.listing([hooks], [secret_file])
    assert "left out" in text
    assert operate_diagnose._sha256(secret_file) not in text


def test_bundle_with_a_broken_configuration(tmp_path: Path) -> None:
    config = tmp_path / "provisiond.yaml"
    config.write_text("ldap: {uri: ldap://127.0.0.1:1}\nbogus: 1\n")
    bundle = tmp_path / "diag.tar.gz"
    result = run_cli("--config", str(config), "diagnose", "-o", str(bundle))
    assert result.returncode == 0, result.stderr
    found = members(bundle)
    assert "bogus: unknown key" in found["config-error.txt"]
    assert "status.json" not in found and "syslog.txt" in found


def test_unwritable_output(tmp_path: Path) -> None:
    config = tmp_path / "provisiond.yaml"
    config.write_text("ldap: {uri: ldap://127.0.0.1:1}\n")
    result = run_cli("--config", str(config), "diagnose", "-o",
                     str(tmp_path / "missing" / "x.tar.gz"))
    assert result.returncode == 73


def test_redactor() -> None:
    redact = Redactor(["s3cret"])
    assert redact("password: abc\n") == "password: ***\n"
    assert redact("# api_key: abc\n") == "# api_key: ***\n"
    assert redact("  bind_password_file: /etc/x\n") == "  bind_password_file: /etc/x\n"
    assert redact("token=s3cret and more") == "token=*** and more"
    assert redact("uri: ldaps://u:p@h:636\n") == "uri: ldaps://***@h:636\n"


# -- inline secrets in configurations the daemon cannot load (issue 8, item 9) ----------------

INLINE = "S3cr3t-inline-9f2c"


def bundle_bytes(config: Path) -> tuple[bytes, dict[str, str]]:
    """The bundle's whole uncompressed tar stream (headers included) and its members."""
    import gzip
    import io

    data, _names = operate_diagnose.build(str(config))
    raw = gzip.decompress(data)
    found = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            handle = tar.extractfile(member)
            assert handle is not None
            found[member.name.split("/", 1)[1]] = handle.read().decode()
    return raw, found


def assert_never_bundled(config: Path, secret: str = INLINE) -> dict[str, str]:
    raw, found = bundle_bytes(config)
    assert secret.encode() not in raw
    for name, content in found.items():
        assert secret not in content, name
    return found


@pytest.mark.parametrize("text", [
    # flow style, as in the issue: the config does not load (bind_password is not an option)
    f'ldap: {{uri: "ldap://127.0.0.1:1", bind_password: "{INLINE}"}}\n',
    f'ldap: {{uri: "ldap://127.0.0.1:1", "bind_password": {INLINE}, timeout: 5}}\n',
    # block style
    f"ldap:\n  uri: ldap://127.0.0.1:1\n  bind_password: {INLINE}\n",
    # nested: in a mapping under a secret-looking key, in a list, in a URI's userinfo
    "ldap:\n  uri: ldap://127.0.0.1:1\n"
    f"services:\n  demo:\n    vars:\n      db: {{credentials: {{user: u, pass: {INLINE}}}}}\n"
    f"      list: [{{api_token: {INLINE}}}]\n"
    f"      remote: \"ldaps://admin:{INLINE}@ldap.example.org/\"\n",
], ids=["flow", "flow-quoted-key", "block", "nested"])
def test_inline_secret_of_an_unloadable_config_is_redacted(tmp_path: Path, text: str) -> None:
    config = tmp_path / "provisiond.yaml"
    config.write_text(text)
    found = assert_never_bundled(config)
    assert "config-error.txt" in found  # the configuration did not load
    shown = found["config/provisiond.yaml"]
    assert "ldap://127.0.0.1:1" in shown  # the rest stays readable
    assert "***" in shown


def test_inline_secret_in_services_d(tmp_path: Path) -> None:
    config = tmp_path / "provisiond.yaml"
    config.write_text("ldap: {uri: ldap://127.0.0.1:1}\n")
    (tmp_path / "services.d").mkdir()
    (tmp_path / "services.d" / "x.yaml").write_text(
        f"x: {{kind: demo, vars: {{ldap_password: {INLINE}}}}}\n")
    found = assert_never_bundled(config)
    assert "ldap_password: '***'" in found["config/services.d/x.yaml"]


def test_secret_echoed_by_a_config_error_is_redacted(tmp_path: Path) -> None:
    # the loader's message quotes the bad value (a mapping holding the secret)
    config = tmp_path / "provisiond.yaml"
    config.write_text(f"ldap: {{uri: ldap://h, bind_password_file: {{secret: {INLINE}}}}}\n")
    found = assert_never_bundled(config)
    assert "bind_password_file: must be a non-empty string" in found["config-error.txt"]


@pytest.mark.parametrize("name", ["provisiond.yaml", "services.d/x.yaml"])
def test_unparseable_config_is_left_out(tmp_path: Path, name: str) -> None:
    config = tmp_path / "provisiond.yaml"
    config.write_text("ldap: {uri: ldap://127.0.0.1:1}\n")
    broken = tmp_path / name
    broken.parent.mkdir(exist_ok=True)
    broken.write_text(f"ldap: {{uri: ldap://h, bind_password: \"{INLINE}\"\n  oops: [\n")
    found = assert_never_bundled(config)
    assert f"config/{name}" not in found
    why = found[f"config/{name}.left-out.txt"]
    assert "not valid YAML" in why and "line " in why


def test_scrub_keeps_aliases_shared() -> None:
    # a recursive alias and an alias bomb neither loop nor blow up
    text = "a: &x [*x, {password: zz}]\nb: *x\nc: &c [z, z, z, z]\n" + "".join(
        f"d{i}: &d{i} [{', '.join([f'*d{i - 1}' if i else '*c'] * 9)}]\n" for i in range(9))
    data = yaml.safe_load(text)
    assert inline_secrets(data) == ["zz"]
    dumped = yaml.safe_dump(scrub(data, Redactor([])))
    assert "zz" not in dumped and len(dumped) < 10_000
