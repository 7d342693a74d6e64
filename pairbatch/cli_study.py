"""``pairbatch scores``, ``report``, ``latent-emulator`` and ``adaptive``: the study commands.

``cli.py`` registers them with :func:`add_study_commands` and hands parsed arguments
to :func:`run_study_command`; errors surface as ``PairbatchError`` (one line, exit 2).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import polars as pl

from pairbatch._fs import atomic_writer, check_target
from pairbatch.cli_args import count, non_negative
from pairbatch.errors import InputError
from pairbatch.tables import read_table

STUDY_COMMANDS = ("scores", "report", "latent-emulator", "adaptive")


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
    _add_adaptive(sub)


def _add_adaptive(sub: Any) -> None:
    adaptive = sub.add_parser(
        "adaptive",
        help="an adaptive study: rounds of batches that choose their pairs (re-run to continue)",
    )
    add = adaptive.add_argument
    add("samples", help="samples: CSV/TSV/Parquet with columns ID, text, or a folder of .txt")
    add("--output-dir", required=True, help="the study folder (one run folder per round)")
    add("--backend", required=True, choices=("openai", "anthropic", "gemini"))
    add("--model", required=True, help="the provider's model id")
    add("--trait", default=None, help="built-in trait: overall_quality, organization")
    add("--trait-name", default=None, help="your own trait's name")
    add("--trait-description", default=None, help="your own trait's meaning")
    add("--target-reliability", type=float, default=0.9)
    add("--stability", type=float, default=0.98, help="Spearman between consecutive rounds")
    add("--pairs-per-round", type=count, default=None, help="default: one per sample")
    add("--max-rounds", type=count, default=10)
    add("--max-comparisons", type=count, default=None, help="budget of submitted comparisons")
    add("--strategy", choices=("adaptive", "random"), default="adaptive")
    add("--seed", type=int, default=0)
    add("--interval-seconds", type=non_negative, default=60.0, help="seconds between polls")
    add("--n-segments", type=count, default=None, help="batches per round (default 1)")
    add("--batch-size", type=count, default=None, help="pairs per batch, instead of --n-segments")
    add("--scores-out", default=None, help="also write the final scores to FILE.csv/.parquet")
    add("--plot", default=None, help="also write a PNG of reliability and stability per round")


def _checked_outputs(args: argparse.Namespace) -> Path | None:
    """``--scores-out`` as a path, after checking it and ``--plot`` before the study
    runs: a study can take days, and these are written at its end."""
    out = Path(args.scores_out) if args.scores_out else None
    if out is not None and out.suffix.lower() not in (".csv", ".parquet"):
        raise InputError(f"--scores-out must end in .csv or .parquet, got {out.name!r}")
    for flag, target in (("--scores-out", out), ("--plot", args.plot)):
        if target is not None:
            check_target(flag, Path(target))
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise InputError("--plot needs matplotlib: pip install 'pairbatch[report]'")
    return out


def _write_table(frame: pl.DataFrame, out: Path) -> None:
    """``frame`` as CSV or Parquet (by ``out``'s suffix), written whole or not at all
    (temp name, fsync, rename), its folder made if missing."""
    with atomic_writer(out) as handle:
        if out.suffix.lower() == ".csv":
            frame.write_csv(handle)
        else:
            frame.write_parquet(handle)


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
    if args.command == "adaptive":
        return asyncio.run(_adaptive(args))
    return None


async def _adaptive(args: argparse.Namespace) -> int:
    from pairbatch.adaptive import plot_rounds, run_adaptive
    from pairbatch.prompts import trait_description

    if args.trait and (args.trait_name or args.trait_description):
        raise InputError("give --trait or --trait-name/--trait-description, not both")
    if args.trait or not (args.trait_name or args.trait_description):
        name, description = trait_description(args.trait or "overall_quality")
    elif not (args.trait_name and args.trait_description):
        raise InputError("--trait-name and --trait-description go together")
    else:
        name, description = args.trait_name, args.trait_description
    out = _checked_outputs(args)
    segments = {k: v for k in ("batch_size", "n_segments") if (v := getattr(args, k)) is not None}
    result = await run_adaptive(
        args.samples,
        backend=args.backend,
        model=args.model,
        trait_name=name,
        trait_description=description,
        output_dir=args.output_dir,
        target_reliability=args.target_reliability,
        stability=args.stability,
        pairs_per_round=args.pairs_per_round,
        max_rounds=args.max_rounds,
        max_comparisons=args.max_comparisons,
        strategy=args.strategy,
        interval_seconds=args.interval_seconds,
        seed=args.seed,
        **segments,
    )
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_hide_dataframe_shape=True):
        print(result.rounds)
    print(
        f"stopped: {result.stopped_because} after {result.rounds.height} round(s), "
        f"{result.comparisons} comparisons"
    )
    if out is not None:
        _write_table(result.scores, out)
    if args.plot:
        print(f"wrote {plot_rounds(result, args.plot)}")
    return 0


def read_qualities(path: str) -> dict[str, float]:
    """``text -> quality`` from a CSV/Parquet file with columns ``text`` and ``quality``."""
    source = Path(path)
    frame = read_table(source, "qualities")  # every CSV value as written
    if not {"text", "quality"} <= set(frame.columns):
        raise InputError(f"{source} must have columns 'text' and 'quality'")
    texts = frame["text"].cast(pl.Utf8).to_list()
    qualities: dict[str, float] = {}
    for row, (text, value) in enumerate(zip(texts, frame["quality"].to_list(), strict=True), 1):
        if text is None or value is None:
            column = "text" if text is None else "quality"
            raise InputError(f"{source}: row {row}: {column} is missing")
        try:
            quality = float(value)
        except (TypeError, ValueError):  # a Parquet column of another type
            quality = math.nan
        if not math.isfinite(quality):
            raise InputError(f"{source}: row {row}: quality {value!r} is not a finite number")
        if text in qualities:
            first = texts.index(text) + 1
            raise InputError(f"{source}: row {row} repeats the text of row {first}")
        qualities[text] = quality
    return qualities


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
        _write_table(table, out)
    return 0
