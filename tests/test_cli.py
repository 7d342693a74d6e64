"""The ``pairbatch`` command as users run it: the console script in a subprocess, pointed
at a provider emulator served from the test process (loopback only)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

import attrs
import polars as pl
import pytest

from pairbatch import JobStatus, read_registry
from pairbatch.testing import FaultConfig, ProviderEmulator, expected_winner

_SCRIPT = Path(sys.executable).with_name("pairbatch")
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "pairbatch.cli"]
SUBMIT_FLAGS = ["--backend", "openai", "--model", "gpt-4.1-mini", "--trait", "overall_quality"]
# IDs that break naive CSV handling, key parsing or prompt filling.
HOSTILE_IDS = [
    "a,b",
    'q"uote',
    "ünï 日本",
    "007",
    "x_vs_y",
    "{SAMPLE_2}",
    "  padded  ",
    "line\nbreak",
    "semi;colon",
    "#1",
]
_PROVIDER_ENV = ("_API_KEY", "_BASE_URL")


@attrs.frozen
class Ran:
    rc: int
    stdout: str
    stderr: str


def cli_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """This process's environment without any provider key or URL, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.endswith(_PROVIDER_ENV)}
    base.pop("GOOGLE_API_KEY", None)
    return base | dict(env or {})


async def submit_two_segments(path: Path, out: Path, env: Mapping[str, str]) -> Ran:
    """``pairbatch submit`` of ``path`` into ``out`` as two OpenAI segments; must pass."""
    ran = await run_cli(
        "submit", path, *SUBMIT_FLAGS, "--n-segments", "2", "--output-dir", out, env=env
    )
    assert ran.rc == 0, ran.stderr
    return ran


