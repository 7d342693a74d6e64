"""Why the chunked parse writes its own row groups: Polars' streaming sink's memory grows.

Run by hand:  .venv/bin/python benchmarks/bench_sink.py [--rows 200000 650000 2000000]

The same result-shaped frames (``--chunk`` rows each, about the size of a 2 MB chunk of
OpenAI results: an answer, a reasoning summary, two essays, keys) are written four
ways, each in a fresh child process whose peak RSS growth (``VmHWM`` reset first) is its
own:

* eager     ``DataFrame.write_parquet`` of each chunk to a file of its own: the flat
            baseline (memory bounded by one chunk, whatever the total);
* append    :class:`pairbatch.parquet_append.ParquetAppender`: the eager writes joined
            into one file (what :mod:`pairbatch.chunked` uses now);
* sink      a Polars IO source yielding the chunks into one ``sink_parquet`` (the one-pass
            writer of :mod:`pairbatch.chunked` before the appender);
* rescan    ``scan_parquet(...).sink_parquet(...)`` of a file of the same rows (the
            two-pass writer's shape).

If the sink's growth rises with the rows while the baseline's does not, the retained
memory is the streaming engine's, not pairbatch's: it kept the 1 GB figure of
``bench_scale.py`` above its 64 MB target until the appender replaced the sink. The
appender grows only by its footer, the row groups' metadata (about 2.6 KB a row group
of these 31 columns).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
from polars.io.plugins import register_io_source

from pairbatch.parquet_append import ParquetAppender

WORDS = [
    "the",
    "essay",
    "argues",
    "clearly",
    "with",
    "evidence",
    "while",
    "a",
    "weaker",
    "claim",
    "offers",
    "tone",
]


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def _text(i: int, words: int) -> str:
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(words)) + f" #{i}"


def _chunks(total: int, size: int) -> list[pl.DataFrame]:
    """Ten distinct chunks, reused: building the rows must not be what is measured."""
    out = []
    for c in range(10):
        ids = range(c * size, (c + 1) * size)
        n = len(ids)
        # The results file's other columns: keys, labels, counts, nulls (31 in all).
        labels = {f"label_{k}": [f"value-{k}"] * n for k in range(10)}
        counts = {f"count_{k}": [k * i for i in ids] for k in range(8)}
        empty = {f"null_{k}": pl.Series([None] * n, dtype=pl.Utf8) for k in range(6)}
        out.append(
            pl.DataFrame(
                {
                    **labels,
                    **counts,
                    **empty,
                    "custom_id": [f"pb-0-{i}" for i in ids],
                    "text1": [_text(i, 50) for i in ids],
                    "text2": [_text(i + 1, 50) for i in ids],
                    "thoughts": [_text(i, 80) for i in ids],
                    "content": [
                        _text(i, 45) + " <BETTER_SAMPLE>SAMPLE_1</BETTER_SAMPLE>" for i in ids
                    ],
                    "prompt_tokens": list(ids),
                    "winner_pos": [1 + i % 2 for i in ids],
                }
            )
        )
    return out


def child(name: str, total: int, size: int, folder: Path) -> None:
    chunks = _chunks(total, size)
    count = max(1, total // size)
    stream = (chunks[i % 10] for i in range(count))
    if name == "rescan":  # its input file is written before the peak is reset
        source = folder / "input.parquet"
        register_io_source(lambda *_: stream, schema=chunks[0].schema).sink_parquet(source)
    Path("/proc/self/clear_refs").write_text("5")
    before = _status("VmRSS")
    start = time.perf_counter()
    if name == "eager":
        for i, frame in enumerate(stream):
            frame.write_parquet(folder / f"part-{i:06d}.parquet", row_group_size=4096)
    elif name == "append":
        appender = ParquetAppender(folder / "out.parquet", chunks[0].schema)
        for frame in stream:
            appender.append(frame)
        appender.close()
    elif name == "sink":
        plan = register_io_source(lambda *_: stream, schema=chunks[0].schema)
        plan.sink_parquet(folder / "out.parquet", engine="streaming", row_group_size=4096)
    else:
        pl.scan_parquet(source).sink_parquet(
            folder / "out.parquet", engine="streaming", row_group_size=4096
        )
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "growth": _status("VmHWM") - before}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[200_000, 650_000, 2_000_000])
    parser.add_argument("--chunk", type=int, default=1300)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, total, size, folder = args.child
        child(name, int(total), int(size), Path(folder))
        return
    print(f"polars {pl.__version__}; chunks of {args.chunk:,} rows; peak RSS growth in MB")
    print(f"{'rows':>10}{'eager':>10}{'append':>10}{'sink':>10}{'rescan':>10}")
    for total in args.rows:
        cells = []
        for name in ("eager", "append", "sink", "rescan"):
            with tempfile.TemporaryDirectory() as folder:
                command = [sys.executable, __file__, "--child", name, str(total), str(args.chunk)]
                run = subprocess.run([*command, folder], check=True, capture_output=True)
                cells.append(json.loads(run.stdout)["growth"] / 2**20)
        print(f"{total:>10,}" + "".join(f"{cell:>10.0f}" for cell in cells))


if __name__ == "__main__":
    main()
