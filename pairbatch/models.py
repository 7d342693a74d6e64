"""Domain objects shared by every layer: providers, batch states and jobs."""

from __future__ import annotations

import collections
import enum
import functools
import itertools
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import attrs

_T = TypeVar("_T", bound=attrs.AttrsInstance)


class Provider(enum.StrEnum):
    """A batch API pairbatch can talk to."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    GEMINI = "gemini"

    @classmethod
    def parse(cls, value: str | Provider) -> Provider:
        """Case-insensitive lookup with an error that lists the valid names."""
        if isinstance(value, Provider):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            valid = ", ".join(p.value for p in cls)
            raise ValueError(f"unknown provider {value!r}; should be one of: {valid}") from None


class BatchState(enum.StrEnum):
    """A provider's batch status mapped onto one vocabulary.

    ``raw`` provider strings (``validating``, ``ended``, ``BATCH_STATE_RUNNING`` ...) are kept
    alongside in :class:`BatchStatus`; this enum is what the engine decides on.
    """

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self not in (BatchState.PENDING, BatchState.RUNNING)


@attrs.frozen
class RequestCounts:
    """How many requests of a batch are in each bucket, as the provider reports them."""

    total: int | None = None
    succeeded: int | None = None
    failed: int | None = None
    processing: int | None = None


@attrs.frozen
class BatchStatus:
    """One poll's answer, normalised. ``raw_state`` is the provider's own word."""

    batch_id: str
    state: BatchState
    raw_state: str
    counts: RequestCounts = attrs.field(factory=RequestCounts)
    created_at: datetime | None = None
    ended_at: datetime | None = None
    # Where the results live, when the provider says so (file ids, URLs, inline flags).
    output_ref: str | None = None
    error_ref: str | None = None
    # Set by a provider whose own word does not say how a batch ended (Anthropic's
    # "ended" covers success, expiry and cancellation alike).
    ending: str | None = None
    # The provider's own batch-level failure reason(s), e.g. OpenAI ``errors.data[]``
    # ("duplicate_custom_id: ... (line 21)") or a Gemini operation's ``error``.
    error: str | None = None
    # The provider sent a state pairbatch does not know. ``state`` is then ``RUNNING``
    # (or what ``done``/the output tell); the engine should stop polling such a batch
    # once the completion window plus a grace period has passed, and treat it as failed.
    unknown_state: bool = False
    # Refused before it ran because the provider's queue was full (OpenAI's
    # ``token_limit_exceeded``): nothing was paid and the segment may be sent again.
    queue_full: bool = False

    @property
    def outcome(self) -> str:
        """How the batch ended, for messages and ``batch_failures``."""
        return self.ending or self.raw_state


@attrs.frozen
class Candidate:
    """A provider batch that may be the one a segment's create made.

    ``proven`` means the batch itself carries this run's tag and this segment (OpenAI
    metadata, Gemini display name, an Anthropic result line's custom_id prefix); an
    unproven candidate is one that cannot be told apart yet (a running Anthropic batch
    of the same size), never a reason to adopt.
    """

    batch_id: str
    proven: bool
    detail: str = ""


class JobStatus(enum.StrEnum):
    """Where a job is in pairbatch's own lifecycle (the registry's ``status`` column)."""

    INTENT = "intent"  # files written, no create sent yet: safe to create
    CREATING = "creating"  # a create was sent (or about to be); its batch must be found
    SUBMIT_FAILED = "submit_failed"
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    ERROR = "error"  # a permanent client-side error (e.g. 404 batch not found)

    @classmethod
    def from_state(cls, state: BatchState) -> JobStatus:
        return cls(state.value)


def _to_provider(value: str | Provider) -> Provider:
    return Provider.parse(value)


@attrs.frozen
class FileCheck:
    """What a per-job file held when pairbatch wrote it: checked before it is trusted.

    ``name`` is the file name inside the run folder; ``rows`` the pairs or lines it held;
    ``sha256`` is kept for the files that are sent to a provider (the request file and
    the pairs it was built from), where a changed byte would be paid for.
    """

    name: str
    size: int
    rows: int | None = None
    sha256: str | None = None

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"name": self.name, "size": self.size}
        if self.rows is not None:
            out["rows"] = self.rows
        if self.sha256 is not None:
            out["sha256"] = self.sha256
        return out


def _to_files(value: object) -> tuple[FileCheck, ...]:
    if not value:
        return ()
    out = []
    for item in value:  # type: ignore[attr-defined]
        if isinstance(item, FileCheck):
            out.append(item)
        elif isinstance(item, dict):
            out.append(FileCheck(**item))
        else:
            raise ValueError(f"not a file record: {item!r}")
    return tuple(out)


def utcnow() -> datetime:
    return datetime.now(UTC)


@attrs.frozen(kw_only=True)
class Job:
    """One segment of pairs sent as one provider batch.

    The first nine fields are the reference registry's columns; the rest are pairbatch's
    additions. Jobs are immutable: every transition is an :func:`attrs.evolve`, recorded
    in the registry before the engine goes on.
    """

    segment_index: int
    provider: Provider = attrs.field(converter=_to_provider)
    model: str
    batch_id: str | None = None
    batch_input_path: str
    batch_output_path: str
    csv_path: str
    pairs_path: str | None = None
    done: bool = False
    status: JobStatus = JobStatus.PENDING
    raw_status: str | None = None
    n_pairs: int = 0
    run_tag: str = ""
    submitted_at: datetime | None = None
    updated_at: datetime | None = None
    error: str | None = None
    #: What the job's own files held when written (see :class:`FileCheck`).
    files: tuple[FileCheck, ...] = attrs.field(default=(), converter=_to_files)

    def file_check(self, path: str | Path | None) -> FileCheck | None:
        """The record of the file at ``path``, if one was made."""
        if path is None:
            return None
        name = _file_name(path) if isinstance(path, str) else path.name
        return next((f for f in self.files if f.name == name), None)

    def with_files(self, *checks: FileCheck) -> tuple[FileCheck, ...]:
        """``files`` with ``checks`` replacing any records of the same names."""
        names = {c.name for c in checks}
        return tuple(f for f in self.files if f.name not in names) + checks

    def with_outcome_files(self, *checks: FileCheck) -> tuple[FileCheck, ...]:
        """``files`` with the records of the settled outputs (results, their CSV, failed
        attempts) replaced by ``checks``: an output a new settle did not write (no rows)
        keeps no stale record."""
        outputs = {_file_name(p) for p in (self.results_path, self.failed_path, self.csv_path) if p}
        names = outputs | {c.name for c in checks}
        return tuple(f for f in self.files if f.name not in names) + checks

    @property
    def results_path(self) -> str:
        """Parquet copy of the normalised results, written whatever ``write_results_csv`` says."""
        return _sibling(self.batch_output_path, "results.parquet")

    @property
    def failed_path(self) -> str:
        """Parquet copy of the segment's failed attempts."""
        return _sibling(self.batch_output_path, "failed.parquet")

    @property
    def error_output_path(self) -> str:
        """Where OpenAI's error file is stored next to the output file."""
        return _sibling(self.batch_output_path, "errors.jsonl")

    def transition(self, **changes: object) -> Job:
        """A copy with ``changes`` applied and ``updated_at`` stamped."""
        changes.setdefault("updated_at", utcnow())
        return attrs.evolve(self, **changes)  # type: ignore[arg-type]


