"""Progress events: what the engine tells apps, progress displays and logs as it goes."""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Callable, Iterator
from datetime import datetime

import attrs

from pairbatch.models import Job, utcnow


class EventKind(enum.StrEnum):
    SUBMITTED = "submitted"  # a batch was created (or adopted) for a segment
    SUBMIT_FAILED = "submit_failed"
    POLLED = "polled"  # a status poll answered; ``detail`` is the provider's state
    COMPLETED = "completed"  # results parsed and persisted; the job is done
    BATCH_FAILED = "batch_failed"  # the batch ended failed / expired / cancelled
    ERROR = "error"  # a permanent error on this job; the others go on
    RETRY = "retry"  # a transient error; the job will poll again


@attrs.frozen
class Event:
    kind: EventKind
    job: Job
    detail: str | None = None
    n_results: int = 0
    n_failed: int = 0
    at: datetime = attrs.field(factory=utcnow)


EventHandler = Callable[[Event], None]


class Emitter:
    """Fans events out to an optional app callback; a failing callback never stops a run."""

    def __init__(self, handler: EventHandler | None, log: logging.Logger) -> None:
        self._handler = handler
        self._log = log

    def __call__(self, event: Event) -> None:
        if self._handler is None:
            return
        try:
            self._handler(event)
        except Exception:
            self._log.exception("on_event callback failed for %s", event.kind)


@contextlib.contextmanager
def verbose_logging(verbose: bool) -> Iterator[None]:
    """``verbose=True`` shows INFO messages even in a script that set up no logging."""
    logger = logging.getLogger("pairbatch")
    handler = None
    if verbose and not logging.getLogger().handlers and not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    previous = logger.level
    if verbose and (logger.level == logging.NOTSET or logger.level > logging.INFO):
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.setLevel(previous)
        if handler is not None:
            logger.removeHandler(handler)
