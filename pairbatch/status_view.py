"""``pairbatch status`` as text: one line per job that fits an 80-column terminal.

A run of more than :data:`LIST_LIMIT` jobs gets a count per provider and state first,
then only the jobs that need a look (unfinished or not succeeded), at most
:data:`LIST_LIMIT` of them: 100,000 lines of "succeeded" tell nobody anything (and took
3 s to format). ``show_all`` lists every job.
"""

from __future__ import annotations

import polars as pl

WIDTH = 80
LIST_LIMIT = 50
_ID = 16  # short batch ids: head…tail, enough to tell batches of one run apart


def _short(value: str | None, width: int) -> str:
    if not value:
        return "-"
    if len(value) <= width:
        return value
    head = (width - 1) * 2 // 3
    return value[:head] + "…" + value[-(width - 1 - head) :]


def _clip(value: str | None, width: int) -> str:
    text = " ".join((value or "").split())
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _num(value: object) -> str:
    return "-" if value is None else str(value)


def render(table: pl.DataFrame, *, wide: bool = False, show_all: bool = False) -> str:
    """The status table as aligned text; ``wide`` keeps full batch ids and errors."""
    done = int(table["done"].sum()) if table.height else 0
    footer = f"{done} of {table.height} job(s) done"
    if show_all or table.height <= LIST_LIMIT:
        return "\n".join([*_job_lines(table, wide), footer])
    counts = (
        table.group_by("provider", "state")
        .agg(pl.len().alias("jobs"), pl.col("pairs").sum(), pl.col("results", "failed").sum())
        .sort("provider", "state")
    )
    width = max(len(str(v)) for v in [*counts["state"].to_list(), "state"])
    lines = [
        f"{'provider':<10}{'state':<{width + 2}}{'jobs':>8}{'pairs':>10}{'res':>10}{'fail':>8}"
    ]
    for row in counts.iter_rows(named=True):
        lines.append(
            f"{row['provider']:<10}{row['state']:<{width + 2}}{row['jobs']:>8}"
            f"{row['pairs']:>10}{row['results']:>10}{row['failed']:>8}"
        )
    look = table.filter(~pl.col("done") | (pl.col("status") != "succeeded"))
    if look.height:
        lines += ["", f"jobs to look at (unfinished or not succeeded): {look.height}"]
        lines += _job_lines(look.head(LIST_LIMIT), wide)
        if look.height > LIST_LIMIT:
            lines.append(f"... {look.height - LIST_LIMIT} more; --all lists every job")
    return "\n".join([*lines, footer])


def _job_lines(table: pl.DataFrame, wide: bool) -> list[str]:
    header = ("seg", "provider", "batch", "state", "pairs", "res", "fail", "age", "error")
    rows = []
    for row in table.iter_rows(named=True):
        age = row["age_min"]
        rows.append(
            [
                str(row["segment"]),
                row["provider"],
                row["batch_id"] or "-" if wide else _short(row["batch_id"], _ID),
                row["state"] or "",
                _num(row["pairs"]),
                _num(row["results"]),
                _num(row["failed"]),
                "-" if age is None else f"{age:g}m",
                row["error"] or "",
            ]
        )
    widths = [len(h) for h in header[:-1]]
    for cells in rows:
        for i, cell in enumerate(cells[:-1]):
            if not wide and i == 3:
                cells[i] = cell = _clip(cell, 16)
            widths[i] = max(widths[i], len(cell))
    right = {0, 4, 5, 6, 7}

    def line(cells: list[str] | tuple[str, ...]) -> str:
        parts = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(cells[:-1])
        ]
        text = "  ".join(parts)
        error = cells[-1]
        if error:
            room = WIDTH - len(text) - 2
            text += "  " + (" ".join(error.split()) if wide else _clip(error, max(room, 10)))
        return text.rstrip()

    return [line(header), *(line(cells) for cells in rows)]
