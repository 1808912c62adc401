"""Fixtures of the iSCSI tests: one real private tgtd per test module, emptied per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import require_root
from tests.kinds.iscsi.tgt import Tgtd, start_tgtd, tgt_available


@pytest.fixture(scope="module")
def tgtd_server() -> Iterator[Tgtd]:
    require_root()
    if not tgt_available():
        pytest.skip("Debian's tgt and libiscsi-bin are not installed (scripts/dev/test does)")
    server = start_tgtd()
    yield server
    server.stop()


@pytest.fixture
def tgtd(tgtd_server: Tgtd) -> Iterator[Tgtd]:
    tgtd_server.clear()
    yield tgtd_server
    tgtd_server.clear()
