"""Parsing and normalising a big results file a bounded chunk at a time (blocking).

The in-memory path (:func:`pairbatch.results.parse_jsonl` then
:func:`pairbatch.normalize.normalize_results`) holds every row of the file at once
(+340 MB for a 200 MB file, +1.5 GB for 1 GB). Here each :data:`CHUNK_BYTES` of input is
parsed, matched to its pairs by key (:class:`pairbatch.keyindex.KeyIndex`) and turned into
*candidate* rows (:mod:`pairbatch.chunk_rows`): what each line gives if it is its key's
last ("last line wins").

* One pass (the usual case): each chunk's valid last lines are written straight into
  the results file as a row group of their own (:mod:`pairbatch.parquet_append`: Polars'
  streaming sink kept about a byte a cell until the end, so its memory grew with the
  file); failed attempts (no answer text) are kept, and each chunk's answered pairs
  (4 bytes a line) too.
* If a key turns out to be answered in two chunks, the file is read again the two-pass
  way: candidate Parquet parts plus ``(_pair, _line)``, then each part read back and
  split by a mask of the whole file's last lines, again through the appender.

Every pair lands in exactly one of the two outputs as a non-duplicate, exactly as on the
in-memory path; only the row order differs (line order here, pair order there: the order
of rows carries no meaning, they are keyed).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final

import attrs
import polars as pl

from pairbatch.chunk_rows import (
    CandidatePlan,
    Parts,
    Segment,
    candidate_rows,
    failed_rows,
    unanswered_rows,
)
from pairbatch.errors import InputError
from pairbatch.keyindex import KeyIndex
from pairbatch.models import FileCheck
from pairbatch.normalize import (
    _VALID,
    coerce_pairs,
)
from pairbatch.outcomes import sink_file
from pairbatch.parquet_append import ParquetAppender
from pairbatch.readahead import ReadAhead
from pairbatch.results import (
    RESULT_SCHEMA,
    FastLine,
    LineParser,
    iter_row_chunks,
    rows_to_frame,
)

__all__ = ["CHUNK_BYTES", "Segment", "Settled", "settle_chunked"]

# Parts are written once and read once, next to the outputs: a fast codec rather than
# the default zstd (200 MB of results made 33 MB of lz4 parts).
_PART_COMPRESSION: Final = "lz4"
# Input bytes per chunk: a trade of time (Polars' fixed cost per call on a small frame)
# against memory (about three chunks are in flight with the read-ahead). At 1 GB of
# results, one row group a chunk: 1 MB 13 s +48 MB, 1.5 MB 9.4 s +52 MB, 2 MB 8.1 s
# +62 MB; two chunks a row group were faster but +52-71 MB, three +84-87 MB.
CHUNK_BYTES = 2 << 20


@attrs.frozen
class Settled:
    """The written files' records and the number of result lines read."""

    lines: int
    results: FileCheck
    failed_attempts: FileCheck


def settle_chunked(
    paths: Iterable[Path | None],
    parse_line: LineParser,
    fast_line: FastLine | None,
    segment: Segment,
    *,
    results_path: str | os.PathLike[str],
    failed_path: str | os.PathLike[str],
    block_bytes: int = CHUNK_BYTES,
) -> Settled:
    """Parse, normalise and write a segment's results files with memory bounded by
    ``block_bytes`` (a few chunks' rows), not by the files' size."""
    frame = coerce_pairs(segment.pairs).with_row_index("_pair")
    index = KeyIndex.of(frame)
    pair_side = frame.drop([c for c in RESULT_SCHEMA if c in frame.columns])
    plan = CandidatePlan(segment, frame.drop("_pair").head(0))
    target_dir = Path(results_path).parent
    target_dir.mkdir(parents=True, exist_ok=True)
    files = [Path(path) for path in paths if path is not None]
    for path in files:
        if not path.is_file():
            raise InputError(f"results file does not exist: {path}")

    def chunks() -> Iterator[pl.DataFrame]:
        tags = {"tag_prefix": segment.tag_prefix, "tag_suffix": segment.tag_suffix}
        for rows in iter_row_chunks(files, parse_line, fast_line, block_bytes=block_bytes):
            frame = rows_to_frame(rows, **tags)
            # Emptied, not just dropped: the generator above holds the list until its
            # next step, and its row tuples are a chunk's worth of Python strings.
            rows.clear()
            yield frame

    one = _OnePass(plan, index, pair_side)
    results = one.run(chunks(), results_path)
    if one.repeats_across_chunks():
        # A key answered in two chunks (rare: providers repeat a line seldom, and then
        # usually next to the first): the two-pass plan decides over the whole file.
        return _two_passes(chunks(), frame, index, pair_side, plan, results_path, failed_path)
    one.warn_stray()
    unanswered = unanswered_rows(_unanswered(frame, one.seen()), seg=segment)
    return Settled(
        lines=one.parts.lines,
        results=results,
        failed_attempts=_write_failed([*one.failed, unanswered.failed_attempts], failed_path),
    )


