"""Step conditions (`when:`, model/conditions.py): parsed at load, evaluated without eval."""

from __future__ import annotations

from typing import Any

import pytest

from provisiond.model.conditions import MAX_DEPTH, MAX_LENGTH, ConditionError, Name, parse


def holds(text: str, values: dict[str, Any] | None = None, vars_: dict[str, Any] | None = None,
          mode: str = "add") -> bool:
    return parse(text).holds(values or {}, vars_ or {}, mode)


@pytest.mark.parametrize("text, values, expected", [
    ("values.backend == 'lvm'", {"backend": "lvm"}, True),
    ("values.backend == 'lvm'", {"backend": "zfs"}, False),
    ("values.backend != 'lvm'", {"backend": "zfs"}, True),
    ("values.backend in ['lvm', 'zfs']", {"backend": "zfs"}, True),
    ("values.backend not in ['lvm', 'zfs']", {"backend": "zfs"}, False),
    ("values.backend in ['lvm']", {}, False),
    ("values.backend == none", {}, True),
    ("values.size == 10", {"size": 10}, True),
    ("values.size == -1", {"size": -1}, True),
    ("values.on == true", {"on": True}, True),
    ("values.on == 1", {"on": True}, False),  # a boolean equals only a boolean
    ("values.size == true", {"size": 1}, False),
    ("values.on", {"on": True}, True),
    ("values.on", {"on": False}, False),
    ("not values.on", {}, True),
    ("not not values.on", {"on": True}, True),
    ("values.a == 'x' and values.b == 'y'", {"a": "x", "b": "y"}, True),
    ("values.a == 'x' and values.b == 'y'", {"a": "x", "b": "z"}, False),
    ("values.a == 'x' or values.b == 'y'", {"a": "q", "b": "y"}, True),
    # `and` binds tighter than `or`; parentheses change that
    ("values.a == 'x' or values.a == 'y' and values.b == 'z'", {"a": "x", "b": "q"}, True),
    ("(values.a == 'x' or values.a == 'y') and values.b == 'z'", {"a": "x", "b": "q"}, False),
    ("values.list == 'a'", {"list": ["a"]}, False),  # multi-valued: never equal to one literal
    ("values.list", {"list": []}, False),
])
def test_evaluates(text: str, values: dict[str, Any], expected: bool) -> None:
    assert holds(text, values) is expected


def test_vars_and_the_entry_mode() -> None:
    assert holds("vars.backend == 'zfs' and entry.mode == 'delete'", vars_={"backend": "zfs"},
                 mode="delete")
    assert not holds("entry.mode in ['add', 'modify']", mode="delete")


def test_names_lists_what_it_reads() -> None:
    condition = parse("values.a == vars.b or not entry.mode in ['add']")
    assert condition.names() == {Name("values", "a"), Name("vars", "b"), Name("entry", "mode")}


def test_the_tree_is_immutable() -> None:
    condition = parse("values.a == 'x'")
    with pytest.raises(AttributeError):
        condition.tree.op = "!="  # type: ignore[union-attr,misc]


@pytest.mark.parametrize("text, reason", [
    ("", "empty"),
    ("   ", "empty"),
    ("values.backend = 'lvm'", "unexpected"),
    ("values.backend == ", "expected more"),
    ("values.backend == 'lvm", "unexpected"),
    ("values.a == 'x' values.b", "after a complete condition"),
    ("(values.a == 'x'", "expected )"),
    ("values.a in 'x'", "expected ["),
    ("values.a in [values.b]", "list of literals"),
    ("values.a in []", "expected a value"),
    ("backend == 'lvm'", "expected a value"),
    ("os.system == 'x'", "names start with values, vars, entry"),
    ("values.a.__class__ == 'x'", "nothing inside it"),
    ("vars.x.__globals__", "nothing inside it"),
    ("entry.dn == 'x'", "only mode"),
    ("values.a == \"x\"", "unexpected"),
    ("values['a'] == 'x'", "found 'values'"),
    ("__import__('os')", "expected a value"),
    ("{{ values.a }}", "unexpected"),
    ("values.a == 'x\\'", "unexpected"),
])
def test_refuses(text: str, reason: str) -> None:
    with pytest.raises(ConditionError, match=reason.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)")):
        parse(text)


def test_long_input_is_refused_before_parsing() -> None:
    parse(" or ".join(["values.a == 'x'"] * 50))  # 946 characters: fine
    with pytest.raises(ConditionError, match=f"longer than {MAX_LENGTH}"):
        parse("values.a == '" + "x" * MAX_LENGTH + "'")


@pytest.mark.parametrize("opening, closing", [("(", ")"), ("not ", "")])
def test_nesting_is_bounded(opening: str, closing: str) -> None:
    inner = "values.a == 'x'"
    parse(opening * MAX_DEPTH + inner + closing * MAX_DEPTH)
    with pytest.raises(ConditionError, match="nested more than"):
        parse(opening * (MAX_DEPTH + 1) + inner + closing * (MAX_DEPTH + 1))
    with pytest.raises(ConditionError):  # no RecursionError, however deep within the bound
        parse("(" * 400 + inner + ")" * 400)


def test_an_undeclared_name_reads_as_none_not_an_attribute() -> None:
    # Names are checked against the service at load; at run time a lookup is a mapping get.
    assert holds("values.items == none", {"a": "x"})
