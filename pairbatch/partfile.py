"""A download's part file: written in a worker thread as the body arrives, fsynced,
renamed into place only when whole, and what a resumed attempt continues from."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import IO

import attrs

from pairbatch.errors import DownloadError
from pairbatch.retry import TransientError
from pairbatch.threads import to_thread

# Bytes gathered before a write is handed to the worker thread.
CHUNK_BYTES = 1 << 20


class ShortBody(TransientError, DownloadError):
    """A download that ended before its declared length (retried, resumed if possible)."""


@attrs.define
class ResumeState:
    """What one download call keeps between its attempts to resume with ``Range``."""

    validator: str | None = None  # a strong ETag or Last-Modified, sent as If-Range
    resumable: bool = True


def range_start(content_range: str | None) -> int | None:
    """``bytes 100-199/200`` -> 100."""
    if not content_range:
        return None
    unit, _, spec = content_range.strip().partition(" ")
    first = spec.partition("-")[0]
    if unit.lower() != "bytes" or not first.isdigit():
        return None
    return int(first)


class ChunkWriter:
    """Writes chunks in a worker thread, one write in flight while the next chunk is read.

    Network chunks (often 16-64 KiB) are gathered into ~1 MiB batches, handed over as a
    list (no copying), so the thread hop is paid per MiB, not per packet. At most two
    batches exist at a time: memory stays flat however large the body. The file is opened
    by the first write, so a small body costs one hop in all (open, write, fsync, close).
    """

    def __init__(self, path: Path, *, append: bool) -> None:
        self._path = path
        self._append = append
        self._handle: IO[bytes] | None = None
        self._batch: list[bytes] = []
        self._batched = 0
        self._pending: asyncio.Future[None] | None = None

    async def write(self, chunk: bytes) -> None:
        self._batch.append(chunk)
        self._batched += len(chunk)
        if self._batched >= CHUNK_BYTES:
            await self._wait()
            batch, self._batch, self._batched = self._batch, [], 0
            self._pending = asyncio.ensure_future(to_thread(self._write, batch))

    async def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await pending

    def _write(self, batch: list[bytes]) -> None:
        if self._handle is None:
            self._handle = _open(self._path, self._append)
        self._handle.writelines(batch)

    def _finish(self, batch: list[bytes]) -> None:
        try:
            self._write(batch)
        finally:
            if self._handle is not None:
                _close(self._handle)

    async def close(self) -> None:
        """Write what is left, fsync and close, even when the body failed midway: the
        bytes on disk are what a resumed attempt continues from."""
        batch: list[bytes] = []
        try:
            await self._wait()
            batch = self._batch  # only after the earlier writes all succeeded
        finally:
            self._batch, self._batched = [], 0
            await asyncio.shield(to_thread(self._finish, batch))


def prepare_part(part: Path) -> None:
    """Make the part's folder and remove a stale part left by an earlier process."""
    part.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        part.unlink()


def part_size(path: Path) -> int:
    """Bytes already on disk (0 if none): where a resumed attempt's ``Range`` starts."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _open(path: Path, append: bool) -> IO[bytes]:
    return path.open("ab" if append else "wb")


def _close(handle: IO[bytes]) -> None:
    try:
        handle.flush()
        os.fsync(handle.fileno())
    finally:
        handle.close()


def commit_part(part: Path, target: Path) -> None:
    """Rename a whole part into place, durably."""
    part.replace(target)
    # The rename itself must survive a crash too: sync the directory entry.
    with contextlib.suppress(OSError):
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def discard_part(part: Path) -> None:
    """Remove a part that can no longer be resumed."""
    with contextlib.suppress(FileNotFoundError):
        part.unlink()
