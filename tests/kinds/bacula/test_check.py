"""scripts/bacula-sd-check as the render's `validate:` runs it: what `bacula-sd -t` does not
check (devices, Drive Index, names, quoting, the password file) refused with the reason on
the last line, and the real `bacula-sd -t` run on every file that gets that far, its
message passed on without the Director's password."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from tests.kinds.bacula.support import (
    BACULA_SD,
    CHECK,
    PASSWORD,
    Site,
    load_script,
    render,
    require_bacula_sd,
    run_check,
)

check = load_script(CHECK)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    require_bacula_sd()
    return Site(tmp_path / "site").create()


def standard(site: Site, file_devices: int = 2) -> str:
    vars_ = site.vars(bacula_file_devices=file_devices)
    return render(vars_, [site.library("lib1", 2, vars_)], [site.disk("repo1", vars_)])


def refused(site: Site, text: str) -> list[str]:
    site.config.write_text(text)
    result = run_check(site.config, site.password_file)
    assert result.returncode == 65, result.stdout
    assert PASSWORD not in result.stdout
    return result.stdout.strip().splitlines()


def test_a_rendered_file_passes(site: Site) -> None:
    site.config.write_text(standard(site))
    result = run_check(site.config, site.password_file)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_a_missing_file_device_directory_is_refused(site: Site) -> None:
    text = standard(site)
    (site.base / "disks" / "repo1").rmdir()
    lines = refused(site, text)
    assert lines[-1].endswith(f"Archive Device of 'repo1:disk-1': {site.base}/disks/repo1: "
                              "No such file or directory")


def test_a_tape_drive_that_is_no_character_device_is_refused(site: Site) -> None:
    text = standard(site)
    drive = site.base / "dev" / "nst-lib1-1"
    drive.unlink()
    drive.write_text("")
    assert refused(site, text)[-1].endswith(
        f"Archive Device of 'lib1:drive-1': {drive} is not a character device")


def test_a_missing_changer_is_refused(site: Site) -> None:
    text = standard(site)
    (site.base / "dev" / "sg-lib1").unlink()
    assert any(line.endswith(f"Changer Device of 'lib1': {site.base}/dev/sg-lib1: No such "
                             "file or directory") for line in refused(site, text))


def test_a_drive_index_twice_in_one_autochanger_is_refused(site: Site) -> None:
    """bacula-sd -t takes it (the notes); two drives of one changer would then be one."""
    text = standard(site).replace("Drive Index = 1\n  Removable Media = yes",
                                  "Drive Index = 0\n  Removable Media = yes")
    site.config.write_text(text)
    direct = subprocess.run([str(BACULA_SD), "-t", "-c", str(site.config)], check=False)
    assert direct.returncode == 0
    assert refused(site, text)[-1].endswith(
        "Drive Index 0 of Device 'lib1:drive-1' is that of 'lib1:drive-0' in Autochanger 'lib1'")


@pytest.mark.parametrize(("name", "reason"), [
    ("x" * 128, "1 to 127 characters, no '/'"),
    ("lib/1", "1 to 127 characters, no '/'"),
])
def test_bad_names_are_refused(site: Site, name: str, reason: str) -> None:
    text = standard(site).replace('"lib1"', f'"{name}"')
    assert any(line.endswith(f"name {name!r}: {reason}") for line in refused(site, text))


def test_a_name_used_twice_is_refused(site: Site) -> None:
    text = standard(site).replace('Name = "repo1:disk"', 'Name = "lib1"')
    assert any("name 'lib1' of autochanger already names a autochanger" in line
               for line in refused(site, text))


@pytest.mark.parametrize(("edit", "problem"), [
    (('Media Type = "LTO-8"', "Media Type = LTO-8"), "unquoted value 'LTO-8'"),
    (('Media Type = "LTO-8"', 'Media Type = "LTO\\x-8"'), "escape \\'x' in a quoted value"),
    (('Media Type = "LTO-8"', 'Media Type = "LTO\x018"'), "control character '\\x01'"),
    (('Media Type = "LTO-8"', 'Media Type = "LTO-8'), "control character '\\n'"),
    (('Media Type = "LTO-8"', 'Media Type = "LTO-8"\n  @/etc/passwd'), "include @/etc/passwd"),
    (('  Drive Index = 0\n', '  Drive Index = 0\n  Bogus { = 1\n'), "a brace where no"),
    (('  Changer Command = "/etc/bacula/scripts/mtx-changer %c %o %S %a %d"',
      '  Changer Command = "/etc/bacula/scripts/mtx-changer %c %o"'),
     "Changer Command of 'lib1' lacks %S %a %d"),
    (('Device Type = Tape', 'Device Type = Fifo'), "Device Type File or Tape"),
    (('Drive Index = 1\n', ''), "Device 'lib1:drive-1' has no Drive Index"),
])
def test_what_bacula_sd_t_does_not_check_is_refused(
        site: Site, edit: tuple[str, str], problem: str) -> None:
    old, new = edit
    text = standard(site)
    assert old in text
    assert any(problem in line for line in refused(site, text.replace(old, new, 1)))


def test_a_password_in_the_file_itself_is_refused(site: Site) -> None:
    text = standard(site).replace('  Name = "test-dir"\n', '  Name = "test-dir"\n'
                                  '  Password = "inline"\n')
    assert any("a Password in the file itself" in line for line in refused(site, text))


@pytest.mark.parametrize(("mode", "problem"), [
    (0o644, "readable by others (chmod 0640, group bacula)"),
    (0o620, "writable by group or others (chmod 0640)"),
])
def test_an_open_password_file_is_refused(site: Site, mode: int, problem: str) -> None:
    site.password_file.chmod(mode)
    assert any(line.endswith(problem) for line in refused(site, standard(site)))


@pytest.mark.parametrize("content", [
    f'Password = "{PASSWORD}"\n',  # unescaped quote
    'Password = "a"\nPassword = "b"\n',
    'Password = "a"\n}\nDevice {\n',
    "Password = unquoted\n",
    'Password = "tab\there"\n',
])
def test_a_bad_password_file_is_refused_without_showing_it(site: Site, content: str) -> None:
    site.password_file.write_text(content)
    lines = refused(site, standard(site))
    assert any("must hold one line Password = " in line for line in lines)
    assert "unquoted" not in "\n".join(lines) and "here" not in "\n".join(lines)


def test_a_missing_password_file_is_refused(site: Site) -> None:
    site.password_file.unlink()
    assert any(line.endswith(f"password file {site.password_file}: No such file or directory")
               for line in refused(site, standard(site)))


def test_what_bacula_sd_t_refuses_is_passed_on_in_one_last_line(site: Site) -> None:
    text = standard(site).replace("  Random Access = no\n", "  Random Access = no\n"
                                  "  Bogus Keyword = yes\n", 1)
    lines = refused(site, text)
    assert lines[-1].startswith(f"bacula-sd -t rejected {site.config} (exit 1): Config error: ")
    assert "BogusKeyword" in lines[-1] or "Bogus" in lines[-1]
    assert "ERROR TERMINATION" not in lines[-1]


def test_bacula_sds_output_is_redacted() -> None:
    """A real failure inside the password file: bacula-sd echoes the line (the notes: it
    prints the failing line), with the secret in clear and as the MD5 it keys with."""
    require_bacula_sd()
    output = ("Config error: Attempt to redefine \"Password\" from "
              f"\"{hashlib.md5(PASSWORD.encode()).hexdigest()}\" to \"{PASSWORD}\" referenced "
              "on line 1 : Password = \"pa\\\"ss\\\\word-Secret42\"\n\n"
              "            : line 1, col 21 of file /etc/sd.password\n"
              "Password = \"pa\\\"ss\\\\word-Secret42\"\n")
    cleaned = check.redact(output, PASSWORD, "/etc/sd.password")
    assert "Secret42" not in cleaned and hashlib.md5(PASSWORD.encode()).hexdigest() not in cleaned
    assert "[line of the password file not shown]" in cleaned
    assert "[redacted]" in cleaned


def test_real_bacula_output_for_a_secret_line_is_redacted(site: Site) -> None:
    """The same from the real bacula-sd: a Password given twice (ours, and one before the
    include) makes it print the password file's line."""
    site.config.write_text(standard(site).replace(
        '  Name = "test-dir"\n', '  Name = "test-dir"\n  Password = "first"\n'))
    raw = subprocess.run([str(BACULA_SD), "-t", "-c", str(site.config)], capture_output=True,
                         text=True, check=False).stdout
    assert "Secret42" in raw  # what would leak
    cleaned = check.redact(raw, PASSWORD, str(site.password_file))
    assert "Secret42" not in cleaned
    assert hashlib.md5(PASSWORD.encode()).hexdigest() not in cleaned


def test_a_missing_bacula_sd_exits_69(site: Site) -> None:
    site.config.write_text(standard(site))
    result = run_check(site.config, site.password_file, bacula_sd=site.base / "no-bacula-sd")
    assert result.returncode == 69
    assert "cannot run" in result.stdout


def test_a_relative_path_is_made_absolute(site: Site) -> None:
    """bacula-sd takes a relative -c under /etc/bacula: the check passes it absolute."""
    site.config.write_text(standard(site))
    result = subprocess.run([str(CHECK), f"--password-file={site.password_file}",
                             site.config.name], cwd=site.config.parent, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_usage_errors_exit_64() -> None:
    result = subprocess.run([str(CHECK)], capture_output=True, text=True, check=False)
    assert result.returncode == 64
