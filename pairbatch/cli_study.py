"""``pairbatch scores`` and ``pairbatch report``: the study commands over finished runs.

``cli.py`` registers them with :func:`add_study_commands` and hands parsed arguments
to :func:`run_study_command`; errors surface as ``PairbatchError`` (one line, exit 2).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import warnings
from pathlib import Path
from typing import Any

import polars as pl

from pairbatch.errors import InputError

STUDY_COMMANDS = ("scores", "report", "latent-emulator")


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
    latent = sub.add_parser(
        "latent-emulator", help="serve the emulator with a LatentJudge (known qualities)"
    )
    latent.add_argument("qualities", help="CSV/Parquet with columns text, quality")
    latent.add_argument("--noise", type=float, default=1.0)
    latent.add_argument("--position-bias", type=float, default=0.0)
    latent.add_argument("--lapse", type=float, default=0.0)
    latent.add_argument("--seed", type=int, default=0)
    latent.add_argument("--host", default="127.0.0.1")
    latent.add_argument("--port", type=int, default=8765)
    latent.add_argument("--latency", type=float, default=1.0)


def run_study_command(args: argparse.Namespace) -> int | None:
    """Run a study command; None when ``args.command`` is not one."""
    if args.command == "scores":
        return _scores(args)
    if args.command == "report":
        from pairbatch.report import write_report

        path = write_report(args.runs, args.out, position_effect=args.position_effect)
        print(f"wrote {path}")
        return 0
    if args.command == "latent-emulator":
        return asyncio.run(_latent_emulator(args))
    return None


def read_qualities(path: str) -> dict[str, float]:
    """``text -> quality`` from a CSV/Parquet file with columns ``text`` and ``quality``."""
    source = Path(path)
    if not source.is_file():
        raise InputError(f"qualities file not found: {source}")
    frame = pl.read_parquet(source) if source.suffix == ".parquet" else pl.read_csv(source)
    if not {"text", "quality"} <= set(frame.columns):
        raise InputError(f"{source} must have columns 'text' and 'quality'")
    if frame["quality"].null_count():
        raise InputError(f"{source}: column 'quality' has missing values")
    return dict(zip(frame["text"].cast(pl.Utf8), frame["quality"].cast(pl.Float64), strict=True))


async def _latent_emulator(args: argparse.Namespace) -> int:
    from pairbatch.testing import ProviderEmulator
    from pairbatch.testing.judge import LatentJudge

    judge = LatentJudge(
        read_qualities(args.qualities),
        noise=args.noise,
        position_bias=args.position_bias,
        lapse=args.lapse,
        seed=args.seed,
    )
    emulator = ProviderEmulator(host=args.host, port=args.port, latency=args.latency, judge=judge)
    async with emulator as emu:
        for name, value in emu.env().items():
            print(f"export {name}={value}")
        print("serving; Ctrl-C to stop", flush=True)
        await asyncio.Event().wait()
    return 0


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
