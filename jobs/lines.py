"""The lines of a file as mlx-lm's text mode splits them, in bounded memory.

`jobs.datasets` scans every line of a dataset with these; a million-line file is
read in seconds, so the common case (a chunk with no carriage return, lines
shorter than the chunk) is split by `bytes.split` in C, and only a line that
spans chunks, or a file with \\r endings, takes the slower path.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

MB = 1 << 20
# The longest dataset line the farm reads; longer ones are refused while scanning.
MAX_LINE_BYTES = 8 * MB
CHUNK = 1 << 20
# Python's text mode (what mlx-lm reads with) ends a line at \n, \r\n or a lone \r.
_EOL = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a file: its bytes without the line ending, or None when it is
    longer than the limit (then only its size is known)."""

    number: int
    data: bytes | None
    size: int


class _Pending:
    """The start of a line that continues in the next chunk (or None once it is
    over the limit: only its size is counted)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buf: bytearray | None = bytearray()
        self.size = 0

    def add(self, piece: bytes) -> None:
        self.size += len(piece)
        if self.buf is not None and self.size > self.limit:
            self.buf = None  # let go of what was held
        elif self.buf is not None:
            self.buf += piece

    def line(self, number: int) -> Line:
        line = Line(number, None if self.buf is None else bytes(self.buf), self.size)
        self.buf, self.size = bytearray(), 0
        return line


def iter_lines(
    fh: BinaryIO, limit: int = MAX_LINE_BYTES, chunk_size: int = CHUNK
) -> Iterator[Line]:
    """The lines of a binary file as Python's text mode splits them, holding at most
    `limit` bytes of a line (plus one chunk) at a time."""
    pending = _Pending(limit)
    number, after_cr = 0, False
    while chunk := fh.read(chunk_size):
        if not after_cr and b"\r" not in chunk:
            *whole, tail = chunk.split(b"\n")
            for piece in whole:
                number += 1
                if not pending.size and len(piece) <= limit:
                    yield Line(number, piece, len(piece))
                else:
                    pending.add(piece)
                    yield pending.line(number)
            pending.add(tail)
            continue
        start = 0
        if after_cr and chunk[:1] == b"\n":
            start = 1  # the \n of a \r\n split across two chunks
        after_cr = False
        while match := _EOL.search(chunk, start):
            pending.add(chunk[start : match.start()])
            number += 1
            yield pending.line(number)
            after_cr = match.group() == b"\r" and match.end() == len(chunk)
            start = match.end()
        pending.add(chunk[start:])
    if pending.size:
        yield pending.line(number + 1)
