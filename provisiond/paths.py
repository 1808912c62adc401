"""Where provisiond finds its shipped data (templates, service kinds, hook programs, schema).

Each installation uses the data that came with its own code, so a venv never mixes its code
with another installation's kinds (and the tests exercise the files in the tree):

- a wheel (a venv, `pip install --user`, any prefix): `provisiond/_data/`, beside this module
  (setup.py copies it there at build time);
- a source checkout, plain or `pip install -e .`: the top-level directories `etc/kinds`,
  `templates`, `scripts` and `etc/schema`;
- the Debian package (which leaves `_data` out): /usr/share/provisiond and
  /usr/lib/provisiond/hooks.

The site's own kinds and templates in /etc/provisiond come first in every case.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DATA = Path(__file__).resolve().parent / "_data"
DEFAULT_CONFIG = Path("/etc/provisiond/provisiond.yaml")
LOCAL_DIR = Path("/etc/provisiond")
SHARE_DIR = Path("/usr/share/provisiond")
HOOKS_DIR = Path("/usr/lib/provisiond/hooks")


@dataclass(frozen=True)
class Shipped:
    """The directories of one installation's data."""

    kinds: Path
    templates: Path
    hooks: Path
    schema: Path


def _in_checkout() -> bool:
    return (SOURCE_ROOT / "templates").is_dir() and (SOURCE_ROOT / "setup.cfg").is_file()


def shipped() -> Shipped:
    if PACKAGE_DATA.is_dir():
        return Shipped(PACKAGE_DATA / "kinds", PACKAGE_DATA / "templates", PACKAGE_DATA / "hooks",
                       PACKAGE_DATA / "schema")
    if _in_checkout():
        return Shipped(SOURCE_ROOT / "etc" / "kinds", SOURCE_ROOT / "templates",
                       SOURCE_ROOT / "scripts", SOURCE_ROOT / "etc" / "schema")
    return Shipped(SHARE_DIR / "kinds", SHARE_DIR / "templates", HOOKS_DIR, SHARE_DIR / "schema")


def templates_dirs() -> tuple[Path, ...]:
    return (LOCAL_DIR / "templates", shipped().templates)


def kinds_dirs() -> tuple[Path, ...]:
    return (LOCAL_DIR / "kinds", shipped().kinds)


def hooks_dir() -> Path:
    return shipped().hooks


def schema_dir() -> Path:
    return shipped().schema
