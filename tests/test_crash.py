"""Kill a resuming process with SIGKILL mid-run; a second run must finish the job exactly."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import polars as pl

import pairbatch
from pairbatch import registry as reg
from pairbatch.testing import ProviderEmulator
from tests.engine_helpers import check_run, credentials, study_pairs, submit_to

RESUME = """
import asyncio, json, sys
import pairbatch
creds = json.loads(sys.argv[2])
asyncio.run(pairbatch.resume_multi_batches(output_dir=sys.argv[1], interval_seconds=0.05, **creds))
"""


def verdicts(result: pairbatch.ResumeResult) -> pl.DataFrame:
    return result.combined.select("ID1", "ID2", "better_id", "winner_pos").sort(pl.all())


async def test_sigkill_mid_run_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    import json

    pairs = study_pairs(60, seed=9)
    async with ProviderEmulator(latency=(0.3, 4.0), seed=21) as emu:
        creds = credentials(emu)
        for name in ("crashed", "clean"):
            await submit_to(
                emu, "openai", pairs, tmp_path / name, n_segments=10, write_registry=True
            )
        crashed = tmp_path / "crashed"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            RESUME,
            str(crashed),
            json.dumps(creds),
            env=os.environ.copy(),
        )
        done_before: list[reg.Job] = []
        for _ in range(400):
            await asyncio.sleep(0.025)
            jobs = reg.read_registry(crashed)
            done_before = [j for j in jobs if j.done]
            if len(done_before) >= 3:
                break
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        assert proc.returncode == -signal.SIGKILL
        done_before = [j for j in reg.read_registry(crashed) if j.done]
        assert 0 < len(done_before) < 10, "the kill should land mid-run"
        stamps = {j.segment_index: Path(j.results_path).stat().st_mtime_ns for j in done_before}
        downloads_before = emu.stats.count("openai", "files.content")

        after_crash = await pairbatch.resume_multi_batches(
            output_dir=crashed,
            interval_seconds=0.05,
            **creds,  # type: ignore[arg-type]
        )
        uninterrupted = await pairbatch.resume_multi_batches(
            output_dir=tmp_path / "clean",
            interval_seconds=0.05,
            **creds,  # type: ignore[arg-type]
        )
        downloads = emu.stats.count("openai", "files.content") - downloads_before

    assert after_crash.all_done and uninterrupted.all_done
    check_run(after_crash, pairs)
    assert verdicts(after_crash).equals(verdicts(uninterrupted))
    # Jobs marked done before the kill were not downloaded or rewritten again.
    for job in done_before:
        assert Path(job.results_path).stat().st_mtime_ns == stamps[job.segment_index]
    assert downloads <= (10 - len(done_before)) + 10  # the rest, plus the clean run's 10
    # A download the kill cut short was started over, not left half-written.
    assert [p.name for p in crashed.iterdir() if p.name.endswith(".part")] == []
