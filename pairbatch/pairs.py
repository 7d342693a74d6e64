"""The pairs table: loading, validation, pair keys, request keys and splitting into segments."""

from __future__ import annotations

import io
import logging
import math
import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import polars as pl

from pairbatch._fs import atomic_writer
from pairbatch.errors import InputError
from pairbatch.parquet_small import read_small, small_parquet
from pairbatch.tables import read_table

log = logging.getLogger("pairbatch.pairs")

REQUIRED_COLUMNS = ("ID1", "text1", "ID2", "text2")
# Columns pairbatch derives; an input that already has them gets them recomputed.
KEY_COLUMNS = ("custom_id", "A_id", "B_id", "ordered_key", "unordered_key", "pair_uid")

_CUSTOM_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_RUN_TAG_RE = re.compile(r"^[A-Za-z0-9]{1,24}$")

PairsSource = pl.DataFrame | str | os.PathLike[str]


# Up to this many rows a Parquet file is written plain (no compression, no column
# statistics): for a small segment's file they were 40 % of the write (1.25 -> 0.77 ms
# for 2 rows of results) and saved nothing; readers cannot tell the difference.
PLAIN_PARQUET_ROWS = 1000


def write_parquet(frame: pl.DataFrame, handle: BinaryIO) -> None:
    """``frame`` as Parquet into ``handle``, plain when it is small (and, for the few
    rows of a small segment, by :mod:`pairbatch.parquet_small`, without Polars' writer)."""
    small = small_parquet(frame)
    if small is not None:
        handle.write(small)
    elif frame.height <= PLAIN_PARQUET_ROWS:
        frame.write_parquet(handle, compression="uncompressed", statistics=False)
    else:
        frame.write_parquet(handle)


def separator_hint(columns: list[str], missing: Sequence[str] = ()) -> str:
    """What a table's columns suggest when required ones are missing: a table read as
    one column is likely another separator's; ``id1`` for ``ID1`` a matter of case."""
    by_case = {c.casefold(): c for c in columns}
    near = [f"{by_case[m.casefold()]!r} for {m!r}" for m in missing if m.casefold() in by_case]
    if near:
        return f" (found {', '.join(near)}: column names are case-sensitive)"
    if len(columns) == 1:
        for sep in (";", "\t", "|"):
            if sep in columns[0]:
                return f" (it was read as one column {columns[0]!r}: is it {sep!r}-separated?)"
    return ""


def _check_column_names(columns: Sequence[str], source: str) -> None:
    """Refuse column names Polars reads as patterns: ``*`` selects every column and
    ``^...$`` is a regex, so such a column would be dropped, or duplicated, by the
    selections that carry extra pair columns into the results."""
    for name in columns:
        if name == "*" or (len(name) > 1 and name.startswith("^") and name.endswith("$")):
            raise InputError(
                f"{source}: column name {name!r} is not supported (Polars reads it as a "
                "pattern); rename the column"
            )


def load_pairs(pairs: PairsSource) -> pl.DataFrame:
    """Read and validate a pairs table (a Polars frame, or a CSV / Parquet path).

    IDs are kept as strings exactly as given: any characters are fine. Errors name the
    missing column, or the column and 1-based row of the first bad value.
    """
    source = "pairs"
    if isinstance(pairs, pl.DataFrame):
        frame = pairs
    elif isinstance(pairs, str | os.PathLike):
        path = Path(pairs)
        source = str(path)
        frame = _read_table(path)
    else:
        raise InputError(
            f"pairs must be a polars DataFrame or a path to a CSV/Parquet file, "
            f"not {type(pairs).__name__}"
        )
    _check_column_names(frame.columns, source)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(
            f"{source} must contain columns: {', '.join(REQUIRED_COLUMNS)}. "
            f"Missing: {', '.join(missing)}{separator_hint(frame.columns, missing)}"
        )
    if frame.height == 0:
        raise InputError(f"{source} has no rows")
    casts = []
    for column in REQUIRED_COLUMNS:
        dtype = frame.schema[column]
        if dtype not in (pl.Utf8, pl.Null) and not dtype.is_numeric():
            raise InputError(f"{source}: column {column!r} must hold strings, not {dtype}")
        casts.append(pl.col(column).cast(pl.Utf8))
    frame = frame.with_columns(casts)
    for column in REQUIRED_COLUMNS:
        nulls = frame.get_column(column).is_null()
        if nulls.any():
            row = int(nulls.arg_max() or 0) + 1
            raise InputError(f"{source}: column {column!r} is missing a value at row {row}")
    for column in ("ID1", "ID2"):
        empty = frame.get_column(column).str.len_chars() == 0
        if empty.any():
            row = int(empty.arg_max() or 0) + 1
            raise InputError(f"{source}: column {column!r} is empty at row {row}")
    if "pair_uid" in frame.columns:
        frame = frame.with_columns(pl.col("pair_uid").cast(pl.Utf8))
    stale = [c for c in KEY_COLUMNS if c in frame.columns and c != "pair_uid"]
    return frame.drop(stale)