async def run_cli(
    *args: str | Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Ran:
    """Run the console script; only loopback endpoints are ever in its environment."""
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *map(str, args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(env),
        cwd=cwd,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


def hostile_pairs(n: int = 12) -> pl.DataFrame:
    rows = []
    for i in range(n):
        a, b = HOSTILE_IDS[i % len(HOSTILE_IDS)], HOSTILE_IDS[(i + 3) % len(HOSTILE_IDS)]
        rows.append(
            {
                "ID1": a,
                "text1": "word " * (i + 2) + a,
                "ID2": b,
                "text2": "text " * ((i * 7) % 13 + 1) + b,
            }
        )
    return pl.DataFrame(rows)


@pytest.fixture
def pairs_csv(tmp_path: Path) -> tuple[Path, pl.DataFrame]:
    pairs = hostile_pairs()
    path = tmp_path / "pairs.csv"
    pairs.write_csv(path)
    return path, pairs


def read_combined(path: Path) -> pl.DataFrame:
    # Everything as text, so "007" stays "007"; missing values are empty fields.
    return pl.read_csv(path, infer_schema=False)


async def test_submit_status_resume_status(
    tmp_path: Path, pairs_csv: tuple[Path, pl.DataFrame]
) -> None:
    path, pairs = pairs_csv
    out = tmp_path / "run"
    async with ProviderEmulator(latency=0.3) as emu:
        env = emu.env()
        ran = await submit_two_segments(path, out, env)
        assert "registry:" in ran.stdout
        jobs = read_registry(out)
        assert [j.segment_index for j in jobs] == [1, 2]
        assert all(j.batch_id and not j.done for j in jobs)
        assert sum(j.n_pairs for j in jobs) == pairs.height

        ran = await run_cli("status", out, env=env)
        assert ran.rc == 1, ran.stderr
        for job in jobs:
            assert job.batch_id is not None
            assert job.batch_id[:8] in ran.stdout and job.batch_id[-4:] in ran.stdout
        assert "seg" in ran.stdout and "state" in ran.stdout
        assert max(len(line) for line in ran.stdout.splitlines()) <= 80

        # The run folder as submit spells it works too (the same folder twice is fine).
        ran = await run_cli(
            "resume",
            "--output-dir",
            out,
            "--interval-seconds",
            "0.2",
            "--write-combined-csv",
            "--no-progress",
            env=env,
        )
        assert ran.rc == 0, ran.stderr
        assert "combined results:" in ran.stdout
        combined_path = out / "combined_results.csv"
        assert combined_path.exists()

        ran = await run_cli("status", out, env=env)
        assert ran.rc == 0, ran.stderr
        assert "succeeded" in ran.stdout
        again = await run_cli("status", f"{out}/", "--output-dir", out, env=env)
        assert again.rc == 0, again.stderr
        assert "succeeded" in again.stdout

    combined = read_combined(combined_path)
    assert combined.height == pairs.height
    assert combined["custom_id"].n_unique() == pairs.height
    # Every pair once, IDs back exactly as given (commas, quotes, newlines, "007").
    given = sorted(zip(pairs["ID1"], pairs["ID2"], pairs["text1"], strict=True))
    got = sorted(zip(combined["ID1"], combined["ID2"], combined["text1"], strict=True))
    assert got == given
    for t1, t2, pos, id1, id2, better in combined.select(
        "text1", "text2", "winner_pos", "ID1", "ID2", "better_id"
    ).iter_rows():
        want = 1 if expected_winner(t1, t2) == "SAMPLE_1" else 2
        assert int(pos) == want
        assert better == (id1 if want == 1 else id2)
    assert all(j.done and j.status is JobStatus.SUCCEEDED for j in read_registry(out))


async def test_resume_exits_1_when_batches_fail(
    tmp_path: Path, pairs_csv: tuple[Path, pl.DataFrame]
) -> None:
    path, pairs = pairs_csv
    out = tmp_path / "run"
    faults = {"openai": FaultConfig(batch_failed_rate=1.0)}
    async with ProviderEmulator(latency=0.3, faults=faults) as emu:
        env = emu.env()
        ran = await run_cli(
            "submit", path, *SUBMIT_FLAGS, "--batch-size", "5", "--output-dir", out, env=env
        )
        assert ran.rc == 0, ran.stderr
        ran = await run_cli("resume", out, "--interval-seconds", "0.2", "--no-progress", env=env)
        assert ran.rc == 1, ran.stdout + ran.stderr
        ran = await run_cli("status", out, env=env)
        assert ran.rc == 1
        assert "failed" in ran.stdout
    jobs = read_registry(out)
    assert len(jobs) == 3
    assert all(j.done and j.status is JobStatus.FAILED for j in jobs)
    # The failed batches' pairs are all recorded as failed attempts, none lost.
    failed = pl.concat([pl.read_parquet(j.failed_path) for j in jobs])
    assert failed.filter(~pl.col("is_duplicate")).height == pairs.height


def _write_bad_pairs(tmp_path: Path) -> Path:
    path = tmp_path / "no_text2.csv"
    hostile_pairs(4).drop("text2").write_csv(path)
    return path


_OUT = ["--output-dir", "{out}"]
_SUBMIT = ["submit", "{pairs}", *SUBMIT_FLAGS, "--n-segments", "2", *_OUT]  # a valid submit


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(
            ["submit", "{pairs}", "--backend", "openai", "--n-segments", "2", *_OUT],
            "--model",
            id="missing-flag",
        ),
        pytest.param(
            ["submit", "{pairs}", *SUBMIT_FLAGS, "--n-segments", "2", "--batch-size", "3", *_OUT],
            "--batch-size",
            id="both-sizes",
        ),
        pytest.param(
            [*_SUBMIT, "--option", "bogus_knob=1"],
            "bogus_knob",
            id="unknown-option",
        ),
        pytest.param(
            ["submit", "{bad}", *SUBMIT_FLAGS, "--n-segments", "2", *_OUT],
            "text2",
            id="missing-column",
        ),
        pytest.param(["resume", "{empty}", "--no-progress"], "registry", id="no-registry"),
        pytest.param(["resume", "{empty}", "--per-job-delay", "0"], "per-job-delay", id="delay-0"),
        pytest.param(["resume", "{empty}", "--rate-limit", "openai=0"], "rate-limit", id="rate-0"),
        pytest.param(["resume", "{empty}", "--rate-limit", "openai=abc"], "abc", id="rate-abc"),
        pytest.param(["resume", "{empty}", "--rate-limit", "foo=1"], "PROVIDER", id="rate-who"),
        pytest.param(["resume", "{empty}", "--max-concurrency", "0"], "concurrency", id="conc-0"),
        pytest.param(["resume", "{empty}", "--interval-seconds", "nan"], "finite", id="nan"),
        pytest.param(["resume", "{empty}", "--timeout", "-1"], "timeout", id="timeout"),
        pytest.param(["status", "{pairs}"], "not a run folder", id="status-file"),
        pytest.param(["resume", "--no-progress"], "run folder is required", id="no-folder"),
        pytest.param(
            ["status", "{empty}", "--output-dir", "{pairs}"], "two run folders", id="two-folders"
        ),
        pytest.param(["retry", "--output-dir", "{empty}"], "not a run folder", id="retry-opt"),
        pytest.param(["cancel", "--output-dir", "{pairs}"], "not a run folder", id="cancel-opt"),
        pytest.param(["retry", "{empty}"], "not a run folder", id="retry-empty"),
        pytest.param(["retry", "{pairs}"], "not a run folder", id="retry-file"),
        pytest.param(["cancel", "{empty}"], "not a run folder", id="cancel-empty"),
        pytest.param(["retry", "{empty}", "--codes", " , "], "names no error code", id="codes"),
        pytest.param(
            ["submit", "{pairs}", *SUBMIT_FLAGS, "--n-segments", "2", "--output-dir", "{pairs}"],
            "is a file",
            id="out-is-file",
        ),
        pytest.param(
            [*_SUBMIT, "--template-file", "{empty}"],
            "is a folder",
            id="template-dir",
        ),
        pytest.param(
            [*_SUBMIT, "--template-file", "{binary}"],
            "not UTF-8",
            id="template-binary",
        ),
        pytest.param([*_SUBMIT, "--price", "-1,2"], "--price: must be a finite", id="price-neg"),
        pytest.param(
            [*_SUBMIT, "--option", "temperature=nan"],
            "finite",
            id="option-nan",
        ),
        pytest.param(["resume", "{binreg}", "--no-progress"], "not UTF-8", id="binary-registry"),
        pytest.param(
            [*_SUBMIT, "--option", "temperature=0", "--option", "temperature=1"],
            "--option temperature is given twice",
            id="option-twice",
        ),
        pytest.param(["report", "{empty}", "--out", "{empty}"], "is a folder", id="report-dir"),
        pytest.param(
            ["report", "{empty}", "--out", "{pairs}/r.html"], "not a folder", id="report-file"
        ),
        pytest.param(
            ["submit", "{ragged}", *SUBMIT_FLAGS, "--n-segments", "2", *_OUT],
            "ragged.csv: row 2 (line 3) has 5 field(s), the header has 4",
            id="ragged-pairs",
        ),
        pytest.param(
            ["submit", "{pairs}", "--backend", "foo", "--model", "m"], "foo", id="backend"
        ),
    ],
)
async def test_usage_errors_exit_2_with_one_line(
    tmp_path: Path, pairs_csv: tuple[Path, pl.DataFrame], args: list[str], needle: str
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    binary = tmp_path / "template.txt"
    binary.write_bytes(b"\xff\xfe{SAMPLE_1}")
    binreg = tmp_path / "binreg"
    binreg.mkdir()
    (binreg / "jobs_registry.csv").write_bytes(b"segment_index,provider\n\xff\x00\x01")
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("ID1,text1,ID2,text2\na,x,b,y\nc,x,d,y,z\n")
    names = {
        "ragged": ragged,
        "pairs": pairs_csv[0],
        "bad": _write_bad_pairs(tmp_path),
        "out": tmp_path / "out",
        "empty": empty,
        "binary": binary,
        "binreg": binreg,
    }
    argv = [a.format(**names) for a in args]
    # A key is present so that the failure is the one under test, not a missing key;
    # the base URL is a closed loopback port, which no usage error may reach.
    env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    ran = await run_cli(*argv, env=env)
    assert ran.rc == 2, (ran.stdout, ran.stderr)
    lines = [line for line in ran.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, ran.stderr
    assert "error" in lines[0] and needle in lines[0], lines[0]
    assert "Traceback" not in ran.stderr
    # Input errors are caught before anything is submitted or written.
    assert not (tmp_path / "out" / "jobs_registry.csv").exists()
    assert list(empty.iterdir()) == []  # not even a lock file


async def test_cancel_then_resume_collects(
    tmp_path: Path, pairs_csv: tuple[Path, pl.DataFrame]
) -> None:
    path, pairs = pairs_csv
    out = tmp_path / "run"
    async with ProviderEmulator(latency=8.0) as emu:
        env = emu.env()
        await submit_two_segments(path, out, env)
        ran = await run_cli("cancel", out, env=env)
        assert ran.rc == 0, ran.stderr
        assert "2 batch(es) cancelled" in ran.stdout
        assert all(j.raw_status == "cancelling" and not j.done for j in read_registry(out))

        ran = await run_cli("resume", out, "--interval-seconds", "0.2", "--no-progress", env=env)
        # Cancelled batches are batch failures: done, but not succeeded.
        assert ran.rc == 1, ran.stdout + ran.stderr
        ran = await run_cli("cancel", out, env=env)
        assert ran.rc == 0, ran.stderr
        assert "nothing to cancel" in ran.stdout and "resume" not in ran.stdout
    jobs = read_registry(out)
    assert all(j.done and j.status is JobStatus.CANCELLED for j in jobs)
    results = [pl.read_parquet(j.results_path) for j in jobs if Path(j.results_path).exists()]
    failed = pl.concat([pl.read_parquet(j.failed_path) for j in jobs])
    n_results = sum(r.height for r in results)
    assert n_results + failed.filter(~pl.col("is_duplicate")).height == pairs.height


async def test_demo_small(tmp_path: Path) -> None:
    ran = await run_cli(
        "demo", "--output-dir", "tmp", "--pairs", "30", "--latency", "0.5", cwd=tmp_path
    )
    assert ran.rc == 0, ran.stdout + ran.stderr
    assert "30 pairs x 2 orders x 3 providers" in ran.stdout
    assert "verdicts equal to the emulator judge's answers: 180/180" in ran.stdout
    assert "McNemar p" in ran.stdout and "top scores:" in ran.stdout
    assert (tmp_path / "tmp" / "report.html").stat().st_size > 10_000
    for provider in ("openai", "anthropic", "gemini"):
        assert provider in ran.stdout
        combined = tmp_path / "tmp" / provider / "combined_results.csv"
        assert combined.exists()
        assert read_combined(combined).height == 60
    # A finished demo is replaced by the next one; nothing is refused.
    again = await run_cli(
        "demo", "--output-dir", "tmp", "--pairs", "10", "--latency", "0.2", cwd=tmp_path
    )
    assert again.rc == 0, again.stderr


@pytest.mark.parametrize("command", ["submit", "resume", "adaptive", "retry"])
async def test_help_shows_no_misleading_defaults(command: str) -> None:
    ran = await run_cli(command, "--help")
    assert ran.rc == 0, ran.stderr
    # An on/off flag's "default" is the opposite of what the flag does; None says nothing.
    for noise in ("(default: True)", "(default: False)", "(default: None)"):
        assert noise not in ran.stdout, (noise, ran.stdout)
    if command in ("submit", "resume"):
        assert "(default: 60.0)" in ran.stdout or "(default: as_given)" in ran.stdout


async def test_ctrl_c_says_how_to_go_on_and_exits_130(
    tmp_path: Path, pairs_csv: tuple[Path, pl.DataFrame]
) -> None:
    path, _ = pairs_csv
    out = tmp_path / "my run"
    async with ProviderEmulator(latency=60.0) as emu:
        env = emu.env()
        await submit_two_segments(path, out, env)
        polls = emu.stats.count("openai")
        proc = await asyncio.create_subprocess_exec(
            *CLI,
            "resume",
            str(out),
            "--interval-seconds",
            "0.2",
            stderr=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            env=cli_env(env),
        )
        # Interrupted once it is polling (a Ctrl-C during start-up is Python's own).
        for _ in range(300):
            if emu.stats.count("openai") > polls + 2:
                break
            await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 130, err
    lines = err.decode().strip().splitlines()
    assert lines == [
        f"interrupted; the registry is consistent, run `pairbatch resume '{out}'` to go on"
    ]
    assert all(not job.done for job in read_registry(out))


async def test_a_combined_csv_path_alone_writes_the_file(
    tmp_path: Path, pairs_csv: tuple[Path, pl.DataFrame]
) -> None:
    path, pairs = pairs_csv
    out = tmp_path / "run"
    async with ProviderEmulator(latency=0.1) as emu:
        env = emu.env()
        await submit_two_segments(path, out, env)
        # The path without --write-combined-csv: asking where it goes means it is wanted.
        ran = await run_cli(
            "resume", out, "--interval-seconds", "0.05", "--no-progress",
            "--combined-csv-path", "all.csv", env=env,
        )  # fmt: skip
    assert ran.rc == 0, ran.stderr
    assert f"combined results: {out / 'all.csv'}" in ran.stdout
    assert pl.read_csv(out / "all.csv").height == pairs.height
