"""Helpers of the iSCSI tests: the hook loaded as a module, rendered-file text, running it."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from tests.kinds.iscsi.tgt import TGTADM, Tgtd

REPO = Path(__file__).resolve().parents[3]
HOOK = REPO / "scripts" / "iscsi-tgt-apply"
CHECK_DEVICE = REPO / "scripts" / "iscsi-tgt-check-device"
IQN = "iqn.2026-12.org.example"
ALLOWED = f"{IQN}:bsd01"
OTHER = f"{IQN}:intruder"


def load_hook() -> ModuleType:
    """scripts/iscsi-tgt-apply as a module (it has no .py suffix: the loader is named)."""
    loader = importlib.machinery.SourceFileLoader("iscsi_tgt_apply", str(HOOK))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module  # dataclasses look the module up
    loader.exec_module(module)
    return module


def target_block(name: str, *, initiators: tuple[str, ...] = (ALLOWED,),
                 chap: tuple[str, str] | None = None, luns: dict[int, Path] | None = None,
                 portals: tuple[str, ...] = ()) -> str:
    lines = [f"target {IQN}:{name}"]
    lines += [f"portal {p}" for p in portals]
    lines += [f"initiator {i}" for i in initiators]
    if chap:
        lines.append(f"chap {chap[0]} {chap[1]}")
    lines += [f"lun {n} {path}" for n, path in sorted((luns or {}).items())]
    return "\n".join([*lines, "end", ""])


def backing(directory: Path, name: str, size: int = 8 << 20) -> Path:
    """A sparse file standing in for a disk repository's block device."""
    path = directory / f"{name}.img"
    with path.open("wb") as f:
        f.truncate(size)
    return path


def apply(tgtd: Tgtd, config: Path, *blocks: str) -> subprocess.CompletedProcess[str]:
    """Write the targets file and run the real hook on it, as on_change does."""
    config.write_text("# provisiond test\n" + "".join(blocks))
    config.chmod(0o600)
    return subprocess.run([str(HOOK), "apply", str(config), TGTADM, tgtd.socket],
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, capture_output=True,
                          text=True, timeout=300, check=False)
