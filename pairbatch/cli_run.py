"""The run commands of ``pairbatch``: submit, resume, status, retry, cancel, emulator, demo.

Each takes the parsed arguments and returns the exit code; ``cli.py`` parses and maps
errors to one line on stderr. Heavy modules are imported inside each command, so
``pairbatch --help`` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pairbatch.cli_args import EXIT_FAILURES, EXIT_OK, PROVIDERS, UsageError, options
from pairbatch.errors import InputError, PairbatchError


def _trait(args: argparse.Namespace) -> tuple[str, str]:
    from pairbatch.prompts import trait_description

    if args.trait:
        if args.trait_name or args.trait_description:
            raise UsageError("give --trait or --trait-name/--trait-description, not both")
        return trait_description(args.trait)
    if not args.trait_name or not args.trait_description:
        raise UsageError("--trait-name and --trait-description are required (or --trait)")
    return args.trait_name, args.trait_description


def _read_template(name: str) -> str:
    from pairbatch.prompts import validate_template

    path = Path(name)
    try:
        text = path.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise InputError(f"--template-file {path} is a folder, not a file") from None
    except FileNotFoundError:
        raise InputError(f"--template-file {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"--template-file {path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"--template-file {path} cannot be read ({exc.strerror})") from None
    return validate_template(text)


def _print_jobs(jobs: Sequence[Any]) -> None:
    for job in jobs:
        print(f"segment {job.segment_index}: {job.status.value} {job.batch_id or job.error}")


async def _submit(args: argparse.Namespace) -> int:
    from pairbatch.prompts import DEFAULT_TEMPLATE
    from pairbatch.submit import submit_pairs_multi_batch

    name, description = _trait(args)
    template = DEFAULT_TEMPLATE
    if args.template_file:
        template = await asyncio.to_thread(_read_template, args.template_file)
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
        overwrite=args.overwrite,
        order=args.order,
        order_seed=args.order_seed,
        preflight=args.preflight,
        enqueued_token_limit=args.enqueued_token_limit,
        prices=None
        if args.price is None
        else {"input_per_million": args.price[0], "output_per_million": args.price[1]},
        cost_cap=args.cost_cap,
        **options(args.option),
    )
    _print_jobs(result.jobs)
    print(f"registry: {Path(result.output_dir) / 'jobs_registry.csv'}")
    return EXIT_FAILURES if result.failed else EXIT_OK


async def _resume(args: argparse.Namespace, **extra: Any) -> tuple[int, Any]:
    import polars as pl

    from pairbatch.models import JobStatus
    from pairbatch.progress import ProgressDisplay
    from pairbatch.registry import read_registry
    from pairbatch.resume import resume_multi_batches
    from pairbatch.summary import summarize
    from pairbatch.transport import Transport

    total = len(await asyncio.to_thread(read_registry, args.output_dir))
    rates = dict(args.rate_limit or ())
    if args.per_job_delay is not None:
        rates = {p: 1.0 / args.per_job_delay for p in PROVIDERS}
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
        result = await resume_multi_batches(
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
            # A path given means the file is wanted.
            write_combined_csv=args.write_combined_csv or args.combined_csv_path is not None,
            combined_csv_path=args.combined_csv_path,
            openai_max_retries=args.openai_max_retries,
            max_concurrency=args.max_concurrency,
            timeout=args.timeout,
            on_event=display,
            transport=transport,
            redownload=args.redownload,
            **extra,
        )
    if display is not None:
        display.close()
    with pl.Config(tbl_rows=50, tbl_cols=12, tbl_hide_dataframe_shape=True):
        print(summarize(result.combined, result.failed_attempts))
    for error in result.errors:
        print(f"pairbatch: error: {error}", file=sys.stderr)
    if result.combined_csv_path is not None:
        print(f"combined results: {result.combined_csv_path}")
    ok = result.all_done and all(j.status is JobStatus.SUCCEEDED for j in result.jobs)
    return (EXIT_OK if ok else EXIT_FAILURES), result


async def _status(args: argparse.Namespace) -> int:
    from pairbatch.manage import budget_line, live_states, status_frame
    from pairbatch.registry import read_registry, require_run
    from pairbatch.status_view import render

    folder = await asyncio.to_thread(require_run, args.output_dir)
    live = await live_states(folder) if args.refresh else None
    jobs = await asyncio.to_thread(read_registry, folder)
    table = status_frame(jobs, live)
    print(render(table, wide=args.wide, show_all=args.show_all))
    line = await asyncio.to_thread(budget_line, folder, jobs)
    if line:
        print(line)
    ok = table["done"].all() and (table["status"] == "succeeded").all()
    return EXIT_OK if ok else EXIT_FAILURES


async def _retry(args: argparse.Namespace) -> int:
    from pairbatch.retries import retry_failed

    codes = None if args.codes is None else {c.strip() for c in args.codes.split(",") if c.strip()}
    if codes is not None and not codes:
        raise InputError(f"--codes {args.codes!r} names no error code (e.g. --codes 429,500)")
    result = await retry_failed(
        args.output_dir,
        max_attempts=args.max_attempts,
        codes=codes,
        batch_size=args.batch_size,
        verbose=args.verbose,
    )
    _print_jobs(result.jobs)
    n = sum(j.n_pairs for j in result.jobs)
    if result.jobs:
        print(f"{n} pair(s) sent again in {len(result.jobs)} batch(es); run `pairbatch resume`")
    else:
        print(
            "nothing to retry: no failed pair is left to send again (see --max-attempts, --codes)"
        )
    return EXIT_FAILURES if result.failed else EXIT_OK


async def _cancel(args: argparse.Namespace) -> int:
    from pairbatch.manage import cancel_multi_batches

    result = await cancel_multi_batches(args.output_dir)
    for job in result.cancelled:
        print(f"segment {job.segment_index}: cancel requested for {job.batch_id}")
    for job, reason in result.failed:
        print(
            f"pairbatch: error: segment {job.segment_index}: cancel failed: {reason}",
            file=sys.stderr,
        )
    if result.cancelled:
        print(
            f"{len(result.cancelled)} batch(es) cancelled; run `pairbatch resume` to collect them"
        )
    elif not result.failed:
        print("nothing to cancel: no batch of this run is still running")
    return EXIT_FAILURES if result.failed else EXIT_OK


async def _emulator(args: argparse.Namespace) -> int:
    from pairbatch.testing import ProviderEmulator

    emulator = ProviderEmulator(host=args.host, port=args.port, latency=args.latency)
    try:
        await emulator.start()
    except OSError as exc:
        raise PairbatchError(
            f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); "
            "choose another --port"
        ) from None
    try:
        for name, value in emulator.env().items():
            print(f"export {name}={value}")
        print("serving; Ctrl-C to stop", flush=True)
        await asyncio.Event().wait()
    finally:
        await emulator.close()
    return EXIT_OK


async def _demo(args: argparse.Namespace) -> int:
    from pairbatch.demo import run_demo

    return await run_demo(
        Path(args.output_dir), n_pairs=args.pairs, latency=args.latency, verbose=args.verbose
    )


COMMANDS = {
    "submit": _submit,
    "resume": lambda args: _first(_resume(args)),
    "status": _status,
    "cancel": _cancel,
    "retry": _retry,
    "demo": _demo,
    "emulator": _emulator,
}


async def _first(coro: Any) -> int:
    code, _ = await coro
    return int(code)
