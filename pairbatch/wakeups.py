"""Waking a job's poller early: the hint a webhook gives that a batch has finished.

A poller sleeps between polls with :meth:`Wakeups.sleep` instead of ``asyncio.sleep``;
anything that hears a batch may have changed (a verified webhook event) calls
:meth:`Wakeups.wake` with its batch id, and the poller polls at once. An event is only
ever a hint: the poll that follows confirms the state, so a forged, stale or repeated
event costs one extra poll and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import time


class Wakeups:
    """Batch id -> the event its poller is sleeping on (one per sleeping poller)."""

    # A wake for a batch no poller here is sleeping on is kept this long (its poller may
    # be busy downloading, or not started yet), and at most this many: a service hears
    # of every batch of the account, most of them not its own.
    early_seconds = 600.0
    early_max = 10_000

    def __init__(self) -> None:
        self._sleeping: dict[str, asyncio.Event] = {}
        self._early: dict[str, float] = {}
        self.woken = 0

    def wake(self, batch_id: str) -> bool:
        """Cut the sleep of ``batch_id``'s poller short. Returns whether one was asleep; a
        wake for a batch whose poller is busy is kept for its next sleep."""
        event = self._sleeping.get(batch_id)
        if event is None:
            self._keep_early(batch_id)
            return False
        event.set()
        self.woken += 1
        return True

    async def sleep(self, batch_id: str | None, delay: float) -> bool:
        """Sleep ``delay`` seconds or until woken; returns whether it was woken."""
        if batch_id is None:
            await asyncio.sleep(delay)
            return False
        heard = self._early.pop(batch_id, None)
        if heard is not None and time.monotonic() - heard <= self.early_seconds:
            return True
        event = self._sleeping[batch_id] = asyncio.Event()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), delay)
            return event.is_set()
        finally:
            if self._sleeping.get(batch_id) is event:
                del self._sleeping[batch_id]

    def _keep_early(self, batch_id: str) -> None:
        now = time.monotonic()
        self._early.pop(batch_id, None)
        self._early[batch_id] = now  # newest last: dicts keep insertion order
        while len(self._early) > self.early_max or (
            self._early and now - next(iter(self._early.values())) > self.early_seconds
        ):
            del self._early[next(iter(self._early))]
