"""Taking secrets out of what `diagnose` bundles: text and parsed YAML.

Text is redacted line by line (known secrets anywhere, `key: value` lines whose key looks
secret, URI userinfo). That cannot see a secret in a flow mapping (`ldap: {bind_password: S}`),
so configuration files are redacted structurally: parsed, the value of every secret-looking key
replaced at any depth, every string redacted as text, and dumped again. The values found under
secret-looking keys are returned too, so the rest of the bundle (a loader error quoting one)
can be redacted of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from provisiond.process.logs import REDACTED

SECRET_KEY = re.compile(
    r"^(?P<lead>\s*(?:#\s*)?-?\s*[\"']?(?P<key>[A-Za-z0-9_.-]*(?:password|passwd|secret|token|"
    r"credential|passphrase|api_?key)[A-Za-z0-9_.-]*)[\"']?\s*:\s*)(?P<value>\S.*)$",
    re.IGNORECASE,
)
URI_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)
SECRET_NAME = re.compile(r"pass|secret|token|credential|api_?key|private_?key", re.IGNORECASE)
PATH_SUFFIXES = ("_file", "_path", "_dir")  # names of files holding secrets: paths, kept


class Redactor:
    """Removes secrets from text: the configured secrets themselves wherever they appear,
    values of secret-looking keys (not `*_file`/`*_path`, which are paths) and URI userinfo."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def secrets_only(self, text: str) -> str:
        """`text` with the known secrets replaced (nothing else touched)."""
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def __call__(self, text: str) -> str:
        text = self.secrets_only(text)
        lines = []
        for line in text.splitlines(keepends=True):
            match = SECRET_KEY.match(line.rstrip("\n"))
            key = match.group("key").lower() if match else ""
            if match and not key.endswith(PATH_SUFFIXES):
                line = f"{match.group('lead')}{REDACTED}" + ("\n" if line.endswith("\n") else "")
            lines.append(URI_USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", line))
        return "".join(lines)


def secret_key(key: object) -> bool:
    """Whether a mapping key names a secret (`*_file`, `*_path`, `*_dir` name paths: kept)."""
    name = str(key).lower()
    return bool(SECRET_NAME.search(name)) and not name.endswith(PATH_SUFFIXES)


def _scalars(value: Any, seen: set[int]) -> Iterable[str]:
    """Every scalar below `value` as text (shared and recursive nodes visited once)."""
    if isinstance(value, dict | list | set | tuple):
        if id(value) in seen:
            return
        seen.add(id(value))
        items = value.items() if isinstance(value, dict) else ((None, v) for v in value)
        for key, item in items:
            if key is not None:
                yield from _scalars(key, seen)
            yield from _scalars(item, seen)
    elif value is not None and not isinstance(value, bool):
        yield str(value)


def inline_secrets(data: Any) -> list[str]:
    """The values under secret-looking keys, at any depth, of parsed YAML."""
    found: list[str] = []
    seen: set[int] = set()
    below_secret: set[int] = set()
    stack = [data]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, dict):
            for key, value in node.items():
                if secret_key(key):
                    found.extend(_scalars(value, below_secret))
                stack.append(value)
        elif isinstance(node, list | set | tuple):
            stack.extend(node)
    return [s for s in found if s]


def scrub(data: Any, redact: Callable[[str], str]) -> Any:
    """A copy of parsed YAML with the values of secret-looking keys replaced and every string
    passed through `redact`. Shared (aliased) and recursive nodes stay shared, so an alias bomb
    costs what it cost to parse."""
    copies: dict[int, Any] = {}

    def copy(node: Any) -> Any:
        if isinstance(node, str):
            return redact(node)
        if not isinstance(node, dict | list | set | tuple):
            return node
        if id(node) in copies:
            return copies[id(node)]
        if isinstance(node, dict):
            result: dict[Any, Any] = {}
            copies[id(node)] = result
            for key, value in node.items():
                hidden = secret_key(key) and value not in (None, "")
                result[copy(key)] = REDACTED if hidden else copy(value)
            return result
        if isinstance(node, list):
            items: list[Any] = []
            copies[id(node)] = items
            items.extend(copy(item) for item in node)
            return items
        return type(node)(copy(item) for item in node)  # set/tuple (keys): not recursive

    return copy(data)
