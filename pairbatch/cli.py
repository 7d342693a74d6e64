"""The ``pairbatch`` command: submit, resume, status, cancel, demo, emulator.

Exit codes: 0 when every job is done and succeeded, 1 when some batches failed, some jobs
are unfinished or the run could not go on (another writer, an unreachable provider), 2
for usage and input errors. Every error is one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from pairbatch.cli_study import add_study_commands, run_study_command
from pairbatch.errors import InputError, PairbatchError, RegistryError
from pairbatch.models import Provider

EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2
PROVIDERS = tuple(p.value for p in Provider)


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (exit 2), as the docs promise; ``-h`` shows usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


# ---------------------------------------------------------------- argument types


def _number(text: str, *, low: float, strict: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < low or (strict and value == low):
        bound = f"> {low:g}" if strict else f">= {low:g}"
        raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text!r}")
    return value


def positive(text: str) -> float:
    return _number(text, low=0, strict=True)


def non_negative(text: str) -> float:
    return _number(text, low=0, strict=False)


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def rate(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    name = name.strip().lower()
    if not sep or name not in PROVIDERS:
        raise argparse.ArgumentTypeError(
            f"{text!r} must look like PROVIDER=RATE with PROVIDER one of {', '.join(PROVIDERS)}"
        )
    return name, positive(value)


def rate_pair(text: str) -> tuple[float, float]:
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"{text!r} must look like IN,OUT (e.g. 0.40,1.60)")
    return non_negative(parts[0]), non_negative(parts[1])


def segments(text: str) -> list[int] | bool:
    if text.strip().lower() == "all":
        return True
    try:
        return [count(part) for part in text.split(",") if part.strip()]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} must be segment numbers like 3 or 2,5, or 'all'"
        ) from None


def _parse_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            value = cast(text)
        except ValueError:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise _UsageError(f"--option value {text!r} is not a finite number")
        return value
    return text


def _options(items: Sequence[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise _UsageError(f"--option must look like NAME=VALUE, got {item!r}")
        out[name.strip()] = _parse_value(value)
    return out


# ---------------------------------------------------------------- the parser


def _options_epilog() -> str:
    from pairbatch.providers import all_info

    lines = ["provider options (--option NAME=VALUE):"]
    for info in all_info():
        lines.append(f"  {info.provider.value}: {', '.join(sorted(info.options))}")
    return "\n".join(lines)


def _add_resume_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--interval-seconds", type=non_negative, default=60.0, help="base seconds between polls")
    add("--per-job-delay", type=positive, default=None, help="seconds between requests")
    add("--write-results-csv", action="store_true", help="write batch_NN_results.csv too")
    add("--no-keep-jsonl", dest="keep_jsonl", action="store_false", help="delete JSONL files")
    add("--write-combined-csv", action="store_true", help="write combined_results.csv")
    add("--combined-csv-path", default=None, help="where the combined CSV goes")
    add("--tag-prefix", default="<BETTER_SAMPLE>", help="answer tag opening")
    add("--tag-suffix", default="</BETTER_SAMPLE>", help="answer tag closing")
    add("--openai-max-retries", type=count, default=3, help="attempts per OpenAI call")
    add("--max-concurrency", type=count, default=32, help="requests in flight at most")
    add(
        "--rate-limit",
        action="append",
        type=rate,
        metavar="PROVIDER=RATE",
        help="requests/second for a provider (repeatable; default 5 each)",
    )
    add("--timeout", type=positive, default=None, help="stop after this many seconds")
    add(
        "--redownload",
        type=segments,
        default=(),
        metavar="SEGMENTS",
        help="fetch these done segments' results again (e.g. 3,5 or all)",
    )
    add("--no-progress", dest="progress", action="store_false", help="no progress display")


def build_parser() -> argparse.ArgumentParser:
    from pairbatch import __version__

    common = _Parser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log progress"
    )
    parser = _Parser(
        prog="pairbatch",
        description="Comparative-judgement pairs through LLM batch APIs.",
        parents=[common],
        formatter_class=_Help,
    )
    parser.add_argument("--version", action="version", version=f"pairbatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, text: str, epilog: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=text,
            description=text,
            parents=[common],
            formatter_class=_Help,
            epilog=epilog,
        )

    submit = command("submit", "split pairs into batches and create them", _options_epilog())
    submit.add_argument("pairs", help="CSV or Parquet with ID1, text1, ID2, text2")
    submit.add_argument("--backend", required=True, choices=PROVIDERS, help="provider")
    submit.add_argument("--model", required=True, help="the provider's model id")
    submit.add_argument(
        "--trait", default=None, help="built-in trait: overall_quality, organization"
    )
    submit.add_argument("--trait-name", default=None, help="your own trait's name")
    submit.add_argument("--trait-description", default=None, help="your own trait's meaning")
    submit.add_argument("--template-file", default=None, help="a prompt template (UTF-8 text)")
    size = submit.add_mutually_exclusive_group(required=True)
    size.add_argument("--batch-size", type=count, help="pairs per batch")
    size.add_argument("--n-segments", type=count, help="number of batches")
    submit.add_argument("--output-dir", required=True, help="the run folder (new)")
    submit.add_argument(
        "--option", action="append", metavar="NAME=VALUE", help="provider option, repeatable"
    )
    submit.add_argument(
        "--overwrite", action="store_true", help="replace a finished run in --output-dir"
    )
    submit.add_argument(
        "--order",
        choices=("as_given", "random", "both"),
        default="as_given",
        help="pair order: as given, random per pair, or both orders",
    )
    submit.add_argument("--order-seed", type=int, default=0, help="seed for --order random")
    submit.add_argument(
        "--enqueued-token-limit",
        type=count,
        default=None,
        help="tokens the provider's queue may hold: hold the rest back until earlier finish",
    )
    submit.add_argument(
        "--price",
        type=rate_pair,
        default=None,
        metavar="IN,OUT",
        help="USD per million input,output tokens (batch discount applied)",
    )
    submit.add_argument("--cost-cap", type=non_negative, default=None, help="refuse a run over it")
    submit.add_argument(
        "--no-preflight",
        dest="preflight",
        action="store_false",
        help="skip the one ordinary request sent before any batch",
    )

    resume = command("resume", "poll, download and parse until all jobs are done")
    resume.add_argument("output_dir", help="the run folder")
    _add_resume_flags(resume)

    status = command("status", "a table of a run's jobs (reads only; no lock)")
    status.add_argument("output_dir", help="the run folder")
    status.add_argument("--wide", action="store_true", help="full batch ids and errors")
    status.add_argument("--refresh", action="store_true", help="ask the providers for live states")

    retry = command("retry", "send a finished run's failed pairs again, as new segments")
    retry.add_argument("output_dir", help="the run folder")
    retry.add_argument("--max-attempts", type=count, default=3, help="attempts per pair, in all")
    retry.add_argument(
        "--codes", default=None, help="only failures with these error codes (comma-separated)"
    )
    retry.add_argument("--batch-size", type=count, default=None, help="pairs per new batch")

    cancel = command("cancel", "cancel a run's unfinished batches")
    cancel.add_argument("output_dir", help="the run folder")

    demo = command("demo", "an end-to-end run on the built-in emulator")
    demo.add_argument("--output-dir", default="pairbatch-demo", help="where the demo runs go")
    demo.add_argument("--pairs", type=count, default=None, help="use only the first N pairs")
    demo.add_argument("--latency", type=non_negative, default=2.0, help="emulated batch seconds")

    emulator = command("emulator", "serve the provider emulator until Ctrl-C")
    emulator.add_argument("--host", default="127.0.0.1", help="address to listen on")
    emulator.add_argument("--port", type=int, default=8765, help="port to listen on")
    emulator.add_argument("--latency", type=non_negative, default=1.0, help="batch seconds")
    add_study_commands(sub)
    return parser


# ---------------------------------------------------------------- commands


def _trait(args: argparse.Namespace) -> tuple[str, str]:
    from pairbatch.prompts import trait_description

    if args.trait:
        if args.trait_name or args.trait_description:
            raise _UsageError("give --trait or --trait-name/--trait-description, not both")
        return trait_description(args.trait)
    if not args.trait_name or not args.trait_description:
        raise _UsageError("--trait-name and --trait-description are required (or --trait)")
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
        **_options(args.option),
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
            write_combined_csv=args.write_combined_csv,
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
    from pairbatch.registry import read_registry
    from pairbatch.status_view import render

    folder = Path(args.output_dir)
    if not await asyncio.to_thread(folder.is_dir):
        raise InputError(f"{folder} is not a run folder")
    live = await live_states(folder) if args.refresh else None
    jobs = await asyncio.to_thread(read_registry, folder)
    table = status_frame(jobs, live)
    print(render(table, wide=args.wide))
    line = await asyncio.to_thread(budget_line, folder, jobs)
    if line:
        print(line)
    ok = table["done"].all() and (table["status"] == "succeeded").all()
    return EXIT_OK if ok else EXIT_FAILURES


async def _retry(args: argparse.Namespace) -> int:
    from pairbatch.retries import retry_failed

    codes = None if args.codes is None else {c.strip() for c in args.codes.split(",") if c.strip()}
    result = await retry_failed(
        args.output_dir,
        max_attempts=args.max_attempts,
        codes=codes,
        batch_size=args.batch_size,
        verbose=args.verbose,
    )
    _print_jobs(result.jobs)
    n = sum(j.n_pairs for j in result.jobs)
    print(f"{n} pair(s) sent again in {len(result.jobs)} batch(es); run `pairbatch resume`")
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
    print(f"{len(result.cancelled)} batch(es) cancelled; run `pairbatch resume` to collect them")
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


_COMMANDS = {
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.verbose = getattr(args, "verbose", False)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if (code := run_study_command(args)) is not None:
            return code
        return int(asyncio.run(_COMMANDS[args.command](args)))
    except KeyboardInterrupt:
        print(
            "interrupted; the registry is consistent, run `pairbatch resume` to go on",
            file=sys.stderr,
        )
        return EXIT_FAILURES
    except (_UsageError, InputError, RegistryError, FileNotFoundError) as exc:
        print(f"pairbatch: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except (PairbatchError, OSError) as exc:
        print(f"pairbatch: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILURES


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
