"""Registry updates on a 10,000-job run: journal + group commit vs rewriting the CSV.

Run by hand:  .venv/bin/python benchmarks/bench_registry.py [--jobs 10000] [--updates 2000]
Reading only: .venv/bin/python benchmarks/bench_registry.py --read-only [--read 1000 100000]
              [--read-modes snapshot journal snapshot+journal "with files"] [--repeat 3]

Baseline (measured in the same run): the reference's approach made per-transition,
i.e. rewrite the whole CSV atomically after every job transition.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

from pairbatch import registry as reg
from pairbatch.models import FileCheck, Job, JobStatus


def make_jobs(out: Path, n: int) -> list[Job]:
    return [
        Job(
            segment_index=k,
            provider="openai",
            model="gpt-4.1-mini",
            batch_id=f"batch_{k:08d}abcdef",
            batch_input_path=str(out / f"batch_{k:02d}_input.jsonl"),
            batch_output_path=str(out / f"batch_{k:02d}_output.jsonl"),
            csv_path=str(out / f"batch_{k:02d}_results.csv"),
            pairs_path=str(out / f"batch_{k:02d}_pairs.parquet"),
            n_pairs=500,
            run_tag="pb0123456789",
        )
        for k in range(1, n + 1)
    ]


def rewrite_each_time(out: Path, jobs: list[Job], updates: int) -> float:
    current = {j.segment_index: j for j in jobs}
    start = time.perf_counter()
    for job in jobs[:updates]:
        current[job.segment_index] = job.transition(done=True, status=JobStatus.SUCCEEDED)
        reg.write_registry(out, current.values())
    return time.perf_counter() - start


async def journal(out: Path, jobs: list[Job], updates: int, concurrent: bool) -> float:
    live = reg.Registry(out, jobs)
    changed = [j.transition(done=True, status=JobStatus.SUCCEEDED) for j in jobs[:updates]]
    start = time.perf_counter()
    if concurrent:
        await asyncio.gather(*(live.record(j) for j in changed))
    else:
        for job in changed:
            await live.record(job)
    await live.close()
    return time.perf_counter() - start


READ_MODES = ("snapshot", "journal", "snapshot+journal", "with files")


def _with_files(out: Path, jobs: list[Job]) -> list[Job]:
    """Jobs with the file records a settled job has (request, pairs, output, results)."""
    return [
        job.transition(
            files=(
                FileCheck(Path(job.batch_input_path).name, 812_345, 500, "ab" * 32),
                FileCheck(Path(job.pairs_path or "").name, 40_960, 500, "cd" * 32),
                FileCheck(Path(job.batch_output_path).name, 1_234_567, 500),
                FileCheck(Path(job.results_path).name, 56_789, 500),
            )
        )
        for job in jobs
    ]


def _registry_folder(out: Path, n: int, mode: str) -> None:
    jobs = make_jobs(out, n)
    reg.write_registry(out, _with_files(out, jobs) if mode == "with files" else jobs)
    if mode == "snapshot":
        reg.journal_path(out).unlink()
    elif mode == "journal":
        reg.registry_path(out).unlink()


def _best(call: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def reading(sizes: list[int], modes: list[str], repeat: int = 3, careful: bool = True) -> None:
    """``read_registry`` against a plain ``pl.read_csv`` of a CSV snapshot of the same
    jobs, and (``careful``) against the careful row reader alone, which is what every
    read was before the columnar reader: all in the same run, best of ``repeat``.
    "snapshot+journal" is what ``write_registry`` leaves; "with files" is that with four
    file records a job."""
    print(f"reading a registry, best of {repeat}")
    for mode in modes:
        for n in sizes:
            with tempfile.TemporaryDirectory() as tmp:
                print(_read_once(Path(tmp), mode, n, repeat, careful), flush=True)


def _read_once(tmp: Path, mode: str, n: int, repeat: int, careful: bool) -> str:
    out, baseline = tmp / "run", tmp / "baseline"
    _registry_folder(out, n, mode)
    _registry_folder(baseline, n, "with files" if mode == "with files" else "snapshot")
    base = _best(functools.partial(pl.read_csv, reg.registry_path(baseline)), repeat)
    ours = _best(functools.partial(reg.read_registry, out), repeat)
    line = (
        f"  {mode:17s} {n:>7,} jobs: read_registry {ours:7.3f} s "
        f"({ours / base:5.1f}x pl.read_csv {base:6.3f} s)"
    )
    if careful:
        slow = _best(functools.partial(reg._read_revs, out, *_bytes(out), fast=False), 1)
        line += f", careful reader {slow:7.3f} s ({slow / base:5.1f}x)"
    return line


def _bytes(folder: Path) -> tuple[bytes | None, bytes | None]:
    paths = (reg.registry_path(folder), reg.journal_path(folder))
    return tuple(p.read_bytes() if p.exists() else None for p in paths)  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--updates", type=int, default=1_000)
    parser.add_argument("--read", type=int, nargs="*", default=[1_000, 10_000, 100_000])
    parser.add_argument("--read-modes", nargs="*", default=list(READ_MODES), choices=READ_MODES)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-careful", action="store_true", help="skip the careful reader")
    parser.add_argument("--read-only", action="store_true", help="skip the update benchmark")
    args = parser.parse_args()
    if args.read:
        reading(args.read, args.read_modes, args.repeat, careful=not args.no_careful)
    if args.read_only:
        return
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        results = {}
        for name in ("rewrite", "journal_sequential", "journal_concurrent"):
            out = base / name
            jobs = make_jobs(out, args.jobs)
            reg.write_registry(out, jobs)
            if name == "rewrite":
                results[name] = rewrite_each_time(out, jobs, args.updates)
            else:
                results[name] = asyncio.run(
                    journal(out, jobs, args.updates, concurrent=name.endswith("concurrent"))
                )
            assert sum(j.done for j in reg.read_registry(out)) == args.updates
        csv_size = (base / "rewrite" / reg.REGISTRY_NAME).stat().st_size
        print(f"{args.jobs} jobs, {args.updates} transitions, registry CSV {csv_size / 1e6:.2f} MB")
        baseline = results["rewrite"]
        for name, seconds in results.items():
            per = seconds / args.updates * 1e3
            print(
                f"  {name:20s} {seconds:8.3f} s  {per:7.3f} ms/transition  "
                f"{baseline / seconds:8.1f}x faster than rewrite"
            )
        print(f"  bytes written per transition: rewrite {csv_size / 1e3:.0f} KB, journal ~0.5 KB")


if __name__ == "__main__":
    main()