def _two_passes(
    chunks: Iterator[pl.DataFrame],
    frame: pl.DataFrame,
    index: KeyIndex,
    pair_side: pl.DataFrame,
    plan: CandidatePlan,
    results_path: str | os.PathLike[str],
    failed_path: str | os.PathLike[str],
) -> Settled:
    target_dir = Path(results_path).parent
    with tempfile.TemporaryDirectory(prefix=".pairbatch-parts-", dir=target_dir) as tmp:
        parts = Parts(Path(tmp))
        for raw in chunks:
            _write_part(raw, parts, index, pair_side, plan)
        parts.warn_stray(plan.segment)
        return _write_outputs(parts, frame, plan, results_path, failed_path)


@attrs.define
class _OnePass:
    """Results written straight from the parser into the results file, each chunk's
    rows a row group (:class:`pairbatch.parquet_append.ParquetAppender`). Each chunk's
    failed attempts (no answer text: ~200 B a row) are kept for the end, with the pair
    of every chunk's last lines to check that no key was answered in two chunks."""

    plan: CandidatePlan
    index: KeyIndex
    pair_side: pl.DataFrame
    parts: Parts = attrs.field(factory=lambda: Parts(Path()))
    failed: list[pl.DataFrame] = attrs.field(factory=list)
    pairs: list[pl.Series] = attrs.field(factory=list)

    def run(self, chunks: Iterator[pl.DataFrame], path: str | os.PathLike[str]) -> FileCheck:
        # Parsing and shaping a chunk hold the GIL; Polars writing the one before does
        # not. So the first run a chunk ahead in their own thread and the two overlap.
        # (Shaping in the writer's thread was slower, 10.6-13 s against 8-9 s at 1 GB:
        # its many short Polars calls each waited for the parser to let go of the GIL.)
        with ReadAhead(self._chunk(raw) for raw in chunks) as ahead:
            return _append_all(ahead, self.plan.result_schema, path)

    def _chunk(self, raw: pl.DataFrame) -> pl.DataFrame:
        found = candidate_rows(raw, self.parts, self.index, self.pair_side, self.plan)
        last = found.get_column("_pair").is_last_distinct()
        repeats = not last.all()
        chosen = found.filter(last) if repeats else found
        self.pairs.append(chosen.get_column("_pair"))
        if repeats or chosen.get_column("winner_pos").null_count():
            earlier = found.filter(~last).lazy()
            invalid, repeated = failed_rows(chosen.lazy().filter(~_VALID), earlier)
            # Empty frames are not kept: 1,000 chunks' worth grew the peak by ~20 MB.
            self.failed.extend(f for f in pl.collect_all([invalid, repeated]) if f.height)
            chosen = chosen.filter(_VALID)
        # (A chunk of answered last lines only, the usual case, needs no failed rows.)
        return chosen.select(self.plan.result_columns)

    def seen(self) -> pl.Series:
        if not self.pairs:
            return pl.Series("_pair", [], dtype=pl.UInt32)
        return pl.concat(self.pairs)

    def repeats_across_chunks(self) -> bool:
        # Sorted neighbours, not ``is_duplicated``: its hash table was +23 MB at 650,000.
        seen = self.seen().sort()
        return bool(seen.len() > 1 and (seen.slice(1) == seen.slice(0, seen.len() - 1)).any())

    def warn_stray(self) -> None:
        self.parts.warn_stray(self.plan.segment)


