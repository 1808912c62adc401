"""Reading the files a configuration is made of: YAML documents and Jinja templates.

Each must fail at load with a `ConfigError`, never with a traceback or later: a file that is
not UTF-8, a YAML "billion laughs" whose aliases expand to millions of nodes (it took 21 s
and 200 MB before failing), a document nested deeper than the parser's recursion allows, a
template (or a template it includes) that cannot be decoded or compiled.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2 import nodes

from provisiond.config.schema import ConfigError

MAX_BYTES = 1 << 20  # a configuration file is a few KiB; 1 MiB leaves room and bounds work
# Nodes of the document with every alias expanded: real configurations have hundreds.
MAX_NODES = 100_000
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _decode(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ValueError(f"{what} is not UTF-8 text: byte 0x{data[exc.start]:02x} on line "
                         f"{line}") from None


def read_yaml(path: Path) -> Any:
    """The document in `path` (safe types only), or a ConfigError naming the file."""
    file = str(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(file, "", f"cannot read: {exc.strerror}") from exc
    if len(data) > MAX_BYTES:
        raise ConfigError(file, "", f"larger than {MAX_BYTES // 1024} KiB; not a configuration")
    try:
        text = _decode(data, "the file")
    except ValueError as exc:
        raise ConfigError(file, "", str(exc)) from None
    loader = _LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _bound(node, file)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(file, "", f"invalid YAML: {where}{problem}") from exc
    except RecursionError:
        raise ConfigError(file, "", "invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()


def _bound(root: yaml.Node, file: str) -> None:
    """Count the nodes with aliases expanded (each distinct node once, so a billion laughs
    costs a few dozen steps) and refuse a document that would be larger than MAX_NODES, or
    that contains itself."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            if known < 0:
                raise ConfigError(file, "", "invalid YAML: an alias refers to a node that "
                                  "contains it (a recursive structure)")
            return known
        sizes[id(node)] = -1
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(key) + size(value) for key, value in node.value)
        if total > MAX_NODES:
            raise ConfigError(file, "", f"invalid YAML: more than {MAX_NODES} values with "
                              "aliases expanded (anchors and aliases repeat parts; this many "
                              "is not a configuration)")
        sizes[id(node)] = total
        return total

    size(root)


def check_template(env: jinja2.Environment, name: str) -> None:
    """Load and compile template `name` and every template it names literally in extends,
    include or import (ValueError: not found, not UTF-8, syntax error); an include marked
    `ignore missing` may be missing."""
    seen: set[str] = set()
    pending = [(name, False)]
    while pending:
        current, may_be_missing = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            source = _source(env, current)
        except jinja2.TemplateNotFound:
            if may_be_missing:
                continue
            raise ValueError(f"template {current!r} not found"
                             + (f" (referenced from {name})" if current != name else "")
                             ) from None
        try:
            tree = env.parse(source, current)
            env.get_template(current)
        except jinja2.TemplateSyntaxError as exc:
            raise ValueError(f"{exc.filename or current}:{exc.lineno}: {exc.message}") from None
        pending += list(_references(tree))


def _source(env: jinja2.Environment, name: str) -> str:
    assert env.loader is not None
    try:
        return env.loader.get_source(env, name)[0]
    except UnicodeDecodeError:
        pass
    # the loader decoded it: find the file to say where the bad byte is
    for directory in getattr(env.loader, "searchpath", ()):
        candidate = Path(directory) / name
        if candidate.is_file():
            _decode(candidate.read_bytes(), f"template {candidate}")
    raise ValueError(f"template {name!r} is not UTF-8 text")


def _references(tree: nodes.Template) -> Iterator[tuple[str, bool]]:
    """(name, may be missing) of templates named by a constant in the tree."""
    for node in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        target = getattr(node, "template", None)
        if isinstance(target, nodes.Const) and isinstance(target.value, str):
            yield target.value, bool(getattr(node, "ignore_missing", False))
