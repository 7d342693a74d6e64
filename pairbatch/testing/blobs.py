"""File bodies the emulator serves: in-memory bytes, or huge synthetic JSONL made on the fly.

A synthetic file is a block of ``BLOCK_LINES`` fixed-width lines whose custom ids end in
the line's position within the block; the block's own number is a run of DEL bytes
(JSON writers leave them raw and nothing else in the lines emits them), swapped in with
one ``bytes.replace``. A gigabyte is then about a thousand C-level replaces, so it
streams at loopback speed and is never held in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import attrs

BLOCK_LINES = 1000
_HIGH_DIGITS = 7  # block number width: up to 10**7 blocks of 1000 lines
_PLACEHOLDER = b"\x7f" * _HIGH_DIGITS
CHUNK_BYTES = 1 << 20


class Blob(Protocol):
    """A body of known size that can be read from any offset."""

    @property
    def size(self) -> int: ...

    def iter_range(self, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``[start, end)`` in chunks."""
        ...


@attrs.frozen
class BytesBlob:
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def iter_range(self, start: int, end: int) -> Iterator[bytes]:
        view = memoryview(self.data)
        for offset in range(start, end, CHUNK_BYTES):
            yield bytes(view[offset : min(end, offset + CHUNK_BYTES)])


def synthetic_custom_id(index: int) -> str:
    """The custom id of line ``index`` of a synthetic file."""
    high, low = divmod(index, BLOCK_LINES)
    return f"syn-{high:0{_HIGH_DIGITS}d}{low:03d}"


# A line renderer takes the custom id (with NUL placeholder digits) and the line's
# position, and returns the line without its newline.
LineRenderer = Callable[[str, int], bytes]


@attrs.define
class SyntheticBlob:
    """``n_lines`` JSONL lines of exactly ``line_bytes`` bytes each (newline included)."""

    n_lines: int
    line_bytes: int
    _block: bytes
    _block_lines: int

    @classmethod
    def build(cls, render: LineRenderer, n_lines: int, line_bytes: int | None) -> SyntheticBlob:
        if n_lines < 1:
            raise ValueError("a synthetic file needs at least one line")
        if n_lines > BLOCK_LINES * 10**_HIGH_DIGITS:
            raise ValueError("too many synthetic lines")
        placeholder_id = "syn-" + _PLACEHOLDER.decode() + "{low:03d}"
        raw = [render(placeholder_id.format(low=j), j) for j in range(BLOCK_LINES)]
        natural = max(len(line) for line in raw) + 1
        width = natural if line_bytes is None else line_bytes
        if width < natural:
            raise ValueError(f"line_bytes must be at least {natural} for this provider")
        padded = []
        for line in raw:
            # JSON allows whitespace before the closing brace; padding there keeps every
            # line the same width, so offsets map to lines by division.
            if not line.endswith(b"}"):
                raise ValueError("a synthetic line must be a JSON object")
            padded.append(line[:-1] + b" " * (width - 1 - len(line)) + b"}\n")
        block = b"".join(padded)
        return cls(n_lines=n_lines, line_bytes=width, block=block, block_lines=BLOCK_LINES)

    @property
    def size(self) -> int:
        return self.n_lines * self.line_bytes

    def _block_bytes(self, number: int) -> bytes:
        data = self._block.replace(_PLACEHOLDER, b"%0*d" % (_HIGH_DIGITS, number))
        remaining = self.n_lines - number * self._block_lines
        if remaining < self._block_lines:
            data = data[: remaining * self.line_bytes]
        return data

    def iter_range(self, start: int, end: int) -> Iterator[bytes]:
        block_size = self._block_lines * self.line_bytes
        position = start
        while position < end:
            number, skip = divmod(position, block_size)
            data = self._block_bytes(number)
            piece = data[skip : skip + (end - position)]
            if not piece:
                return
            # Split big blocks so one write never holds more than a few MB.
            for offset in range(0, len(piece), 4 * CHUNK_BYTES):
                yield piece[offset : offset + 4 * CHUNK_BYTES]
            position += len(piece)