def build_unchecked(cls: type[_T], count: int, columns: Mapping[str, Sequence[object]]) -> list[_T]:
    """``count`` instances of the frozen, slotted attrs class ``cls``, field by field from
    ``columns`` (one sequence per field, ``count`` long), without calling ``__init__``.

    For readers that have already validated and converted every value to the field's
    type (e.g. the registry's columnar reader): ``__init__`` costs ~3 µs a job, most of
    it converters and frozen ``__setattr__`` calls that would only repeat that work.
    Values are stored as given, so passing an unconverted value (a ``str`` for an enum,
    a list for a tuple) makes an object ``__init__`` would not have made.
    """
    names = [field.name for field in attrs.fields(cls)]
    if set(columns) != set(names) or any(len(columns[n]) != count for n in names):
        raise ValueError(f"build_unchecked needs {count} values for each of {names}")
    objects: list[_T] = list(map(object.__new__, itertools.repeat(cls, count)))
    consume = collections.deque[object](maxlen=0).extend
    for name in names:
        # The slot's own descriptor sets the value below the frozen class's __setattr__;
        # map() over it runs the whole column in C.
        consume(map(cls.__dict__[name].__set__, objects, columns[name]))
    return objects


# Cached: a job's derived paths are asked for several times in each of its transitions,
# and building them with pathlib was ~14 us a call, ~0.2 ms of CPU a finished job (a
# pure function of two strings, so a bounded cache cannot go stale).
@functools.lru_cache(maxsize=8192)
def _sibling(output_path: str, suffix: str) -> str:
    """``batch_07_output.jsonl`` -> ``batch_07_<suffix>`` in the same folder."""
    path = Path(output_path)
    stem = path.name
    for ending in ("_output.jsonl", ".jsonl"):
        if stem.endswith(ending):
            stem = stem[: -len(ending)]
            break
    return str(path.with_name(f"{stem}_{suffix}"))


@functools.lru_cache(maxsize=8192)
def _file_name(path: str) -> str:
    return Path(path).name
