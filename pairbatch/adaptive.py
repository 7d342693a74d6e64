"""Adaptive comparative judgement at batch prices: rounds of batches that choose their pairs.

A study folder holds one ordinary run folder per round (``round_000/``, ``round_001/``
...) and ``adaptive.json``, the study's settings (written atomically once, checked on
every later call). Nothing else is state: each call rebuilds the study from its rounds,
resuming every round folder that holds a run (a finished one costs no provider call),
and chooses the next round's pairs from the seed and the verdicts so far, so a re-run
after a kill at any instant chooses the same pairs and pays for no batch twice.

Round 0 is a random connected design; each later round fits Bradley–Terry and takes
the pairs whose verdicts are expected to shrink the scores' posterior variance most
(see :func:`pairbatch.adaptive_select.adaptive_round`). Needs ``pairbatch[analysis]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from pairbatch import _crash
from pairbatch._fs import atomic_write_bytes, atomic_writer
from pairbatch.adaptive_select import Design, Strategy
from pairbatch.adaptive_study import (
    EXHAUSTED,
    AdaptiveResult,
    StopRule,
    Study,
    check_sample_count,
    check_target,
    simulate_adaptive,
)
from pairbatch.analysis import require_extra
from pairbatch.design import SamplesSource, read_samples
from pairbatch.errors import InputError, PairbatchError
from pairbatch.lock import RunLock
from pairbatch.registry import holds_registry, read_registry
from pairbatch.resume import resume_multi_batches
from pairbatch.runfolder import abandon_new_run
from pairbatch.session import check_number
from pairbatch.submit import submit_pairs_multi_batch
from pairbatch.transport import Transport

log = logging.getLogger("pairbatch.adaptive")

SETTINGS_NAME = "adaptive.json"
SETTINGS_VERSION = 1
# Settings that fix the pairs of every round: a re-run must not change them. Stopping
# rules may change (raise max_rounds to continue a study that stopped there).
DESIGN_KEYS = (
    "samples_digest",
    "seed",
    "pairs_per_round",
    "max_repeats",
    "max_per_text",
    "strategy",
    "steer_prior_sd",
    "backend",
    "model",
    "trait_name",
    "trait_description",
)

__all__ = [
    "AdaptiveResult",
    "Design",
    "StopRule",
    "plot_rounds",
    "round_folder",
    "run_adaptive",
    "simulate_adaptive",
]


def round_folder(study_dir: str | os.PathLike[str], index: int) -> Path:
    return Path(study_dir) / f"round_{index:03d}"


def samples_digest(samples: pl.DataFrame) -> str:
    """A digest of the ``ID, text`` rows: the study must be re-run on the same samples."""
    digest = hashlib.blake2b(digest_size=16)
    for sample_id, text in samples.select("ID", "text").iter_rows():
        digest.update(orjson.dumps([sample_id, text]))
    return digest.hexdigest()


def _check_settings(study_dir: Path, settings: dict[str, Any]) -> None:
    """Write the settings on the first call; on later calls refuse a changed design."""
    path = study_dir / SETTINGS_NAME
    if path.exists():
        try:
            stored = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise InputError(f"{path} is not valid JSON ({exc})") from None
        changed = [k for k in DESIGN_KEYS if stored.get(k) != settings[k]]
        if changed:
            shown = ", ".join(f"{k}: {stored.get(k)!r} -> {settings[k]!r}" for k in changed)
            raise InputError(
                f"{study_dir} holds a study with other settings ({shown}); "
                "use the same settings to continue it, or another folder"
            )
        if all(stored.get(k) == v for k, v in settings.items()):
            return
    atomic_write_bytes(path, orjson.dumps(settings, option=orjson.OPT_INDENT_2))


def _abandon(study_dir: Path, lock: RunLock, created: bool) -> None:
    """Undo a study's first call that paid for nothing: its settings, and the folder
    with its lock when this call made it (only if nothing else is in it)."""
    with contextlib.suppress(FileNotFoundError):
        (study_dir / SETTINGS_NAME).unlink()
    abandon_new_run(study_dir, lock, created)


def _submitted(folder: Path) -> int:
    return sum(job.n_pairs for job in read_registry(folder))


async def run_adaptive(
    samples: SamplesSource,
    *,
    backend: str,
    model: str,
    trait_name: str,
    trait_description: str,
    output_dir: str | os.PathLike[str],
    target_reliability: float = 0.9,
    stability: float = 0.98,
    pairs_per_round: int | None = None,
    max_rounds: int = 10,
    max_comparisons: int | None = None,
    max_repeats: int = 2,
    max_per_text: int | None = None,
    strategy: Strategy = "adaptive",
    steer_prior_sd: float = 1.5,
    interval_seconds: float = 60,
    seed: int = 0,
    api_key: str | None = None,
    base_url: str | None = None,
    transport: Transport | None = None,
    **submit_options: Any,
) -> AdaptiveResult:
    """Run (or continue) an adaptive study in ``output_dir``; return its scores and rounds.

    ``samples``: an ``ID, text`` frame or file, as :func:`pairbatch.design.read_samples`
    takes it. Each round submits ``pairs_per_round`` comparisons (default: one per text)
    with :func:`pairbatch.submit_pairs_multi_batch` (``submit_options`` pass through:
    ``n_segments`` or ``batch_size``, default one batch a round; provider options) and
    waits for them with :func:`pairbatch.resume_multi_batches`, polling every
    ``interval_seconds``. The study stops when the reported reliability reaches
    ``target_reliability`` while the Spearman correlation of consecutive rounds' scores
    is at least ``stability``, after ``max_rounds`` rounds, or when ``max_comparisons``
    have been submitted (round 0 is never cut short: its design must be connected).

    Killed at any instant and called again with the same arguments, it continues where
    it stopped; a round folder that holds a run is resumed, never submitted again.
    ``strategy="random"`` runs the random baseline (a fresh balanced design each round).
    ``steer_prior_sd``: the SD of the Gaussian prior of the regularised fit that steers
    the pair choice and is returned as ``scores`` (``mle_scores``: the unpenalised fit).
    """
    require_extra()
    frame = await asyncio.to_thread(read_samples, samples)
    check_sample_count(frame)  # before the default round size is taken from it
    design = Design(
        seed=seed,
        pairs_per_round=frame.height if pairs_per_round is None else pairs_per_round,
        max_repeats=max_repeats,
        max_per_text=max_per_text,
        strategy=strategy,
    )
    stop = StopRule(
        target_reliability=check_target(target_reliability, "target_reliability"),
        stability=check_target(stability, "stability"),
        max_rounds=max_rounds,
        max_comparisons=max_comparisons,
    )
    # Built before anything is written: it refuses bad input (too few samples, a bad
    # prior, a budget below round 0's design) while the study folder is still untouched.
    study = Study(frame, design, stop, steer_prior_sd=steer_prior_sd)
    study_dir = Path(output_dir)
    settings = {
        "version": SETTINGS_VERSION,
        "samples_digest": samples_digest(frame),
        "n_samples": frame.height,
        **{k: getattr(design, k) for k in ("seed", "pairs_per_round", "max_repeats")},
        "max_per_text": design.max_per_text,
        "strategy": design.strategy,
        "steer_prior_sd": steer_prior_sd,
        "backend": str(backend),
        "model": model,
        "trait_name": trait_name,
        "trait_description": trait_description,
        "target_reliability": stop.target_reliability,
        "stability": stop.stability,
        "max_rounds": stop.max_rounds,
        "max_comparisons": stop.max_comparisons,
    }
    # resume would refuse a bad interval only after round 0 had been paid for.
    check_number("interval_seconds", interval_seconds, low=0)
    created = not await asyncio.to_thread(study_dir.exists)
    await asyncio.to_thread(study_dir.mkdir, parents=True, exist_ok=True)
    # One writer per study: two would each choose, and pay for, the next round.
    lock = RunLock(study_dir, "adaptive")
    await asyncio.to_thread(lock.acquire)
    fresh = not await asyncio.to_thread((study_dir / SETTINGS_NAME).exists)
    try:
        await asyncio.to_thread(_check_settings, study_dir, settings)
        submit_options.setdefault("n_segments", None if "batch_size" in submit_options else 1)
        resume_keys: dict[str, Any] = {
            "api_keys": {str(backend): api_key} if api_key else None,
            "base_urls": {str(backend): base_url} if base_url else None,
            "transport": transport,
        }
        reason: str | None = None
        while reason is None:
            index = study.next_round
            folder = round_folder(study_dir, index)
            if not await asyncio.to_thread(holds_registry, folder):
                # A round folder holding a run was paid for: it is resumed whatever the
                # stopping rule says now, so only an unstarted round may be skipped.
                reason = study.stop_reason()
                if reason is not None:
                    break
                pairs = await asyncio.to_thread(study.next_pairs)
                if pairs.height == 0:
                    reason = EXHAUSTED
                    break
                _crash.point(f"adaptive:chosen:{index}")
                log.info("adaptive round %d: submitting %d pairs", index, pairs.height)
                await submit_pairs_multi_batch(
                    pairs,
                    model=model,
                    trait_name=trait_name,
                    trait_description=trait_description,
                    backend=backend,
                    output_dir=folder,
                    api_key=api_key,
                    base_url=base_url,
                    transport=transport,
                    **submit_options,
                )
                _crash.point(f"adaptive:submitted:{index}")
            resumed = await resume_multi_batches(
                output_dir=folder, interval_seconds=interval_seconds, **resume_keys
            )
            unfinished = [job for job in resumed.jobs if not job.done]
            if unfinished:
                raise PairbatchError(
                    f"round {index} ({folder}) has {len(unfinished)} unfinished batch(es): "
                    + "; ".join(resumed.errors[:3])
                )
            submitted = await asyncio.to_thread(_submitted, folder)
            await asyncio.to_thread(study.add_round, resumed.combined, submitted)
            _crash.point(f"adaptive:resumed:{index}")
    except BaseException:
        # Refused before round 0 was submitted (a bad submit option, a missing key):
        # what this call wrote goes again, so bad input leaves the disk as it was.
        if fresh and not await asyncio.to_thread(holds_registry, round_folder(study_dir, 0)):
            await asyncio.to_thread(_abandon, study_dir, lock, created)
        raise
    finally:
        lock.release()
    assert reason is not None
    return study.result(reason, study_dir)


def plot_rounds(result: AdaptiveResult, path: str | os.PathLike[str]) -> Path:
    """A PNG of reported reliability and ranking stability per round (``pairbatch[report]``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise InputError("the plot needs matplotlib: pip install 'pairbatch[report]'") from exc
    rounds = result.rounds
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(rounds["total_comparisons"], rounds["reliability"], "o-", label="reliability")
    ax.plot(rounds["total_comparisons"], rounds["stability"], "s--", label="stability")
    ax.set_xlabel("comparisons")
    low = min(0.0, *(r for r in rounds["reliability"].to_list() if r == r))
    ax.set_ylim(low, 1.02)
    ax.set_title(f"adaptive study: stopped ({result.stopped_because})")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    with atomic_writer(out) as handle:  # written whole or not at all, folder made
        fig.savefig(handle, format="png", dpi=120)
    plt.close(fig)
    return out
