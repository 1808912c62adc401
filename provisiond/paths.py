"""Where provisiond finds its shipped data (templates, service kinds, hook scripts, schema).

Installed from the Debian package the data lives under /usr/share/provisiond and the hooks
under /usr/lib/provisiond/hooks; run from a source checkout it lives beside the package. The
checkout wins when present so that the tests and the demo exercise the files in the tree.
"""

from __future__ import annotations

from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = Path("/etc/provisiond/provisiond.yaml")
SHARE_DIR = Path("/usr/share/provisiond")
HOOKS_DIR = Path("/usr/lib/provisiond/hooks")


def _in_checkout() -> bool:
    return (SOURCE_ROOT / "templates").is_dir() and (SOURCE_ROOT / "setup.cfg").is_file()


def templates_dirs() -> tuple[Path, ...]:
    local = Path("/etc/provisiond/templates")
    shipped = SOURCE_ROOT / "templates" if _in_checkout() else SHARE_DIR / "templates"
    return (local, shipped)


def kinds_dirs() -> tuple[Path, ...]:
    local = Path("/etc/provisiond/kinds")
    shipped = SOURCE_ROOT / "etc" / "kinds" if _in_checkout() else SHARE_DIR / "kinds"
    return (local, shipped)


def hooks_dir() -> Path:
    return SOURCE_ROOT / "scripts" if _in_checkout() else HOOKS_DIR
