"""The ``pairbatch`` command: submit, resume, status, cancel, demo, emulator.

Exit codes: 0 when every job is done and succeeded, 1 when some batches failed, some jobs
are unfinished or the run could not go on (another writer, an unreachable provider), 2
for usage and input errors. Every error is one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from pairbatch.cli_args import (
    EXIT_FAILURES,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PROVIDERS,
    UsageError,
    count,
    non_negative,
    positive,
    rate,
    rate_pair,
    segments,
)
from pairbatch.cli_run import COMMANDS
from pairbatch.cli_study import add_study_commands, run_study_command
from pairbatch.errors import InputError, PairbatchError, RegistryError


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (exit 2), as the docs promise; ``-h`` shows usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown where they say something: not for on/off flags (``--no-preflight``
    "(default: True)" read as "skipped by default") nor for an unset value."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.nargs == 0 or action.default in (None, (), [], argparse.SUPPRESS):
            return action.help
        return super()._get_help_string(action)


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
    add(
        "--combined-csv-path",
        default=None,
        help="where the combined CSV goes (implies --write-combined-csv)",
    )
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


def _add_run_folder(command: argparse.ArgumentParser) -> None:
    """The run folder, as a positional or, as submit and adaptive spell it, ``--output-dir``
    (``pairbatch resume --output-dir run`` was refused as an unknown argument)."""
    command.add_argument("output_dir", nargs="?", help="the run folder")
    command.add_argument(
        "--output-dir",
        dest="output_dir_option",
        metavar="OUTPUT_DIR",
        help="the run folder, as submit names it",
    )
    command.set_defaults(folder_parser=command)


def _resolve_run_folder(args: argparse.Namespace) -> None:
    """One run folder from the positional and ``--output-dir``; a usage error (exit 2)
    when there is none, or two different ones."""
    parser = getattr(args, "folder_parser", None)
    if parser is None:
        return
    given = [f for f in (args.output_dir, args.output_dir_option) if f is not None]
    if not given:
        parser.error("the run folder is required (the folder given to submit --output-dir)")
    if len(given) == 2 and Path(given[0]) != Path(given[1]):
        parser.error(f"two run folders given: {given[0]!r} and --output-dir {given[1]!r}")
    args.output_dir = given[0]


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
    _add_run_folder(resume)
    _add_resume_flags(resume)

    status = command("status", "a table of a run's jobs (reads only; no lock)")
    _add_run_folder(status)
    status.add_argument("--wide", action="store_true", help="full batch ids and errors")
    status.add_argument(
        "--all",
        dest="show_all",
        action="store_true",
        help="one line per job even in a big run (else counts, then the jobs to look at)",
    )
    status.add_argument("--refresh", action="store_true", help="ask the providers for live states")

    retry = command("retry", "send a finished run's failed pairs again, as new segments")
    _add_run_folder(retry)
    retry.add_argument("--max-attempts", type=count, default=3, help="attempts per pair, in all")
    retry.add_argument(
        "--codes", default=None, help="only failures with these error codes (comma-separated)"
    )
    retry.add_argument("--batch-size", type=count, default=None, help="pairs per new batch")

    cancel = command("cancel", "cancel a run's unfinished batches")
    _add_run_folder(cancel)

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


def _interrupted(args: argparse.Namespace) -> str:
    """What a Ctrl-C leaves and how to go on: each command's own way."""
    folder = getattr(args, "output_dir", None)
    if args.command in ("submit", "resume", "retry", "cancel") and folder:
        verb = "cancel" if args.command == "cancel" else "resume"  # a cancel is re-sent
        again = f"pairbatch {verb} {shlex.quote(str(folder))}"
        return f"interrupted; the registry is consistent, run `{again}` to go on"
    if args.command == "adaptive":
        return "interrupted; the study is consistent, run the same `pairbatch adaptive` to go on"
    return "interrupted"


# argparse takes "-1,2" for an option (only a plain "-5" or "-0.5" passes as a number),
# so `--price -1,2` got "expected one argument"; glued, the value is checked and named.
_NEGATIVE_LIST = re.compile(r"-[0-9.]+(,.*)?")


def _glue_negative_values(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    for token in argv:
        if out and out[-1] == "--price" and _NEGATIVE_LIST.fullmatch(token):
            out[-1] = f"--price={token}"
        else:
            out.append(token)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_glue_negative_values(sys.argv[1:] if argv is None else argv))
    args.verbose = getattr(args, "verbose", False)
    _resolve_run_folder(args)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if (code := run_study_command(args)) is not None:
            return code
        return int(asyncio.run(COMMANDS[args.command](args)))
    except KeyboardInterrupt:
        if args.command in ("emulator", "latent-emulator"):
            return EXIT_OK  # Ctrl-C is how a served emulator is stopped
        print(_interrupted(args), file=sys.stderr)
        return EXIT_INTERRUPTED
    except (UsageError, InputError, RegistryError, FileNotFoundError) as exc:
        print(f"pairbatch: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except (PairbatchError, OSError) as exc:
        print(f"pairbatch: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILURES


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
