"""The package as pip users get it (issue 9.1): an sdist built from a copy of the tree, a wheel
built from that sdist, installed into a fresh venv outside the checkout, and the installed
`provisiond check` and `once` run from elsewhere against a real slapd with the demo and the
backup-account kinds. Nothing from the checkout may be on the way: no PYTHONPATH, another cwd.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisiond.testing.slapd import Slapd
from tests.kinds.backup.conftest import stoney  # noqa: F401 - the fixture, for the backup-account kind
from tests.kinds.backup.support import Site, add_account, service
from tests.kinds.backup.support import mode_of as account_mode
from tests.support import REPO, add_item, connect, demo_service, mode_of, write_config

pytestmark = pytest.mark.slow

# What the tree copy leaves out: VCS data, build output, caches, the developers' venv.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                    ".*_cache", ".benchmarks", "demo-run", ".pybuild")
# (what paths.py calls it, the checkout's directory, the files shipped from it)
SHIPPED = (
    ("kinds", REPO / "etc" / "kinds", "**/*.yaml"),  # parts/ too
    ("templates", REPO / "templates", "**/*.j2"),
    ("hooks", REPO / "scripts", "*"),  # the files directly in scripts/; scripts/dev/ are tools
    ("schema", REPO / "etc" / "schema", "*"),
)
LOCATE = """
import json, provisiond
from provisiond import paths
print(json.dumps({"module": provisiond.__file__, "kinds": str(paths.kinds_dirs()[-1]),
                  "templates": str(paths.templates_dirs()[-1]), "hooks": str(paths.hooks_dir()),
                  "schema": str(paths.schema_dir())}))
"""


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that points Python at the checkout or the dev venv."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONUSERBASE")}
    return {**env, **extra}


def run(argv: list[str | Path], cwd: Path, timeout: float = 300,
        **env: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, env=clean_env(**env), text=True,
                          capture_output=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done


@dataclass(frozen=True)
class Installed:
    """A fresh venv with the wheel installed, and a working directory outside the checkout."""

    venv: Path
    wheel: Path
    elsewhere: Path

    def provisiond(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return run([self.venv / "bin" / "provisiond", *args], cwd=self.elsewhere)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    work = tmp_path_factory.mktemp("wheel")
    source, dist, venv = work / "source", work / "dist", work / "venv"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)  # builds write build/ and egg-info
    run([sys.executable, "-m", "venv", venv], cwd=work)
    python = venv / "bin" / "python"
    run([python, "-m", "pip", "install", "-q", "setuptools>=61"], cwd=work)
    run([python, "-c", "import sys; from setuptools import build_meta; "
                       "build_meta.build_sdist(sys.argv[1])", dist], cwd=source)
    (sdist,) = dist.glob("provisiond-*.tar.gz")
    # The wheel from the sdist, as pip does for users: proves the sdist is complete too.
    run([python, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, sdist], cwd=work)
    (wheel,) = dist.glob("provisiond-*.whl")
    run([python, "-m", "pip", "install", "-q", wheel], cwd=work)
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    return Installed(venv=venv, wheel=wheel, elsewhere=elsewhere)


def shipped_files(directory: Path, pattern: str) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.glob(pattern) if p.is_file()}


def assert_complete(found: dict[str, str], inside: Path) -> None:
    """Every shipped file is where the installed code looks, below `inside`; hooks executable."""
    assert Path(found["module"]).is_relative_to(inside), found
    for name, checkout, pattern in SHIPPED:
        directory = Path(found[name])
        assert directory.is_relative_to(inside), (name, directory)
        assert shipped_files(directory, "**/*") == shipped_files(checkout, pattern), name
    for hook in Path(found["hooks"]).iterdir():
        assert os.access(hook, os.X_OK), f"{hook} is not executable"


def test_the_wheel_carries_kinds_templates_hooks_and_schema(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        hooks = [i for i in wheel.infolist() if "/hooks/" in i.filename]
    assert hooks and all(i.external_attr >> 16 & 0o777 == 0o755 for i in hooks), \
        [(i.filename, oct(i.external_attr >> 16)) for i in hooks]
    found = json.loads(run([installed.venv / "bin" / "python", "-c", LOCATE],
                           cwd=installed.elsewhere).stdout)
    assert_complete(found, installed.venv)


def test_a_user_install_finds_its_data_too(installed: Installed, tmp_path: Path) -> None:
    """`pip install --user`: the base interpreter, a private user base (pip from the venv, which
    refuses --user itself; the base Python may have no pip and be externally managed)."""
    base = Path(sys._base_executable)  # type: ignore[attr-defined]
    user = tmp_path / "user"
    pip_home = next((installed.venv / "lib").glob("python3*/site-packages"))
    run([base, "-m", "pip", "install", "-q", "--user", "--no-deps", "--break-system-packages",
         "--no-warn-script-location", installed.wheel], cwd=tmp_path,
        PYTHONPATH=str(pip_home), PYTHONUSERBASE=str(user))
    found = json.loads(run([base, "-c", LOCATE], cwd=tmp_path, PYTHONUSERBASE=str(user)).stdout)
    assert_complete(found, user)


def test_installed_check_and_once_with_the_demo_kind(installed: Installed, slapd: Slapd,
                                                     tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    config = write_config(tmp_path / "cfg", slapd, demo_service(root))
    conn = connect(slapd)
    dn = add_item(conn, "alpha")

    checked = installed.provisiond("check", "--config", config).stdout
    assert f"hook demo-hook is executable ({installed.venv}/" in checked, checked
    installed.provisiond("--config", config, "once")
    assert mode_of(conn, dn) == "added"
    assert (root / "items" / "alpha.conf").is_file()
    assert "alpha" in (root / "index.conf").read_text()


def test_installed_check_and_once_with_the_backup_account_kind(
        installed: Installed, stoney: Slapd, tmp_path: Path) -> None:  # noqa: F811 - fixture
    if not os.access("/usr/bin/rsnapshot", os.X_OK):
        pytest.skip("Debian's rsnapshot is not installed (the kind validates with it)")
    site = Site(tmp_path / "site").create()
    config = write_config(tmp_path / "cfg", stoney, service(site))
    conn = connect(stoney)
    dn = add_account(conn, "1234567")

    checked = installed.provisiond("check", "--config", config).stdout
    for hook in ("backup-levels", "backup-chroot", "backup-quota"):
        assert f"hook {hook} is executable ({installed.venv}/" in checked, checked
    installed.provisiond("--config", config, "once")
    assert account_mode(conn, dn) == "added"
    assert site.home("1234567").is_dir()
    assert site.config("1234567").is_file() and site.schedule.is_file()
    assert site.setquota_calls()
