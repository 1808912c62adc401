"""When a cookie may be stored: only once every change it covers has been handled.

Changes are numbered in delivery order; a cookie arrives saying it covers every change up to
some number. Workers finish changes out of order, so the cookie that may be stored is the
newest one whose number is below the oldest change still outstanding. Storing it later than
possible is always safe (changes are re-delivered and handled idempotently); storing it
earlier would lose work on a crash, which is what the legacy daemon did.

The oldest outstanding change is asked for on every change handled, with thousands outstanding
in a burst: a heap with lazy deletion answers in O(log n) where `min()` over the set cost
O(n) per change, O(n^2) per burst (issue 12).
"""

from __future__ import annotations

import heapq
import threading
from collections import deque


class Watermark:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outstanding: set[int] = set()
        self._oldest: list[int] = []  # heap of delivered seqs; handled ones leave lazily
        self._cookies: deque[tuple[int, str]] = deque()
        self._safe: str | None = None

    def delivered(self, seq: int) -> None:
        with self._lock:
            if seq not in self._outstanding:
                self._outstanding.add(seq)
                heapq.heappush(self._oldest, seq)

    def handled(self, seq: int | None) -> None:
        if seq is None:
            return
        with self._lock:
            self._outstanding.discard(seq)
            self._advance()

    def cookie(self, cookie: str, covers: int) -> None:
        with self._lock:
            self._cookies.append((covers, cookie))
            self._advance()

    def _advance(self) -> None:
        while self._oldest and self._oldest[0] not in self._outstanding:
            heapq.heappop(self._oldest)
        oldest = self._oldest[0] if self._oldest else None
        while self._cookies and (oldest is None or self._cookies[0][0] < oldest):
            self._safe = self._cookies.popleft()[1]

    def safe_cookie(self) -> str | None:
        """The newest cookie that may be stored now (None if none yet)."""
        with self._lock:
            return self._safe

    @property
    def outstanding(self) -> int:
        with self._lock:
            return len(self._outstanding)
