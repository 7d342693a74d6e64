"""``pairbatch status`` text: every job for a small run; counts and the jobs to look at
for a big one."""

from __future__ import annotations

import polars as pl

from pairbatch.status_view import LIST_LIMIT, render


def table(
    n: int, *, failed: set[int] | None = None, pending: set[int] | None = None
) -> pl.DataFrame:
    failed, pending = failed or set(), pending or set()
    rows = []
    for k in range(1, n + 1):
        done = k not in pending
        status = "failed" if k in failed else ("succeeded" if done else "pending")
        rows.append(
            {
                "segment": k,
                "provider": "anthropic" if k % 2 else "openai",
                "batch_id": f"batch_{k:06d}",
                "state": status,
                "status": status,
                "done": done,
                "pairs": 10,
                "results": (0 if k in failed else 10) if done else None,
                "failed": (10 if k in failed else 0) if done else None,
                "age_min": 1.5,
                "error": "Batch status: failed (boom)" if k in failed else None,
            }
        )
    return pl.DataFrame(rows)


def test_a_small_run_lists_every_job() -> None:
    text = render(table(LIST_LIMIT, failed={3}))
    lines = text.splitlines()
    assert len(lines) == LIST_LIMIT + 2  # header, one line per job, the footer
    assert lines[-1] == f"{LIST_LIMIT} of {LIST_LIMIT} job(s) done"  # a failed job is done
    assert lines[3].split()[:4] == ["3", "anthropic", "batch_000003", "failed"]
    assert "Batch status" in lines[3]  # clipped to the 80 columns


def test_a_big_run_counts_then_lists_only_the_jobs_to_look_at() -> None:
    n = 10_000
    failed, pending = {7, 8000}, set(range(9001, 9101))
    text = render(table(n, failed=failed, pending=pending))
    lines = text.splitlines()
    assert len(lines) < 2 * LIST_LIMIT
    counts = {tuple(line.split()[:3]) for line in lines[1:7]}
    assert ("anthropic", "failed", "1") in counts and ("openai", "failed", "1") in counts
    assert ("openai", "pending", "50") in counts and ("anthropic", "pending", "50") in counts
    assert "jobs to look at (unfinished or not succeeded): 102" in lines
    shown = [line for line in lines if line.strip().startswith(("7 ", "8000 ", "9001 "))]
    assert len(shown) == 3  # the failed jobs and the first pending one, in segment order
    assert lines[-2] == f"... {102 - LIST_LIMIT} more; --all lists every job"
    assert lines[-1] == f"{n - len(pending)} of {n} job(s) done"
    every = render(table(n, failed=failed, pending=pending), show_all=True).splitlines()
    assert len(every) == n + 2
