"""What a hook printed: its `provisiond-set NAME=VALUE` lines and the tail of its output.

A hook may print gigabytes; the daemon must neither block on its pipes nor hold its output in
memory, and must not lose a setting however late it comes. So every stdout line is looked at
but only setting lines are kept, each bounded, all of them bounded together, and a setting
line that does not fit (or is not NAME=VALUE) is counted so the step can fail instead of an
output going missing. Every value a name is given is kept, in order and without duplicates:
a multi-valued output takes them all, a single-valued one fails on two different ones
(steps/outputs.py decides, knowing the declarations).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

TAIL_BYTES = 4096
MAX_SETTING_LINE = 64 * 1024
_SET_PREFIX = b"provisiond-set "
_NAME_BYTES = re.compile(rb"[a-z][a-z0-9_]*")


class HookOutput:
    """Bounded bookkeeping of what the hook printed.

    Every stdout line is looked at, however much output there is, but only lines starting with
    `provisiond-set ` are kept: up to MAX_SETTING_LINE bytes each and `limit` bytes of settings
    in all (each distinct value costs its name and its bytes; a repeated one costs nothing). A
    setting line that does not fit, or is not NAME=VALUE, is counted (and fails the step),
    never dropped silently. Values are decoded with surrogateescape, so bytes that are not
    UTF-8 stay recognisable (every value type rejects them) instead of becoming U+FFFD. Other lines are skipped with bytes.find, so a flood costs little CPU and no
    memory beyond one read and the 4 KiB tail."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen = 0
        self.tail = bytearray()
        self.head = b""  # the start of a line, shorter than the prefix and maybe becoming it
        self.line_start = True
        self.line: bytearray | None = None  # the setting being read (after the prefix)
        self.overlong = False
        self.settings: dict[str, dict[str, None]] = {}  # name -> its values, in order
        self.kept = 0  # bytes of names and values in settings
        self.too_long = 0
        self.over_limit = 0
        self.malformed = 0
        self.first_malformed = ""

    def feed(self, chunk: bytes, from_stdout: bool) -> None:
        self.seen += len(chunk)
        self.tail += chunk
        del self.tail[:-TAIL_BYTES]
        if from_stdout:
            self._scan(self.head + chunk if self.head else chunk)

    def _scan(self, data: bytes) -> None:
        self.head = b""
        pos, end = 0, len(data)
        while pos < end:
            if self.line is not None:  # inside a setting line
                newline = data.find(b"\n", pos)
                if not self.overlong:
                    self.line += data[pos : end if newline < 0 else newline]
                    if len(self.line) > MAX_SETTING_LINE:
                        self.overlong, self.line = True, bytearray()
                if newline < 0:
                    return
                self._setting()
                pos, self.line_start = newline + 1, True
            elif self.line_start:
                if data.startswith(_SET_PREFIX, pos):
                    self.line, pos = bytearray(), pos + len(_SET_PREFIX)
                elif end - pos < len(_SET_PREFIX) and _SET_PREFIX.startswith(data[pos:]):
                    self.head = data[pos:]  # decided by the next read
                    return
                else:
                    self.line_start = False
            else:  # inside another line: on to the next setting, or to the last line's start
                found = data.find(b"\n" + _SET_PREFIX, pos)
                if found < 0:
                    found = data.rfind(b"\n", pos)
                    if found < 0:
                        return
                pos, self.line_start = found + 1, True

    def _setting(self) -> None:
        assert self.line is not None
        line, overlong = bytes(self.line), self.overlong
        self.line, self.overlong = None, False
        if overlong:
            self.too_long += 1
            return
        line = line.rstrip(b"\r")
        name, sep, value = line.partition(b"=")
        if not (sep and _NAME_BYTES.fullmatch(name)):
            self.malformed += 1
            if self.malformed == 1:  # shown in the step's message: short and escaped
                self.first_malformed = repr(line[:40].decode("utf-8", "replace"))[:60]
            return
        key, text = name.decode(), value.decode("utf-8", "surrogateescape")
        if text in self.settings.get(key, ()):
            return
        if self.kept + len(name) + len(value) > self.limit:
            self.over_limit += 1
            return
        self.settings.setdefault(key, {})[text] = None
        self.kept += len(name) + len(value)

    def lost(self) -> str:
        """Why some `provisiond-set` lines were not taken; "" when all were."""
        count = self.too_long + self.over_limit + self.malformed
        if not count:
            return ""
        why = []
        if self.too_long:
            why.append(f"{self.too_long} longer than {MAX_SETTING_LINE // 1024} KiB")
        if self.over_limit:
            why.append(f"{self.over_limit} past {self.limit} bytes of settings")
        if self.malformed:
            why.append(f"{self.malformed} not NAME=VALUE, the first {self.first_malformed}")
        return (f"{count} provisiond-set line{'s' * (count > 1)} not taken ({', '.join(why)}): "
                "outputs may be lost")

    def finish(self) -> tuple[str, Mapping[str, tuple[str, ...]]]:
        """The output's tail, and each name's values in the order first printed."""
        if self.line is not None:
            self._setting()  # a last line without a newline still counts
        tail = bytes(self.tail)
        if self.seen > len(tail):  # cut mid-stream: skip a split UTF-8 sequence
            tail = tail[next((i for i, b in enumerate(tail[:4]) if b & 0xC0 != 0x80), 0) :]
        settings = {name: tuple(values) for name, values in self.settings.items()}
        return tail.decode("utf-8", "replace"), MappingProxyType(settings)