def _read_table(path: Path) -> pl.DataFrame:
    return read_table(path, "pairs")


def check_verdicts(frame: pl.DataFrame, source: str = "results") -> None:
    """Refuse a verdict (``better_id``, null for none) naming neither ``ID1`` nor ``ID2``,
    or a row comparing an ID with itself, naming its 1-based row."""
    ids = frame.select(pl.col("ID1", "ID2", "better_id").cast(pl.Utf8))
    named = pl.col("better_id").is_not_null()
    wrong = named & (pl.col("better_id") != pl.col("ID1")) & (pl.col("better_id") != pl.col("ID2"))
    for problem, what in (
        (wrong, "better_id {better_id!r} is neither ID1 {ID1!r} nor ID2 {ID2!r}"),
        (named & (pl.col("ID1") == pl.col("ID2")), "compares ID {ID1!r} with itself"),
    ):
        hits = ids.with_row_index("_row", offset=1).filter(problem)
        if hits.height:
            row = hits.row(0, named=True)
            raise InputError(f"{source}: row {row['_row']}: " + what.format(**row))


def escape_id(value: str) -> str:
    """One ID as it appears inside a key: ``\\`` and ``:`` escaped with a backslash."""
    return value.replace("\\", "\\\\").replace(":", "\\:")


def pair_key(first: str, second: str) -> str:
    """The ordered key of two IDs, ``first:second`` with each ID escaped.

    Escaping makes the key injective: the first unescaped ``:`` is the separator, so
    ``("x:y", "z")`` gives ``x\\:y:z`` and ``("x", "y:z")`` gives ``x:y\\:z``. IDs without
    ``:`` or ``\\`` keep the old ``ID1:ID2`` form, so old and new runs still join for them.
    """
    return f"{escape_id(first)}:{escape_id(second)}"


def unordered_pair_key(first: str, second: str) -> str:
    """The key of the unordered pair: the two IDs sorted by code point, then :func:`pair_key`."""
    lo, hi = (first, second) if first <= second else (second, first)
    return pair_key(lo, hi)


