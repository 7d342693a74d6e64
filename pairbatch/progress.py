"""A live, low-overhead progress display fed by engine events.

On a terminal it redraws one status line (at most ``refresh`` times a second); elsewhere
it writes a plain line per finished job. Apps that want their own UI pass ``on_event``
to the engine instead and never use this class.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import TextIO

from pairbatch.events import Event, EventKind
from pairbatch.models import JobStatus


class ProgressDisplay:
    def __init__(
        self,
        stream: TextIO,
        *,
        total_jobs: int,
        counters: Callable[[], dict[str, int]] | None = None,
        refresh: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._tty = bool(getattr(stream, "isatty", lambda: False)())
        self._total = total_jobs
        self._counters = counters
        self._min_gap = 1.0 / refresh
        self._clock = clock
        self._last_draw = 0.0
        self._state: dict[int, tuple[str, str]] = {}
        self.results = 0
        self.failed = 0
        # The newest reason a job could not go on (an unreachable provider, a batch that
        # cannot be told apart yet), shown until that job moves again.
        self._issues: dict[int, str] = {}

    def __call__(self, event: Event) -> None:
        job = event.job
        provider = job.provider.value
        if event.kind in (EventKind.COMPLETED, EventKind.BATCH_FAILED):
            self._state[job.segment_index] = (
                provider,
                "done" if job.status is JobStatus.SUCCEEDED else "failed",
            )
            self.results += event.n_results
            self.failed += event.n_failed
            if not self._tty:
                self._stream.write(
                    f"segment {job.segment_index} ({provider}, {job.batch_id}): {event.detail}; "
                    f"{event.n_results} results, {event.n_failed} failed attempts\n"
                )
        elif event.kind in (EventKind.ERROR, EventKind.SUBMIT_FAILED):
            self._state[job.segment_index] = (provider, "error")
            if not self._tty:
                self._stream.write(
                    f"segment {job.segment_index} ({provider}): error: {event.detail}\n"
                )
        elif event.kind is EventKind.RETRY:
            self._state.setdefault(job.segment_index, (provider, "running"))
            reason = " ".join((event.detail or "").split())
            if self._issues.get(job.segment_index) != reason and not self._tty:
                self._stream.write(f"segment {job.segment_index} ({provider}): waiting: {reason}\n")
            self._issues[job.segment_index] = reason
        else:
            self._state.setdefault(job.segment_index, (provider, "running"))
            if event.kind is EventKind.POLLED:
                self._issues.pop(job.segment_index, None)
        if self._tty:
            now = self._clock()
            if now - self._last_draw >= self._min_gap or event.kind is EventKind.COMPLETED:
                self._last_draw = now
                self._stream.write("\r" + self.line() + "\033[K")
        self._stream.flush()

    def line(self) -> str:
        per: dict[str, Counter[str]] = {}
        for provider, state in self._state.values():
            per.setdefault(provider, Counter())[state] += 1
        parts = []
        for provider in sorted(per):
            c = per[provider]
            failed = c["failed"] + c["error"]
            parts.append(f"{provider} {c['done']} done/{c['running']} running/{failed} failed")
        done = sum(1 for _, s in self._state.values() if s != "running")
        text = f"[{done}/{self._total} jobs] " + " | ".join(parts) + f" | {self.results} results"
        if self._counters is not None:
            counts = self._counters()
            text += f" | {counts.get('429s', 0)} x 429, {counts.get('retries', 0)} retries"
        if self._issues:
            segment = max(self._issues)
            text += f" | segment {segment}: {self._issues[segment][:60]}"
        return text

    def close(self) -> None:
        if self._tty:
            self._stream.write("\r" + self.line() + "\033[K\n")
            self._stream.flush()
