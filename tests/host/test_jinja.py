"""Template filters: what they accept is part of the injection defence."""

from __future__ import annotations

import pytest

from provisiond.host.jinja import RenderError, make_environment, render_string, shard


def test_shard_lays_out_stoney_homes() -> None:
    assert shard(1234567) == "7/567/234/1234567"


@pytest.mark.parametrize("uid", ["١٢٣٤٥٦٧", "１２３４５６７", "12345", "123456/", ""])
def test_shard_takes_ascii_digits_only(uid: str) -> None:
    with pytest.raises(RenderError):
        shard(uid)


@pytest.mark.parametrize("literal", ["/bin/true", "50% done\n", "a\tb  ", "#not a comment", ""])
def test_a_literal_renders_as_jinja_renders_it(literal: str) -> None:
    env = make_environment([])
    assert render_string(env, literal, {}) == env.from_string(literal).render({}) == literal
