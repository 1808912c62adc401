"""`provisiond test-account`: the four LDIFs drive one account through its whole life, loaded
with the real ldapadd and ldapmodify against the stoney compatibility schema."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest

from provisiond.cli import main
from provisiond.kinds.backup.test_account import account_ldifs
from provisiond.testing.slapd import Slapd
from tests.kinds.backup.support import (
    ACCOUNTS,
    RETURN,
    Site,
    config_for,
    connect,
    ids_for,
    read,
    running,
    wait_mode,
)
from tests.support import wait_for

UID = "1234567"


def ldapmodify(slapd: Slapd, path: Path, add: bool = False) -> None:
    argv = ["ldapmodify", "-x", "-H", slapd.uri, "-D", slapd.root_dn, "-w",
            slapd.root_password, "-f", str(path)]
    result = subprocess.run(argv + (["-a"] if add else []), capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr


def test_four_ldifs_drive_an_account_through_its_life(
    stoney: Slapd, site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if shutil.which("ldapmodify") is None:
        pytest.skip("needs ldapmodify (Debian package ldap-utils)")
    uid_number, gid_number = ids_for(UID)
    out = tmp_path / "ldif"
    assert main(["test-account", "--uid", UID, "--output-dir", str(out),
                 "--uid-number", str(uid_number), "--gid-number", str(gid_number),
                 "--givenname", "Zoë", "--surname", "Muster"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"01_add_{UID}.ldif", f"02_modify_{UID}.ldif", f"03_delete_{UID}.ldif",
                     f"04_remove_{UID}.ldif"]
    assert capsys.readouterr().out.split() == [str(out / name) for name in names]

    conn = connect(stoney)
    dn = f"uid={UID},{ACCOUNTS}"
    with running(config_for(tmp_path / "cfg", stoney, site)):
        ldapmodify(stoney, out / names[0], add=True)
        entry = wait_mode(conn, dn, "added")
        assert entry["homeDirectory"] == f"/var/backup/7/567/234/{UID}"
        assert entry["cn"] == "Zoë Muster" and "gecos" not in entry
        assert site.config(UID).exists() and site.home(UID).is_dir()
        quota = site.setquota_calls()[-1]
        assert quota == f"-u {uid_number} 1048576 1048576 0 0 /"

        ldapmodify(stoney, out / names[1])
        wait_mode(conn, dn, "modified")
        text = site.config(UID).read_text()
        assert "retain\thourly\t24\n" in text and "retain\tdaily\t14\n" in text
        assert site.setquota_calls()[-1] == f"-u {uid_number} 2097152 2097152 0 0 /"

        ldapmodify(stoney, out / names[2])
        entry = wait_mode(conn, dn, "deleted")
        assert entry[RETURN] == "0" and entry["sstIsActive"] == "FALSE"
        assert not site.config(UID).exists() and not site.chroot(UID).exists()
        assert list(site.archive_dir.glob(f"{UID}-*"))

        ldapmodify(stoney, out / names[3])
        wait_for(lambda: read(conn, dn) == {}, what="entry removed")


def test_ldif_values_are_encoded_safely() -> None:
    files = account_ldifs("7654321", givenname=":colon", surname="Müller", reseller="<r")
    add = files["01_add_7654321.ldif"]
    encoded = base64.b64encode(":colon Müller".encode()).decode()
    assert f"sstBelongsToResellerUID:: {base64.b64encode(b'<r').decode()}\n" in add
    assert f"cn:: {encoded}\n" in add
    assert "uidNumber: 7654321\n" in add and "gidNumber: 7654321\n" in add
    assert "sstBelongsToCustomerUID: 4000001\n" in add
    assert files["04_remove_7654321.ldif"].endswith("changetype: delete\n")
    modify = files["03_delete_7654321.ldif"]
    assert "replace: sstIsActive\nsstIsActive: FALSE\n-\n" in modify


@pytest.mark.parametrize("uid", ["12345", "0123456", "12345678901", "1234567\n", "abc",
                                 "../1234567"])
def test_bad_uid_is_refused(uid: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        account_ldifs(uid)
    assert main(["test-account", "--uid", uid, "--output-dir", str(tmp_path / "x")]) == 64
    assert not (tmp_path / "x").exists()
