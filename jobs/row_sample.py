"""A fixed sample of a file's rows, taken in the one pass that reads them all.

The content checks of a dataset (`jobs.checks`) read a sample of a big file:
the first HEAD_ROWS rows, and rows evenly spaced over the rest. The spacing is
found without knowing the file's length: every row is kept at first, and each
time the spaced rows outnumber 2 × SPREAD_ROWS every other one is dropped and
the stride doubles, so a file of any length ends with SPREAD_ROWS to
2 × SPREAD_ROWS rows spaced a power of two apart. Which rows those are depends
only on the file, so two checks of one file agree. The rows kept hold at most
MAX_SAMPLE_BYTES of lines between them, the head at most half (a row that would
go over is left out), as lines may be megabytes long.
"""

from __future__ import annotations

from typing import Any

HEAD_ROWS = 500
SPREAD_ROWS = 1500
MAX_SAMPLE_BYTES = 64_000_000


class RowSample:
    """The rows kept so far, by line number (from 1)."""

    def __init__(
        self, head: int = HEAD_ROWS, spread: int = SPREAD_ROWS, budget: int = MAX_SAMPLE_BYTES
    ) -> None:
        self.head, self.spread, self.budget = head, spread, budget
        self.stride = 1
        self.rows: dict[int, Any] = {}
        self.sizes: dict[int, int] = {}
        self.lines = 0  # lines offered: the file's length once it has been read
        self._spread = 0  # rows kept after the head
        self._bytes = 0  # bytes of the rows kept
        self._head_bytes = 0  # of which the head's: at most half the budget

    def wants(self, number: int) -> bool:
        return number <= self.head or (number - self.head - 1) % self.stride == 0

    def offer(self, number: int, row: Any, size: int) -> None:
        """Line `number` was read: `row` is its parsed value, `size` its bytes."""
        self.lines = max(self.lines, number)
        if not self.wants(number):
            return
        spaced = number > self.head
        if not spaced and self._head_bytes + size > self.budget // 2:
            return  # the spaced rows keep the other half
        while (spaced and self._spread >= 2 * self.spread) or self._bytes + size > self.budget:
            if not self._thin():
                return  # only head rows are left and they fill the budget
            if not self.wants(number):
                return
        self.rows[number], self.sizes[number] = row, size
        self._spread += spaced
        self._bytes += size
        self._head_bytes += 0 if spaced else size

    def _thin(self) -> bool:
        """Double the stride, dropping the spaced rows off it; False when no spaced
        row is left to drop."""
        if not self._spread:
            return False
        self.stride *= 2
        for number in [n for n in self.rows if not self.wants(n)]:
            self._spread -= 1
            self._bytes -= self.sizes.pop(number)
            del self.rows[number]
        return True
