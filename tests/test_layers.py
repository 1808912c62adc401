"""The package's layers import only downward, and nothing imports in a circle.

    foundation  provisiond (the package), exitcodes, logfmt, paths
    model       the pure model: lifecycle, values and value types, settings, work items
    host        host effects: crash-safe files, Jinja, hook supervision, temp sweep, host locks
    config      the configuration's vocabulary: schema and sections, files, readers of options,
                LDAP syntax, admin hook directories, typed kind vars
    directory   LDAP: connections, reads and writes, the change stream
    aggregates  files rendered from all entries: mirrors, last provisioned values
    steps       step types: each one's config parsing, plan, run, check and preview
    loading     the configuration loaded (the `provisiond.config` package, its `load` and
                `services`): a service's steps are read by their step types
    core        the effectful engine: intake, workers, pipeline, recovery, scheduler, journal
    process     the daemon: signals, systemd notify, metrics, logging
    operate     operator tools: status, check, preview, retry, diagnose
    kinds       tooling of one kind only (backup: import-legacy, test-account)
    commands    the command line (and `cli`, `__main__`)

Type-only imports count too: a lower layer that needs a higher one's type has the type in
the wrong layer. `provisiond.testing` (test support) may import anything.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "provisiond"
LAYERS = [
    {"provisiond", "provisiond.exitcodes", "provisiond.logfmt", "provisiond.paths"},
    {"provisiond.model"},
    {"provisiond.host"},
    {"provisiond.config.schema", "provisiond.config.sections", "provisiond.config.files",
     "provisiond.config.readers", "provisiond.config.syntax", "provisiond.config.admin_hooks",
     "provisiond.config.kind_vars"},
    {"provisiond.directory"},
    {"provisiond.aggregates"},
    {"provisiond.steps"},
    {"provisiond.config"},  # the package and its other modules: loading
    {"provisiond.core"},
    {"provisiond.process"},
    {"provisiond.operate"},
    {"provisiond.kinds"},
    {"provisiond.commands", "provisiond.cli", "provisiond.__main__"},
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int | None:
    """The layer of `module`: the longest layer prefix that names it or a package above it."""
    best: tuple[int, int] | None = None
    for number, names in enumerate(LAYERS):
        for name in names:
            if module == name or module.startswith(name + "."):
                if name == "provisiond" and module != "provisiond":
                    continue  # the bare package is foundation; its submodules are not
                if best is None or len(name) > best[1]:
                    best = (number, len(name))
    return None if best is None else best[0]


def imports(path: Path) -> set[str]:
    module = module_name(path)
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("provisiond"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("provisiond"):
                continue
            for alias in node.names:  # `from provisiond.x import y`: y may be a module
                candidate = f"{target}.{alias.name}"
                found.add(candidate if module_file(candidate) else target)
    return found


def module_file(name: str) -> Path | None:
    base = PACKAGE.parent / Path(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return path
    return None


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        module = module_name(path)
        if module.startswith("provisiond.testing"):
            continue
        edges[module] |= {m for m in imports(path) if m != module}
    return edges


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(m for m in graph() if layer_of(m) is None)
    assert unplaced == [], "add these modules to a layer (or a layer folder)"


def test_layers_import_only_downward() -> None:
    upward = []
    for module, targets in sorted(graph().items()):
        for target in sorted(targets):
            if target.startswith("provisiond.testing"):
                upward.append(f"{module} -> {target} (test support)")
                continue
            mine, theirs = layer_of(module), layer_of(target)
            if mine is not None and theirs is not None and theirs > mine:
                upward.append(f"{module} (layer {mine}) -> {target} (layer {theirs})")
    assert upward == []


def test_no_import_circles() -> None:
    edges = graph()
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if target not in edges:
                continue
            if state.get(target) == 1:
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert cycles == []