def split_pair_key(key: str) -> tuple[str, str]:
    """Invert :func:`pair_key`; raises :class:`InputError` for a string that is not a key."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(key)
    for char in chars:
        if char == "\\":
            current.append(next(chars, ""))
        elif char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    if len(parts) != 2 or pair_key(parts[0], parts[1]) != key:
        raise InputError(f"not a pair key: {key!r}")
    return parts[0], parts[1]


def _escaped(column: str | pl.Expr) -> pl.Expr:
    expr = pl.col(column) if isinstance(column, str) else column
    # An all-null ID column arrives typed Null; the string functions need Utf8.
    return (
        expr.cast(pl.Utf8)
        .str.replace_all("\\", "\\\\", literal=True)
        .str.replace_all(":", "\\:", literal=True)
    )


def ordered_key_expr(first: str | pl.Expr = "ID1", second: str | pl.Expr = "ID2") -> pl.Expr:
    """:func:`pair_key` as a Polars expression over two ID columns."""
    return pl.concat_str([_escaped(first), _escaped(second)], separator=":")


def unordered_key_expr(first: str | pl.Expr = "ID1", second: str | pl.Expr = "ID2") -> pl.Expr:
    """:func:`unordered_pair_key` as a Polars expression (code-point order, locale-free)."""
    one = pl.col(first) if isinstance(first, str) else first
    two = pl.col(second) if isinstance(second, str) else second
    return ordered_key_expr(pl.min_horizontal(one, two), pl.max_horizontal(one, two))


def with_pair_keys(pairs: pl.DataFrame) -> pl.DataFrame:
    """Add ``A_id, B_id, ordered_key, unordered_key, pair_uid`` (reference §4.1).

    Keys use the escaped, injective form of :func:`pair_key` (the reference's plain
    ``ID1:ID2`` join lets ``x:y``+``z`` and ``x``+``y:z`` collide). ``unordered_key`` sorts
    the two IDs by code point (locale-free, so it is the same on every machine);
    ``pair_uid`` is the given one when present and non-empty, else
    ``<unordered_key>#<occurrence>`` numbered in row order over the whole input.
    Stored keys of older runs may be in the colliding form: analysis code recomputes
    keys from ``ID1``/``ID2`` with these functions instead of trusting stored ones.
    """
    frame = pairs.with_columns(
        pl.col("ID1").alias("A_id"),
        pl.col("ID2").alias("B_id"),
        ordered_key_expr().alias("ordered_key"),
        unordered_key_expr().alias("unordered_key"),
    )
    occurrence = pl.int_range(1, pl.len() + 1).over("unordered_key").cast(pl.Utf8)
    computed = pl.concat_str([pl.col("unordered_key"), occurrence], separator="#")
    if "pair_uid" in frame.columns:
        given = pl.col("pair_uid")
        uid = (
            pl.when(given.is_null() | (given.str.len_chars() == 0)).then(computed).otherwise(given)
        )
    else:
        uid = computed
    return frame.with_columns(uid.alias("pair_uid"))


def segment_sizes(
    n: int, *, batch_size: int | None = None, n_segments: int | None = None
) -> list[int]:
    """Sizes of the contiguous segments (reference §5.1, without empty segments)."""
    if batch_size is not None and n_segments is not None:
        raise InputError("Specify only one of 'batch_size' or 'n_segments'.")
    if batch_size is None and n_segments is None:
        raise InputError("Either 'batch_size' or 'n_segments' must be supplied.")
    if n <= 0:
        raise InputError("pairs has no rows")
    if batch_size is not None:
        _check_positive_int("batch_size", batch_size)
        count = math.ceil(n / batch_size)
        return [batch_size] * (count - 1) + [n - batch_size * (count - 1)]
    assert n_segments is not None
    _check_positive_int("n_segments", n_segments)
    if n_segments > n:
        # The reference submits empty batches here; providers reject those, so don't.
        log.warning("n_segments=%d exceeds the %d pairs; using %d segments", n_segments, n, n)
        n_segments = n
    base, extra = divmod(n, n_segments)
    return [base + 1 if i < extra else base for i in range(n_segments)]


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"'{name}' must be a positive integer, got {value!r}")


def split_pairs(
    pairs: pl.DataFrame, *, batch_size: int | None = None, n_segments: int | None = None
) -> list[pl.DataFrame]:
    """Contiguous segments in input order."""
    sizes = segment_sizes(pairs.height, batch_size=batch_size, n_segments=n_segments)
    out, offset = [], 0
    for size in sizes:
        out.append(pairs.slice(offset, size))
        offset += size
    return out


def new_run_tag() -> str:
    """A short random tag that marks every batch and request of one submission."""
    return "pb" + secrets.token_hex(5)


def custom_id(run_tag: str, segment_index: int, row: int) -> str:
    """A request key valid for every provider: ``[A-Za-z0-9_-]{1,64}``, unique in the run.

    It carries no sample IDs: results are mapped back through the stored pairs.
    """
    if not _RUN_TAG_RE.match(run_tag):
        raise InputError(f"run tag must be 1-24 letters or digits, got {run_tag!r}")
    key = f"{run_tag}-{segment_index}-{row}"
    assert _CUSTOM_ID_RE.match(key)
    return key


def assign_custom_ids(
    segment: pl.DataFrame, run_tag: str, segment_index: int, first_row: int
) -> pl.DataFrame:
    """Give each pair of a segment its request key (rows numbered over the whole input)."""
    custom_id(run_tag, segment_index, first_row)  # validates the tag once
    prefix = f"{run_tag}-{segment_index}-"
    rows = pl.int_range(first_row, first_row + pl.len()).cast(pl.Utf8)
    return segment.with_columns(pl.concat_str([pl.lit(prefix), rows]).alias("custom_id")).select(
        "custom_id", pl.exclude("custom_id")
    )


def write_segment_pairs(segment: pl.DataFrame, path: str | os.PathLike[str]) -> None:
    """Store a segment's pairs (with keys) as Parquet, atomically."""
    with atomic_writer(path) as handle:
        write_parquet(segment, handle)


