"""The ``pairbatch`` command: submit, resume, status, cancel, demo, emulator.

Exit codes: 0 when every job is done and succeeded, 1 when some batches failed or some
jobs are unfinished, 2 for usage and input errors (one clear line on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import polars as pl

from pairbatch.cli_study import add_study_commands, run_study_command
from pairbatch.errors import PairbatchError
from pairbatch.models import JobStatus
from pairbatch.prompts import DEFAULT_TEMPLATE, trait_description, validate_template

EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (exit 2), as the docs promise; ``-h`` shows usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _parse_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _key_values(items: Sequence[str] | None, what: str, number: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise _UsageError(f"{what} must look like NAME=VALUE, got {item!r}")
        out[name.strip()] = float(value) if number else _parse_value(value)
    return out


def _add_resume_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--interval-seconds", type=float, default=60.0)
    parser.add_argument("--per-job-delay", type=float, default=None)
    parser.add_argument("--write-results-csv", action="store_true")
    parser.add_argument("--no-keep-jsonl", dest="keep_jsonl", action="store_false")
    parser.add_argument("--write-combined-csv", action="store_true")
    parser.add_argument("--combined-csv-path", default=None)
    parser.add_argument("--tag-prefix", default="<BETTER_SAMPLE>")
    parser.add_argument("--tag-suffix", default="</BETTER_SAMPLE>")
    parser.add_argument("--openai-max-retries", type=int, default=3)
    parser.add_argument("--max-concurrency", type=int, default=32)
    parser.add_argument(
        "--rate-limit", action="append", metavar="PROVIDER=RATE", help="requests/second"
    )
    parser.add_argument("--timeout", type=float, default=None, help="overall seconds")
    parser.add_argument("--no-progress", dest="progress", action="store_false")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pairbatch",
        description="Comparative-judgement pairs through LLM batch APIs.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = parser.add_subparsers(dest="command", required=True)

    submit = sub.add_parser("submit", help="split pairs into batches and create them")
    submit.add_argument("pairs", help="CSV or Parquet with ID1, text1, ID2, text2")
    submit.add_argument("--backend", required=True, choices=["openai", "anthropic", "gemini"])
    submit.add_argument("--model", required=True)
    submit.add_argument(
        "--trait", default=None, help="built-in trait: overall_quality, organization"
    )
    submit.add_argument("--trait-name", default=None)
    submit.add_argument("--trait-description", default=None)
    submit.add_argument("--template-file", default=None)
    size = submit.add_mutually_exclusive_group(required=True)
    size.add_argument("--batch-size", type=int)
    size.add_argument("--n-segments", type=int)
    submit.add_argument("--output-dir", required=True)
    submit.add_argument(
        "--option", action="append", metavar="NAME=VALUE", help="provider option, repeatable"
    )

    resume = sub.add_parser("resume", help="poll, download and parse until all jobs are done")
    resume.add_argument("output_dir")
    _add_resume_flags(resume)

    status = sub.add_parser("status", help="a table of a run's jobs")
    status.add_argument("output_dir")

    cancel = sub.add_parser("cancel", help="cancel a run's unfinished batches")
    cancel.add_argument("output_dir")

    demo = sub.add_parser("demo", help="an end-to-end run on the built-in emulator")
    demo.add_argument("--output-dir", default="pairbatch-demo")
    demo.add_argument("--pairs", type=int, default=None, help="use only the first N pairs")
    demo.add_argument("--latency", type=float, default=2.0, help="emulated batch seconds")

    emulator = sub.add_parser("emulator", help="serve the provider emulator until Ctrl-C")
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=int, default=8765)
    emulator.add_argument("--latency", type=float, default=1.0)
    add_study_commands(sub)
    return parser


def _trait(args: argparse.Namespace) -> tuple[str, str]:
    if args.trait:
        if args.trait_name or args.trait_description:
            raise _UsageError("give --trait or --trait-name/--trait-description, not both")
        return trait_description(args.trait)
    if not args.trait_name or not args.trait_description:
        raise _UsageError("--trait-name and --trait-description are required (or --trait)")
    return args.trait_name, args.trait_description


async def _submit(args: argparse.Namespace) -> int:
    from pairbatch.submit import submit_pairs_multi_batch

    name, description = _trait(args)
    template = DEFAULT_TEMPLATE
    if args.template_file:
        text = await asyncio.to_thread(Path(args.template_file).read_text, encoding="utf-8")
        template = validate_template(text)
    result = await submit_pairs_multi_batch(
        args.pairs,
        model=args.model,
        trait_name=name,
        trait_description=description,
        prompt_template=template,
        backend=args.backend,
        batch_size=args.batch_size,
        n_segments=args.n_segments,
        output_dir=args.output_dir,
        write_registry=True,
        verbose=args.verbose,
        **_key_values(args.option, "--option"),
    )
    for job in result.jobs:
        print(f"segment {job.segment_index}: {job.status.value} {job.batch_id or job.error}")
    print(f"registry: {Path(result.output_dir) / 'jobs_registry.csv'}")
    return EXIT_FAILURES if result.failed else EXIT_OK


async def _resume(args: argparse.Namespace, **extra: Any) -> tuple[int, Any]:
    from pairbatch.progress import ProgressDisplay
    from pairbatch.registry import read_registry
    from pairbatch.summary import summarize
    from pairbatch.transport import Transport

    total = len(read_registry(args.output_dir))
    rates = _key_values(args.rate_limit, "--rate-limit", number=True)
    if args.per_job_delay is not None:
        rates = {p: 1.0 / args.per_job_delay for p in ("openai", "anthropic", "gemini")}
    transport = Transport(
        max_concurrency=args.max_concurrency,
        rate_limits=rates or None,
        bursts={p: 1.0 for p in rates} if args.per_job_delay is not None else None,
    )
    display = (
        ProgressDisplay(sys.stderr, total_jobs=total, counters=transport.counters)
        if args.progress
        else None
    )
    async with transport:
        result = await _run_resume(args, transport, display, **extra)
    if display is not None:
        display.close()
    with pl.Config(tbl_rows=50, tbl_cols=12, tbl_hide_dataframe_shape=True):
        print(summarize(result.combined, result.failed_attempts))
    if result.combined_csv_path is not None:
        print(f"combined results: {result.combined_csv_path}")
    ok = result.all_done and all(j.status is JobStatus.SUCCEEDED for j in result.jobs)
    return (EXIT_OK if ok else EXIT_FAILURES), result


async def _run_resume(args: argparse.Namespace, transport: Any, display: Any, **extra: Any) -> Any:
    from pairbatch.resume import resume_multi_batches

    return await resume_multi_batches(
        None,
        args.output_dir,
        interval_seconds=args.interval_seconds,
        per_job_delay=args.per_job_delay,
        write_results_csv=args.write_results_csv,
        keep_jsonl=args.keep_jsonl,
        write_registry=True,
        tag_prefix=args.tag_prefix,
        tag_suffix=args.tag_suffix,
        verbose=args.verbose,
        write_combined_csv=args.write_combined_csv,
        combined_csv_path=args.combined_csv_path,
        openai_max_retries=args.openai_max_retries,
        max_concurrency=args.max_concurrency,
        timeout=args.timeout,
        on_event=display,
        transport=transport,
        **extra,
    )


def _status(args: argparse.Namespace) -> int:
    from pairbatch.manage import status_table

    table = status_table(args.output_dir)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=40, tbl_hide_dataframe_shape=True):
        print(table)
    ok = table["done"].all() and (table["status"] == "succeeded").all()
    return EXIT_OK if ok else EXIT_FAILURES


async def _cancel(args: argparse.Namespace) -> int:
    from pairbatch.manage import cancel_multi_batches

    cancelled = await cancel_multi_batches(args.output_dir)
    for job in cancelled:
        print(f"segment {job.segment_index}: cancel requested for {job.batch_id}")
    print(f"{len(cancelled)} batch(es) cancelled; run `pairbatch resume` to collect them")
    return EXIT_OK


async def _emulator(args: argparse.Namespace) -> int:
    from pairbatch.testing import ProviderEmulator

    async with ProviderEmulator(host=args.host, port=args.port, latency=args.latency) as emu:
        for name, value in emu.env().items():
            print(f"export {name}={value}")
        print("serving; Ctrl-C to stop", flush=True)
        await asyncio.Event().wait()
    return EXIT_OK


async def _demo(args: argparse.Namespace) -> int:
    from pairbatch.demo import run_demo

    return await run_demo(
        Path(args.output_dir), n_pairs=args.pairs, latency=args.latency, verbose=args.verbose
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "submit":
            return asyncio.run(_submit(args))
        if args.command == "resume":
            return asyncio.run(_resume(args))[0]
        if args.command == "status":
            return _status(args)
        if args.command == "cancel":
            return asyncio.run(_cancel(args))
        if args.command == "demo":
            return asyncio.run(_demo(args))
        if args.command == "emulator":
            return asyncio.run(_emulator(args))
        if (code := run_study_command(args)) is not None:
            return code
    except KeyboardInterrupt:
        print(
            "interrupted; the registry is consistent, run `pairbatch resume` to go on",
            file=sys.stderr,
        )
        return EXIT_FAILURES
    except (_UsageError, PairbatchError, FileNotFoundError) as exc:
        print(f"pairbatch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
