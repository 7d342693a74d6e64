"""``pairbatch status`` as text: one line per job that fits an 80-column terminal."""

from __future__ import annotations

import polars as pl

WIDTH = 80
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


def render(table: pl.DataFrame, *, wide: bool = False) -> str:
    """The status table as aligned text; ``wide`` keeps full batch ids and errors."""
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

    lines = [line(header), *(line(cells) for cells in rows)]
    done = int(table["done"].sum()) if table.height else 0
    lines.append(f"{done} of {table.height} job(s) done")
    return "\n".join(lines)