def read_segment_pairs(path: str | os.PathLike[str], data: bytes | None = None) -> pl.DataFrame:
    """Read a stored segment; CSV is accepted too for hand-made registries.

    ``data``: the file's bytes, when the caller has read them already (to check them).
    Polars parses a small Parquet file held in memory in half the CPU of one it opens
    itself (0.39 vs 0.71 ms for a 2-pair segment's file, measured), and
    :func:`~pairbatch.parquet_small.read_small` one it wrote itself in a third of that
    (0.24 vs 0.67 ms). The caller checks the bytes against their record either way.
    """
    target = Path(path)
    if data is None and not target.exists():
        raise InputError(f"pairs file not found: {target}")
    source: Path | io.BytesIO = target if data is None else io.BytesIO(data)
    if target.suffix.lower() == ".csv":
        return pl.read_csv(source, infer_schema=False)
    small = None if data is None else read_small(data)  # a small segment's own file
    if small is not None:
        return small
    # One chunk per column, not one per row group: every gather from a many-chunk
    # column costs about the column's length, and a big segment's results are matched
    # to their pairs by a gather per chunk of lines (1 GB of results against 654,000
    # pairs in 5 row groups: 7.1-7.5 s, 6.3-6.8 s rechunked). Only the 16-byte string
    # views are copied (the text bytes are shared; +96 MB at 654,000 pairs, freed for
    # the parse to reuse); one row group a file would cost more at submit instead.
    return pl.read_parquet(source).rechunk()


def check_samples(samples: pl.DataFrame, source: str = "samples") -> pl.DataFrame:
    """Validate an ``ID, text`` table: both columns, no missing values, no duplicate IDs.

    Returns the two columns as strings; errors name the 1-based row.
    """
    missing = [c for c in ("ID", "text") if c not in samples.columns]
    if missing:
        raise InputError(f"{source} must have columns 'ID' and 'text'")
    frame = samples.select(pl.col("ID").cast(pl.Utf8), pl.col("text").cast(pl.Utf8))
    for column in ("ID", "text"):
        nulls = frame.get_column(column).is_null()
        if nulls.any():
            row = int(nulls.arg_max() or 0) + 1
            raise InputError(f"{source}: column {column!r} is missing a value at row {row}")
    dup = frame.get_column("ID").is_duplicated()
    if dup.any():
        rows = [i + 1 for i in dup.arg_true().to_list()]
        value = frame.get_column("ID")[rows[0] - 1]
        raise InputError(
            f"{source}: duplicate ID {value!r} at rows {', '.join(map(str, rows[:5]))}"
        )
    return frame


def check_no_self_pairs(pairs: pl.DataFrame, source: str = "pairs") -> None:
    """Raise naming the first row whose ``ID1`` equals its ``ID2``."""
    same = pairs.get_column("ID1") == pairs.get_column("ID2")
    if same.any():
        row = int(same.arg_max() or 0) + 1
        raise InputError(
            f"{source}: row {row} pairs ID {pairs.get_column('ID1')[row - 1]!r} with itself"
        )


def make_pairs(samples: pl.DataFrame) -> pl.DataFrame:
    """Every unordered pair of a ``ID, text`` table, in input order (reference ``make_pairs``).

    Unlike the reference, duplicate IDs are an error (they would make self-pairs).
    """
    frame = check_samples(samples)
    if frame.height < 2:
        raise InputError("At least two samples are required to create pairs.")
    indexed = frame.with_row_index("i")
    left = indexed.rename({"ID": "ID1", "text": "text1", "i": "i1"})
    right = indexed.rename({"ID": "ID2", "text": "text2", "i": "i2"})
    return (
        left.join(right, how="cross")
        .filter(pl.col("i1") < pl.col("i2"))
        .sort("i1", "i2")
        .select("ID1", "text1", "ID2", "text2")
    )


def sample_texts() -> pl.DataFrame:
    """The short texts bundled for the demo and tutorials (``ID, text``)."""
    return pl.read_csv(Path(__file__).parent / "data" / "sample_texts.csv")
