"""``pairbatch scores`` and ``pairbatch report``: the study commands over finished runs.

``cli.py`` registers them with :func:`add_study_commands` and hands parsed arguments
to :func:`run_study_command`; errors surface as ``PairbatchError`` (one line, exit 2).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

import polars as pl

from pairbatch.errors import InputError

STUDY_COMMANDS = ("scores", "report")


def add_study_commands(sub: Any) -> None:
    """Add the ``scores`` and ``report`` subcommands to ``cli.py``'s subparsers."""
    scores = sub.add_parser("scores", help="Bradley–Terry scores of one or more runs")
    scores.add_argument("runs", nargs="+", metavar="RUN", help="run folder(s)")
    scores.add_argument("--out", help="also write the table to FILE.csv or FILE.parquet")
    scores.add_argument(
        "--position-effect", action="store_true", help="fit the first-shown advantage"
    )
    report = sub.add_parser("report", help="a self-contained HTML report of a run")
    report.add_argument("runs", nargs="+", metavar="RUN", help="run folder(s)")
    report.add_argument("--out", default="report.html", help="HTML file (default report.html)")
    report.add_argument("--position-effect", action="store_true")


def run_study_command(args: argparse.Namespace) -> int | None:
    """Run a study command; None when ``args.command`` is not one."""
    if args.command == "scores":
        return _scores(args)
    if args.command == "report":
        from pairbatch.report import write_report

        path = write_report(args.runs, args.out, position_effect=args.position_effect)
        print(f"wrote {path}")
        return 0
    return None


def _scores(args: argparse.Namespace) -> int:
    from pairbatch.report import load_runs, scores_by_group

    out = Path(args.out) if args.out else None
    if out is not None and out.suffix.lower() not in (".csv", ".parquet"):
        raise InputError(f"--out must end in .csv or .parquet, got {out.name!r}")
    data = load_runs(args.runs)
    if data.combined is None:
        raise InputError("the run(s) hold no results yet; run `pairbatch resume` first")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = scores_by_group(data.combined, position_effect=args.position_effect)
    for warning in caught:  # one line each, not Python's two-line warning format
        print(f"pairbatch: warning: {warning.message}", file=sys.stderr)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=40, tbl_hide_dataframe_shape=True):
        print(table)
    if out is not None:
        if out.suffix.lower() == ".csv":
            table.write_csv(out)
        else:
            table.write_parquet(out)
    return 0