def _write_part(
    raw: pl.DataFrame,
    parts: Parts,
    index: KeyIndex,
    pair_side: pl.DataFrame,
    plan: CandidatePlan,
) -> None:
    candidates = candidate_rows(raw, parts, index, pair_side, plan)
    path = parts.directory / f"part-{len(parts.files):06d}.parquet"
    candidates.write_parquet(path, compression=_PART_COMPRESSION, statistics=False)
    parts.files.append(path)
    parts.keys.append(candidates.select("_pair", "_line"))


def _write_outputs(
    parts: Parts,
    frame: pl.DataFrame,
    plan: CandidatePlan,
    results_path: str | os.PathLike[str],
    failed_path: str | os.PathLike[str],
) -> Settled:
    seg = plan.segment
    # Lines are numbered in file order, so a pair's last line is its last occurrence;
    # whether a line is its pair's last is a mask by line number (a byte a line).
    none = pl.DataFrame(schema={"_pair": pl.UInt32, "_line": pl.UInt32})  # a file of no lines
    last = pl.concat([none, *parts.keys]).filter(pl.col("_pair").is_last_distinct())
    is_last = _mask(parts.lines, last.get_column("_line"))
    unanswered = unanswered_rows(_unanswered(frame, last.get_column("_pair")), seg=seg)

    # The parts are read back one at a time and their valid rows written through the
    # appender; failed attempts (no answer text) are kept for the end, as in one pass.
    # The streaming plans this replaces held about a byte a cell of the whole file
    # (+348 MB and 21.5 s at 1 GB with one repeated line).
    failed = [unanswered.failed_attempts]

    def valid() -> Iterator[pl.DataFrame]:
        for path in parts.files:
            part = pl.read_parquet(path)
            last_line = is_last.gather(part.get_column("_line"))
            chosen, earlier = part.filter(last_line), part.filter(~last_line)
            invalid, repeated = failed_rows(chosen.lazy(), earlier.lazy())
            failed.extend(f for f in pl.collect_all([invalid, repeated]) if f.height)
            yield chosen.filter(_VALID).select(plan.result_columns)

    results = _append_all(valid(), plan.result_schema, results_path)
    return Settled(
        lines=parts.lines, results=results, failed_attempts=_write_failed(failed, failed_path)
    )


def _mask(size: int, at: pl.Series) -> pl.Series:
    """``size`` booleans, true at the indexes ``at``."""
    return pl.repeat(False, size, eager=True).scatter(at, True)


def _unanswered(frame: pl.DataFrame, answered: pl.Series) -> pl.DataFrame:
    """The pairs (rows of ``frame``) not among the ``answered`` row numbers."""
    # A mask, not an anti join: the join hashed and copied every pair (+110 MB at 650,000).
    return frame.filter(~_mask(frame.height, answered))


def _write_failed(frames: list[pl.DataFrame], path: str | os.PathLike[str]) -> FileCheck:
    """The failed attempts file, written whole (atomically): its rows carry no answer."""
    failed = pl.concat(frames, rechunk=False)
    return sink_file(path, failed.write_parquet, failed.height)


def _append_all(
    frames: Iterable[pl.DataFrame], schema: pl.Schema, path: str | os.PathLike[str]
) -> FileCheck:
    """Write ``frames`` as the row groups of one Parquet file at ``path`` (atomically),
    one frame in memory at a time."""
    counted: list[int] = []

    def write(tmp: Path) -> None:
        appender = ParquetAppender(tmp, schema)
        try:
            for frame in frames:
                appender.append(frame)
        except BaseException:
            appender.abort()  # sink_file removes the partial file
            raise
        appender.close()
        counted.append(appender.rows)

    check = sink_file(path, write, 0)
    return attrs.evolve(check, rows=counted[0])
