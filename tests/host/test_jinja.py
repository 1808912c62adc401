"""Template filters: what they accept is part of the injection defence."""

from __future__ import annotations

import pytest

from provisiond.host.jinja import RenderError, shard


def test_shard_lays_out_stoney_homes() -> None:
    assert shard(1234567) == "7/567/234/1234567"


@pytest.mark.parametrize("uid", ["١٢٣٤٥٦٧", "１２３４５６７", "12345", "123456/", ""])
def test_shard_takes_ascii_digits_only(uid: str) -> None:
    with pytest.raises(RenderError):
        shard(uid)
