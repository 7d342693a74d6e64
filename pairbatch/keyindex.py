"""Finding the pair row of a result line's key, for a chunk of keys at a time."""

from __future__ import annotations

import attrs
import polars as pl

# Pairs checked at a time when telling whether keys are submit's numbered ones.
_CHECK_SLICE = 1 << 16


@attrs.frozen
class KeyIndex:
    """Finds the pair row of a chunk's keys without a hash table of every pair.

    Keys as submit makes them (``<tag>-<segment>-<row>``, rows consecutive) give their
    row by arithmetic, checked against the stored key; any other keys are looked up by
    binary search in a sorted copy (16 bytes a pair: the strings are shared).
    """

    keys: pl.Series
    rows: pl.Series | None
    prefix: str | None = None
    first: int = 0

    @classmethod
    def of(cls, frame: pl.DataFrame) -> KeyIndex:
        keys = frame.get_column("custom_id")
        numbered = _numbering(keys)
        if numbered is not None:
            return cls(keys, None, *numbered)
        known = frame.select("custom_id", "_pair").drop_nulls("custom_id").sort("custom_id")
        return cls(known.get_column("custom_id"), known.get_column("_pair"))

    def lookup(self, wanted: pl.Series) -> pl.Series:
        """The pair row of each key (null for a key no pair has), as ``_pair``."""
        size = self.keys.len()
        if not size:
            return pl.Series("_pair", [None] * wanted.len(), dtype=pl.UInt32)
        # One plan, not eight eager calls: a chunk's lookup is a fixed cost per call.
        wanted_col = pl.col("custom_id")
        if self.prefix is not None:
            number = wanted_col.str.strip_prefix(self.prefix).cast(pl.Int64, strict=False)
            at = (number - self.first).clip(0, size - 1).fill_null(0).cast(pl.UInt32)
        else:
            at = pl.lit(self.keys).search_sorted(wanted_col, side="left").clip(0, size - 1)
        found = (pl.lit(self.keys).gather(at) == wanted_col).fill_null(False)
        rows = at if self.rows is None else pl.lit(self.rows).gather(at)
        frame = pl.DataFrame([wanted.alias("custom_id")])
        return frame.select(pl.when(found).then(rows).cast(pl.UInt32).alias("_pair")).to_series()


def _numbering(keys: pl.Series) -> tuple[str, int] | None:
    """``(prefix, first row)`` when ``keys`` are ``prefix + str(first + i)``."""
    head = keys.head(1).to_list()
    if not head or not isinstance(head[0], str) or "-" not in head[0]:
        return None
    prefix, _, number = head[0].rpartition("-")
    if not number.isdigit():
        return None
    prefix += "-"
    first = int(number)
    # In slices: the expected keys of every pair at once were a transient +30 MB at
    # 650,000 pairs.
    for start in range(0, keys.len(), _CHECK_SLICE):
        part = keys.slice(start, _CHECK_SLICE)
        low = first + start
        expected = pl.concat_str(
            [pl.lit(prefix), pl.int_range(low, low + part.len(), eager=True).cast(pl.Utf8)]
        )
        if not pl.select((expected == part).all()).item():
            return None
    return prefix, first
