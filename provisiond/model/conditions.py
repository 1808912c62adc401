"""Step conditions (`when:`): a tiny expression language, parsed once at load, never eval'd.

One kind should serve LVM and ZFS without two copies of its steps, so a step may say
`when: "values.backend == 'lvm'"`. Jinja or Python would give a definition the whole
language; this gives it only what a condition needs, and a typo is found at load:
- operands: `values.NAME`, `vars.NAME`, `entry.mode`, 'single-quoted' strings, integers,
  `true`, `false`, `none`;
- operators: `==`, `!=`, `in [literal, ...]`, `not in [...]`, `not`, `and`, `or`, parentheses;
  an operand alone is true when it is set and not false, 0 or ''.
The tokenizer and the recursive-descent parser bound the input's length and nesting, so a
hostile definition cannot exhaust the loader. The result is an immutable tree, evaluated
against a job's values, the service's vars and the request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_LENGTH = 1000  # characters of one condition
MAX_DEPTH = 32  # nested parentheses and `not`s
ROOTS = ("values", "vars", "entry")
ENTRY_FIELDS = ("mode",)

Literal = str | int | bool | None


class ConditionError(ValueError):
    """A condition that cannot be parsed; the message says where and why."""


@dataclass(frozen=True)
class Name:
    """`values.NAME`, `vars.NAME` or `entry.mode`."""

    root: str
    name: str

    def __str__(self) -> str:
        return f"{self.root}.{self.name}"


@dataclass(frozen=True)
class Const:
    value: Literal


@dataclass(frozen=True)
class Compare:
    left: Operand
    op: str  # "==", "!=", "in", "not in"
    right: Operand | tuple[Literal, ...]


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and", "or"
    operands: tuple[Node, ...]


Operand = Name | Const
Node = Name | Const | Compare | Not | BoolOp


@dataclass(frozen=True)
class Condition:
    """A parsed `when:`: its source (for logs and `render`) and its tree."""

    source: str
    tree: Node

    def names(self) -> frozenset[Name]:
        """Every `root.name` it reads, for checking them against the service at load."""
        return frozenset(_names(self.tree))

    def holds(self, values: Mapping[str, Any], vars_: Mapping[str, Any], mode: str) -> bool:
        """Whether the step runs for a job with these values, vars and request."""
        scope = {"values": values, "vars": vars_, "entry": {"mode": mode}}
        return _truth(_evaluate(self.tree, scope))


_TOKEN = re.compile(r"""
    \s*(?:
      (?P<string>'[^'\\\n]*')
    | (?P<int>-?\d+)
    | (?P<op>==|!=|\(|\)|\[|\]|,)
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_-]*)*)
    )""", re.VERBOSE)
_KEYWORDS = {"true": True, "false": False, "none": None}


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    at = 0
    while at < len(text):
        if text[at:].strip() == "":
            break
        match = _TOKEN.match(text, at)
        if not match or match.lastgroup is None:
            raise ConditionError(f"unexpected {text[at:].lstrip()[:20]!r} at character "
                                 f"{at + 1}")
        tokens.append((match.lastgroup, match.group(match.lastgroup)))
        at = match.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.at = 0
        self.depth = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.at] if self.at < len(self.tokens) else ("end", "")

    def take(self, text: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token[0] == "end" or (text is not None and token[1] != text):
            raise ConditionError(f"expected {text or 'more'}, found "
                                 f"{token[1] or 'the end'!r}")
        self.at += 1
        return token

    def nested(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ConditionError(f"nested more than {MAX_DEPTH} deep")

    def expression(self) -> Node:
        return self.boolean("or", self.conjunction)

    def conjunction(self) -> Node:
        return self.boolean("and", self.negation)

    def boolean(self, op: str, part: Any) -> Node:
        operands = [part()]
        while self.peek() == ("word", op):
            self.take()
            operands.append(part())
        return operands[0] if len(operands) == 1 else BoolOp(op, tuple(operands))

    def negation(self) -> Node:
        if self.peek() == ("word", "not"):
            self.take()
            self.nested()
            node = Not(self.negation())
            self.depth -= 1
            return node
        return self.comparison()

    def comparison(self) -> Node:
        if self.peek() == ("op", "("):
            self.take()
            self.nested()
            node = self.expression()
            self.take(")")
            self.depth -= 1
            return node
        left = self.operand()
        kind, text = self.peek()
        if kind == "op" and text in ("==", "!="):
            self.take()
            return Compare(left, text, self.operand())
        if (kind, text) == ("word", "in"):
            self.take()
            return Compare(left, "in", self.listing())
        if (kind, text) == ("word", "not") and self.tokens[self.at + 1:self.at + 2] == [
                ("word", "in")]:
            self.at += 2
            return Compare(left, "not in", self.listing())
        return left

    def listing(self) -> tuple[Literal, ...]:
        self.take("[")
        items: list[Literal] = []
        while True:
            operand = self.operand()
            if not isinstance(operand, Const):
                raise ConditionError(f"`in` takes a list of literals, not {operand}")
            items.append(operand.value)
            if self.peek() == ("op", "]"):
                self.take()
                return tuple(items)
            self.take(",")

    def operand(self) -> Operand:
        kind, text = self.take()
        if kind == "string":
            return Const(text[1:-1])
        if kind == "int":
            return Const(int(text))
        if kind == "word" and text in _KEYWORDS:
            return Const(_KEYWORDS[text])
        if kind == "word" and "." in text:
            return _name(text)
        raise ConditionError(f"expected a value (values.NAME, vars.NAME, entry.mode or a "
                             f"literal), found {text!r}")


def _name(text: str) -> Name:
    root, _, name = text.partition(".")
    if root not in ROOTS:
        raise ConditionError(f"{text}: names start with {', '.join(ROOTS)}")
    if "." in name:
        raise ConditionError(f"{text}: only {root}.NAME, nothing inside it")
    if root == "entry" and name not in ENTRY_FIELDS:
        raise ConditionError(f"{text}: of the entry only {', '.join(ENTRY_FIELDS)}")
    return Name(root, name)


def parse(text: str) -> Condition:
    """The condition `text`; raises ConditionError."""
    if len(text) > MAX_LENGTH:
        raise ConditionError(f"longer than {MAX_LENGTH} characters")
    parser = _Parser(_tokens(text))
    if not parser.tokens:
        raise ConditionError("empty")
    tree = parser.expression()
    if parser.peek()[0] != "end":
        raise ConditionError(f"unexpected {parser.peek()[1]!r} after a complete condition")
    return Condition(text, tree)


def _names(node: Node) -> list[Name]:
    if isinstance(node, Name):
        return [node]
    if isinstance(node, Compare):
        right = node.right if isinstance(node.right, (Name, Const)) else Const(None)
        return _names(node.left) + _names(right)
    if isinstance(node, Not):
        return _names(node.operand)
    if isinstance(node, BoolOp):
        return [name for operand in node.operands for name in _names(operand)]
    return []


def _plain(value: Any) -> Any:
    """A value as conditions compare it: text, integers, booleans and None as they are,
    lists as tuples, anything else (a DN, a path) as its text."""
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_plain(item) for item in value)
    return str(value)


def _equal(left: Any, right: Any) -> bool:
    """Equality without Python's `True == 1`: a boolean equals only a boolean."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    return bool(left == right)


def _truth(value: Any) -> bool:
    return value not in (None, False, 0, "", ())


def _evaluate(node: Node, scope: Mapping[str, Mapping[str, Any]]) -> Any:
    if isinstance(node, Const):
        return node.value
    if isinstance(node, Name):
        return _plain(scope[node.root].get(node.name))
    if isinstance(node, Not):
        return not _truth(_evaluate(node.operand, scope))
    if isinstance(node, BoolOp):
        results = (_truth(_evaluate(operand, scope)) for operand in node.operands)
        return all(results) if node.op == "and" else any(results)
    left = _evaluate(node.left, scope)
    if isinstance(node.right, tuple):
        found = any(_equal(left, item) for item in node.right)
        return found if node.op == "in" else not found
    same = _equal(left, _evaluate(node.right, scope))
    return same if node.op == "==" else not same
