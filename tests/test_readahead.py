"""ReadAhead: a source run one step ahead in a thread, in order, errors passed on."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from pairbatch.readahead import ReadAhead


def test_items_arrive_in_order_and_the_worker_ends() -> None:
    with ReadAhead(iter(range(1000)), depth=2) as ahead:
        assert list(ahead) == list(range(1000))
        assert next(ahead, None) is None
    assert not any(t.name == "pairbatch-readahead" for t in threading.enumerate())


def test_an_error_in_the_source_is_raised_by_the_consumer_after_the_items_before_it() -> None:
    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("bad line 3")

    with ReadAhead(source()) as ahead:
        assert next(ahead) == 1 and next(ahead) == 2
        with pytest.raises(ValueError, match="bad line 3"):
            next(ahead)


def test_leaving_early_stops_a_worker_blocked_on_a_full_queue() -> None:
    produced: list[int] = []

    def endless() -> Iterator[int]:
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    with ReadAhead(endless(), depth=1) as ahead:
        assert next(ahead) == 0
    # Closed: the worker is gone and read at most a couple of items past the last taken.
    assert not any(t.name == "pairbatch-readahead" for t in threading.enumerate())
    assert len(produced) <= 3


def test_depth_must_be_positive() -> None:
    with pytest.raises(ValueError, match="depth"):
        ReadAhead(iter([]), depth=0)
