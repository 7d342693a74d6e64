"""Reading a user's table (CSV, TSV or Parquet) with errors a user can act on.

Polars' CSV errors are written for Polars users: which reader option to set
(``truncate_ragged_lines``, ``infer_schema_length``...), often with no row number. A
file that fails is read again with the standard ``csv`` module, strictly, only to say
*where* it breaks: the line of an unbalanced quote, or the row whose fields do not
match the header. The table itself is always Polars' reading.
"""

from __future__ import annotations

import csv
from pathlib import Path

import polars as pl

from pairbatch.errors import InputError, first_line

#: The file types a user's table may be.
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")


def read_table(path: Path, what: str) -> pl.DataFrame:
    """``path`` as a frame, every CSV value as written (IDs such as ``007`` stay text).

    ``what`` names the file in errors (``"pairs"``: "pairs file not found: ..."). A
    file that cannot be read raises :class:`InputError` in one line naming the file and,
    for a CSV, the line or row where it breaks.
    """
    if not path.exists():
        raise InputError(f"{what} file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InputError(f"{what} file {path} must end in .csv, .tsv or .parquet")
    try:
        if suffix == ".parquet":
            return pl.read_parquet(path)
        separator = "\t" if suffix == ".tsv" else ","
        return pl.read_csv(path, separator=separator, infer_schema=False)
    except (pl.exceptions.PolarsError, OSError) as exc:
        reason = None if suffix == ".parquet" else csv_problem(path, separator)
        raise InputError(f"cannot read {what} file {path}: {reason or first_line(exc)}") from exc


def csv_problem(path: Path, separator: str) -> str | None:
    """Where a CSV breaks, read strictly: a byte that is not UTF-8, a quote left open,
    or a row of the wrong width. ``None`` when this reading finds nothing wrong (the
    caller then gives Polars' own reason)."""
    try:
        with path.open("rb") as raw:
            for number, line in enumerate(raw, start=1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    byte = line[exc.start : exc.start + 1].hex()
                    where = f"byte {exc.start + 1} of the line"
                    return f"line {number} is not UTF-8 text (0x{byte} at {where})"
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle, delimiter=separator, strict=True)
            header: list[str] | None = None
            number, start = 0, 1  # the row being read, and the line it starts on
            try:
                for row in reader:
                    if header is None:
                        header = row
                    elif row and len(row) != len(header):
                        return (
                            f"row {number} (line {reader.line_num}) has {len(row)} "
                            f"field(s), the header has {len(header)}"
                        )
                    number, start = number + 1, reader.line_num + 1
            except csv.Error as exc:
                # An open quote runs to the end of the file: name where its row began.
                return f"the row starting at line {start}: {exc} (is a quote left open?)"
    except OSError:
        return None
    return None
