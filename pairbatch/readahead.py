"""Running an iterator one step ahead in a thread, so its work overlaps the consumer's.

Parsing a results file holds the GIL (the decoder builds Python objects); normalising and
writing the parsed chunks is Polars work that releases it. With the parse a chunk ahead in
its own thread the two run on two cores at once instead of taking turns.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")

# How long a blocked producer waits before looking whether the consumer has gone.
_POLL_SECONDS = 0.05


class ReadAhead(Generic[T]):
    """Iterate ``source`` in a worker thread, at most ``depth`` items ahead.

    Items arrive in order; an exception the source raises is raised by the consumer's
    ``next`` in its place. Use as a context manager: leaving it (normally or by an
    exception) stops the worker at its next item and waits for it, so nothing outlives
    the call that needed the items.
    """

    def __init__(self, source: Iterator[T], depth: int = 1) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth!r}")
        self._items: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=depth)
        self._closed = threading.Event()
        self._thread = threading.Thread(
            target=self._fill, args=(source,), name="pairbatch-readahead", daemon=True
        )
        self._thread.start()

    def _fill(self, source: Iterator[T]) -> None:
        try:
            for item in source:
                if not self._put("item", item):
                    return
        except BaseException as exc:  # handed to the consumer, who raises it
            self._put("error", exc)
            return
        self._put("end", None)

    def _put(self, kind: str, value: object) -> bool:
        # A bounded put that gives up once the consumer has closed: a worker blocked on
        # a full queue must not keep the process (or its memory) alive.
        while not self._closed.is_set():
            try:
                self._items.put((kind, value), timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._closed.is_set():
            raise StopIteration
        kind, value = self._items.get()
        if kind == "item":
            return value  # type: ignore[return-value]
        self._closed.set()
        if kind == "error":
            assert isinstance(value, BaseException)
            raise value
        raise StopIteration

    def close(self) -> None:
        self._closed.set()
        while self._thread.is_alive():
            # Drain, so a worker blocked on a full queue sees the close at once.
            with contextlib.suppress(queue.Empty):
                self._items.get(timeout=_POLL_SECONDS)
        self._thread.join()

    def __enter__(self) -> ReadAhead[T]:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
