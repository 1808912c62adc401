"""Jinja rendering: file templates, and the small templates inside paths and hook argv.

StrictUndefined everywhere: a misspelt variable must fail the step, not render an empty
string into a path or a config line. Values reaching a template have already been validated
(`provisiond.model.values`), so templates need no escaping of their own; the filters here only
compute (sizes, shards, stagger offsets), they never sanitise.
"""

from __future__ import annotations

import hashlib
import re
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

BLOCK_SIZE = 1024


class RenderError(Exception):
    """A template failed to render (undefined name, error raised inside the template)."""


def shard(uid: Any) -> str:
    """stoney cloud's home layout: uid 1234567 -> '7/567/234/1234567'.

    Last digit / last three digits / digits 2-4 of the last six / the uid itself.
    """
    text = str(uid)
    if not re.fullmatch(r"[0-9]{6,}", text):  # ASCII digits only: "١٢٣٤٥٦".isdigit()
        raise RenderError(f"shard needs a number of at least six digits, not {text!r}")
    return f"{text[-1]}/{text[-3:]}/{text[-6:-3]}/{text}"


def kib_blocks(size: Any) -> int:
    """Bytes to 1 KiB quota blocks, rounded up (setquota counts in 1 KiB blocks)."""
    return -(-int(size) // BLOCK_SIZE)


def stagger(key: Any, modulo: int) -> int:
    """A stable offset in [0, modulo) derived from `key`, so schedules do not all fire at once."""
    digest = hashlib.sha256(str(key).encode()).digest()
    return int.from_bytes(digest[:8], "big") % int(modulo)


def percent(size: Any, pct: Any) -> int:
    return int(int(size) * int(pct) // 100)


FILTERS = {"shard": shard, "kib_blocks": kib_blocks, "stagger": stagger, "percent": percent}


def make_environment(template_dirs: Sequence[Path]) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(d) for d in template_dirs]),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(FILTERS)
    return env


def check_string(env: jinja2.Environment, source: str) -> None:
    """Compile an inline template (raises jinja2.TemplateSyntaxError)."""
    env.from_string(source)


def check_template(env: jinja2.Environment, name: str) -> None:
    """Load and compile a template file (raises jinja2.TemplateNotFound / TemplateSyntaxError)."""
    env.get_template(name)


_INLINE: weakref.WeakKeyDictionary[jinja2.Environment, dict[str, jinja2.Template]] = (
    weakref.WeakKeyDictionary()
)


def _compiled(env: jinja2.Environment, source: str) -> jinja2.Template:
    """Inline templates (paths, argv items) are few and fixed: compile each once per
    environment instead of once per entry and step."""
    cache = _INLINE.setdefault(env, {})
    template = cache.get(source)
    if template is None:
        template = cache[source] = env.from_string(source)
    return template


def render_string(env: jinja2.Environment, source: str, context: Mapping[str, Any]) -> str:
    if "{" not in source:  # no expression, statement or comment: Jinja would give it back as
        return source      # is (no line statements, trailing newline kept), a render later
    try:
        return _compiled(env, source).render(context)
    except jinja2.TemplateError as exc:
        raise RenderError(f"{source!r}: {exc}") from exc


def render_template(env: jinja2.Environment, name: str, context: Mapping[str, Any]) -> str:
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateError as exc:
        raise RenderError(f"template {name}: {exc}") from exc
