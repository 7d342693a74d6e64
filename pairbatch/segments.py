"""Phase 1 of a submit (blocking): the pairs checked and split into segments, then each
segment's pairs file and request file written, then the run's settings; nothing is sent.

Used by :mod:`pairbatch.submit` for a new run and by :mod:`pairbatch.retries` for the
segments of pairs sent again. No intent exists until this phase is over, so a failure
here removes what it wrote: nothing can refer to it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import polars as pl

from pairbatch import _crash
from pairbatch.design import apply_order
from pairbatch.errors import InputError, PairbatchError
from pairbatch.integrity import describe
from pairbatch.models import Job, JobStatus, Provider, utcnow
from pairbatch.pairs import (
    PairsSource,
    assign_custom_ids,
    check_no_self_pairs,
    load_pairs,
    split_pairs,
    with_pair_keys,
    write_segment_pairs,
)
from pairbatch.prompts import validate_template
from pairbatch.providers.base import write_request_file
from pairbatch.settings import SETTINGS_NAME, write_settings


@attrs.frozen
class Plan:
    """The run's prompt and trait, checked: what every request file is built from."""

    trait_name: str
    trait_description: str
    template: str

    @classmethod
    def check(
        cls,
        *,
        model: object,
        trait_name: object,
        trait_description: object,
        template: str,
        retries: tuple[object, ...],
    ) -> Plan:
        """The plan, or one :class:`InputError` line naming the bad argument
        (``retries``: ``openai_max_retries``, ``max_tries``, ``max_concurrency``)."""
        if not isinstance(model, str) or not model.strip():
            raise InputError("'model' must be a non-empty string")
        for name, value in (("trait_name", trait_name), ("trait_description", trait_description)):
            if not isinstance(value, str):
                raise InputError(f"'{name}' must be a string")
        names = ("openai_max_retries", "max_tries", "max_concurrency")
        for name, value in zip(names, retries, strict=True):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"'{name}' must be an integer >= 1, got {value!r}")
        assert isinstance(trait_name, str) and isinstance(trait_description, str)
        return cls(trait_name, trait_description, validate_template(template))


def load_segments(
    pairs: PairsSource,
    batch_size: int | None,
    n_segments: int | None,
    order: str,
    seed: int,
    backend: Any,
) -> list[pl.DataFrame]:
    """The pairs read, checked, put in ``order`` and split into segments, each within
    the provider's batch limits (an error names the segment that is not)."""
    table = load_pairs(pairs)
    if order == "as_given" and "order_role" in table.columns:
        check_no_self_pairs(table)  # a design made upstream keeps its own orders
        ordered = table
    else:
        ordered = apply_order(table, order, seed=seed)  # type: ignore[arg-type]
    segments = split_pairs(with_pair_keys(ordered), batch_size=batch_size, n_segments=n_segments)
    for index, segment in enumerate(segments, start=1):
        try:
            backend.check_limits(segment.height, 0)
        except InputError as exc:
            raise InputError(f"segment {index} ({segment.height} pairs): {exc}") from None
    return segments


def write_segments(
    out_dir: Path,
    segments: list[pl.DataFrame],
    provider: Provider,
    model: str,
    run_tag: str,
    plan: Plan,
    options: Mapping[str, Any],
    backend: Any,
    extra: Mapping[str, Any] | None,
    first_index: int = 1,
) -> list[Job]:
    """Phase 1 (blocking): every segment's pairs and request file, then the settings
    (``extra`` is added to them; ``None``: the caller writes them).

    On any failure (a full disk, say) the files written so far are removed: no intent
    exists yet, so nothing can refer to them.
    """
    jobs: list[Job] = []
    written: list[Path] = []
    try:
        offset = 0
        for index, segment in enumerate(segments, start=first_index):
            keyed = assign_custom_ids(segment, run_tag, index, offset)
            offset += segment.height
            job = intent_job(out_dir, index, provider, model, run_tag, segment.height)
            pairs_path, input_path = Path(job.pairs_path or ""), Path(job.batch_input_path)
            written += [pairs_path, input_path]
            write_segment_pairs(keyed, pairs_path)
            _crash.point(f"submit:pairs:{index}")
            write_request_file(
                backend,
                input_path,
                keyed,
                model=model,
                template=plan.template,
                trait_name=plan.trait_name,
                trait_description=plan.trait_description,
                options=options,
            )
            _crash.point(f"submit:requests:{index}")
            try:
                backend.check_limits(keyed.height, input_path.stat().st_size)
            except InputError as exc:
                raise InputError(f"segment {index} ({input_path.name}): {exc}") from None
            checks = (
                describe(pairs_path, rows=keyed.height, hashed=True),
                describe(input_path, rows=keyed.height, hashed=True),
            )
            jobs.append(attrs.evolve(job, files=checks))
        if extra is None:
            return jobs
        written.append(out_dir / SETTINGS_NAME)
        write_settings(
            out_dir,
            {
                "run_tag": run_tag,
                "provider": provider.value,
                "model": model,
                "trait_name": plan.trait_name,
                "trait_description": plan.trait_description,
                "prompt_template": plan.template,
                "options": dict(options),
                "segments": [job.segment_index for job in jobs],
                "created_at": utcnow().isoformat(),
                **extra,
            },
        )
        _crash.point("submit:settings")
    except BaseException as exc:
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink()
        if isinstance(exc, OSError | pl.exceptions.PolarsError):
            raise PairbatchError(f"cannot write the run folder {out_dir}: {exc}") from None
        raise
    return jobs


def intent_job(
    out_dir: Path, index: int, provider: Provider, model: str, run_tag: str, n_pairs: int
) -> Job:
    """Segment ``index``'s job before anything is sent: status ``intent``, its files'
    names in ``out_dir``."""
    return Job(
        segment_index=index,
        provider=provider,
        model=model,
        batch_input_path=str(out_dir / f"batch_{index:02d}_input.jsonl"),
        batch_output_path=str(out_dir / f"batch_{index:02d}_output.jsonl"),
        csv_path=str(out_dir / f"batch_{index:02d}_results.csv"),
        pairs_path=str(out_dir / f"batch_{index:02d}_pairs.parquet"),
        status=JobStatus.INTENT,
        n_pairs=n_pairs,
        run_tag=run_tag,
        updated_at=utcnow(),
    )
