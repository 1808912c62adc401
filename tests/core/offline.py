"""A loaded configuration for unit tests of the engine core that never reach a directory: the
LDAP URI points at a closed port, so anything that would connect fails at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from provisiond.config import load_config
from provisiond.model.settings import Config

UNREACHABLE = "ldap://127.0.0.1:1"


def offline_config(tmp_path: Path, services: dict[str, Any], **top: Any) -> Config:
    tmp_path.mkdir(parents=True, exist_ok=True)
    secret = tmp_path / "bind.secret"
    secret.write_text("pw\n")
    secret.chmod(0o600)
    data: dict[str, Any] = {
        "ldap": {"uri": UNREACHABLE, "bind_dn": "cn=provisiond,dc=example,dc=org",
                 "bind_password_file": str(secret), "timeout": 1},
        "state_dir": str(tmp_path / "state"),
        "services": services,
        **top,
    }
    path = tmp_path / "provisiond.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path)
