"""An example service: comparative-judgement runs over HTTP, with pairbatch doing the work.

Run it from the repository root::

    uvicorn examples.fastapi_app:app                     # runs under ./runs, 60 s polls
    PAIRBATCH_RUNS_DIR=/data/runs PAIRBATCH_INTERVAL_SECONDS=30 \\
        uvicorn --factory examples.fastapi_app:app_from_env

Keys and endpoints come from the usual environment variables (``OPENAI_API_KEY``,
``OPENAI_BASE_URL`` ...). To try it with no keys and no network, run ``pairbatch emulator``
in another terminal and paste the ``export`` lines it prints before starting uvicorn.

Endpoints:

``POST /runs``
    Body: ``{"pairs": [{"ID1", "text1", "ID2", "text2"}, ...], "backend": "openai",
    "model": "gpt-4.1-mini", "trait_name": ..., "trait_description": ..., "n_segments": 4}``
    (or ``"batch_size"``; provider options such as ``temperature`` go in ``"options"``).
    Creates the batches with the registry written to ``<runs_dir>/<run_id>`` and answers
    201 with the run's status; polling then goes on in a background task.
``GET /runs``
    Every run this service knows about, with its state.
``GET /runs/{run_id}``
    State (``running``, ``succeeded``, ``completed_with_failures``, ``error``,
    ``stopped``), per-job status, done counts, errors and the latest events.
``GET /runs/{run_id}/results?format=json|csv``
    The results of every finished batch (and, in JSON, the failed attempts and batch
    failures). ``complete`` (JSON) or the ``X-Run-Complete`` header (CSV) says whether
    every batch is done.
``POST /webhooks/openai``, ``POST /webhooks/gemini``
    Signed "batch finished" events (:mod:`pairbatch.webhooks`), mounted when a secret is
    set: ``OPENAI_WEBHOOK_SECRET`` (the ``whsec_...`` shown when you create the endpoint
    in the OpenAI dashboard, subscribed to ``batch.*``) and/or ``GEMINI_WEBHOOK_SECRET``
    (a static Gemini webhook's signing secret). A verified event wakes the background
    resume polling that batch, so it is collected at once rather than at the next poll;
    the poll still confirms the state, and without webhooks polling works as before.

Design: everything lives on ``app.state`` and is built in the lifespan, so two apps (or two
runs) share nothing but what they are given; one :class:`pairbatch.wakeups.Wakeups` per
app is shared by its webhook receiver and all of its background resumes. One
:class:`pairbatch.transport.Transport` per app carries every run's requests under one set
of rate limits. The lifespan resumes unfinished runs found in ``runs_dir`` at startup and,
on shutdown, cancels the resume tasks and waits for them: pairbatch leaves each registry
consistent, so the next start picks up where this one stopped without paying for any
batch twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import re
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import polars as pl
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

import pairbatch
from pairbatch import Event, EventKind, Job, JobStatus, Provider, ResumeResult
from pairbatch.settings import read_settings, resolve_api_key
from pairbatch.transport import Transport
from pairbatch.wakeups import Wakeups
from pairbatch.webhooks import SECRET_ENV, WebhookReceiver

log = logging.getLogger("pairbatch.examples.fastapi")

RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_FAILED_STATUSES = (JobStatus.FAILED, JobStatus.EXPIRED, JobStatus.CANCELLED)
# Names submit_pairs_multi_batch takes itself: never accepted as provider options.
_RESERVED = frozenset(inspect.signature(pairbatch.submit_pairs_multi_batch).parameters)
_CSV_DATETIME = "%Y-%m-%dT%H:%M:%S%.fZ"

RunStateName = Literal["running", "succeeded", "completed_with_failures", "error", "stopped"]


# ---------------------------------------------------------------- request bodies


class PairIn(BaseModel):
    """One comparison. IDs are any strings (numbers are taken as text)."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    ID1: str
    text1: str
    ID2: str
    text2: str
    pair_uid: str | None = None


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pairs: list[PairIn] = Field(min_length=1)
    backend: Literal["openai", "anthropic", "gemini"]
    model: str = Field(min_length=1)
    trait_name: str
    trait_description: str
    prompt_template: str | None = None
    batch_size: int | None = Field(default=None, ge=1)
    n_segments: int | None = Field(default=None, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_size(self) -> RunRequest:
        if (self.batch_size is None) == (self.n_segments is None):
            raise ValueError("give exactly one of 'batch_size' and 'n_segments'")
        clash = sorted(set(self.options) & _RESERVED)
        if clash:
            raise ValueError(f"options may not set {', '.join(clash)}")
        return self

    def pairs_frame(self) -> pl.DataFrame:
        columns: dict[str, list[str | None]] = {
            name: [getattr(p, name) for p in self.pairs]
            for name in ("ID1", "text1", "ID2", "text2")
        }
        if any(p.pair_uid for p in self.pairs):
            columns["pair_uid"] = [p.pair_uid for p in self.pairs]
        return pl.DataFrame(columns, schema={name: pl.Utf8 for name in columns})


# ---------------------------------------------------------------- one run


@dataclass
class Run:
    """What the service knows about one run folder; updated by pairbatch's events."""

    run_id: str
    output_dir: Path
    jobs: dict[int, Job]
    settings: dict[str, Any] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    error: str | None = None
    provider_state: dict[int, str] = field(default_factory=dict)
    counts: dict[int, tuple[int, int]] = field(default_factory=dict)  # results, failed
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=50))
    n_events: int = 0

    @classmethod
    def from_disk(cls, run_id: str, output_dir: Path) -> Run:
        """Blocking: read the registry (CSV plus journal) and settings of a run folder."""
        try:
            jobs = pairbatch.read_registry(output_dir)
            settings = read_settings(output_dir)
        except (pairbatch.PairbatchError, OSError) as exc:
            return cls(run_id, output_dir, {}, error=f"unreadable run folder: {exc}")
        return cls(run_id, output_dir, {j.segment_index: j for j in jobs}, settings)

    def on_event(self, event: Event) -> None:
        """pairbatch's ``on_event`` hook: runs on the event loop, must not block."""
        index = event.job.segment_index
        self.jobs[index] = event.job
        self.n_events += 1
        if event.kind is EventKind.POLLED and event.detail:
            self.provider_state[index] = event.detail
        if event.kind in (EventKind.COMPLETED, EventKind.BATCH_FAILED):
            self.counts[index] = (event.n_results, event.n_failed)
            self.provider_state[index] = event.job.raw_status or event.job.status.value
        self.events.append(
            {
                "at": event.at,
                "kind": event.kind.value,
                "segment_index": index,
                "detail": event.detail,
            }
        )

    def apply_result(self, result: ResumeResult) -> None:
        for outcome in result.outcomes:
            index = outcome.job.segment_index
            n_results = 0 if outcome.results is None else outcome.results.height
            n_failed = 0
            if outcome.failed_attempts is not None and outcome.failed_attempts.height:
                n_failed = outcome.failed_attempts.filter(~pl.col("is_duplicate")).height
            self.counts[index] = (n_results, n_failed)
        for job in result.jobs:
            self.jobs[job.segment_index] = job

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    @property
    def complete(self) -> bool:
        return bool(self.jobs) and all(j.done for j in self.jobs.values())

    @property
    def state(self) -> RunStateName:
        if self.running:
            return "running"
        if self.error is not None or not self.jobs:
            return "error"
        if self.complete:
            ok = all(j.status is JobStatus.SUCCEEDED for j in self.jobs.values())
            return "succeeded" if ok else "completed_with_failures"
        if any(j.status is JobStatus.ERROR for j in self.jobs.values()):
            return "error"
        return "stopped"

    def status(self) -> dict[str, Any]:
        jobs = [self.jobs[k] for k in sorted(self.jobs)]
        errors = [f"run: {self.error}"] if self.error else []
        errors += [f"segment {j.segment_index}: {j.error}" for j in jobs if j.error]
        errors += [
            f"segment {j.segment_index}: batch {j.raw_status or j.status.value}"
            for j in jobs
            if j.done and j.status in _FAILED_STATUSES
        ]
        return {
            "run_id": self.run_id,
            "state": self.state,
            "complete": self.complete,
            "backend": self.settings.get("provider"),
            "model": self.settings.get("model"),
            "trait_name": self.settings.get("trait_name"),
            "created_at": self.settings.get("created_at"),
            "n_jobs": len(jobs),
            "n_done": sum(j.done for j in jobs),
            "n_succeeded": sum(j.status is JobStatus.SUCCEEDED for j in jobs),
            "n_pairs": sum(j.n_pairs for j in jobs),
            "jobs": [self._job_view(j) for j in jobs],
            "errors": errors,
            "n_events": self.n_events,
            "recent_events": list(self.events)[-10:],
        }

    def _job_view(self, job: Job) -> dict[str, Any]:
        n_results, n_failed = self.counts.get(job.segment_index, (None, None))
        return {
            "segment_index": job.segment_index,
            "provider": job.provider.value,
            "batch_id": job.batch_id,
            "status": job.status.value,
            "provider_state": self.provider_state.get(job.segment_index, job.raw_status),
            "done": job.done,
            "n_pairs": job.n_pairs,
            "n_results": n_results,
            "n_failed": n_failed,
            "error": job.error,
            "updated_at": job.updated_at,
        }


@dataclass
class RunFrames:
    results: pl.DataFrame
    failed_attempts: pl.DataFrame
    batch_failures: list[dict[str, Any]]


def load_frames(jobs: list[Job]) -> RunFrames:
    """Blocking: the per-batch Parquet files of the finished jobs, concatenated."""
    results: list[pl.DataFrame] = []
    failed: list[pl.DataFrame] = []
    failures: list[dict[str, Any]] = []
    for job in sorted(jobs, key=lambda j: j.segment_index):
        if not job.done:
            continue
        if Path(job.results_path).exists():
            results.append(pl.read_parquet(job.results_path))
        if Path(job.failed_path).exists():
            failed.append(pl.read_parquet(job.failed_path))
        if job.status in _FAILED_STATUSES:
            failures.append(
                {
                    "segment_index": job.segment_index,
                    "provider": job.provider.value,
                    "batch_id": job.batch_id,
                    "status": job.raw_status or job.status.value,
                }
            )

    def concat(frames: list[pl.DataFrame]) -> pl.DataFrame:
        frames = [f for f in frames if f.height]
        return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()

    return RunFrames(concat(results), concat(failed), failures)


# ---------------------------------------------------------------- the service


class RunService:
    """The runs of one app: submitting, background resumes, and an orderly shutdown."""

    def __init__(
        self,
        *,
        runs_dir: Path,
        transport: Transport,
        api_keys: Mapping[str, str] | None,
        base_urls: Mapping[str, str] | None,
        interval_seconds: float,
        wakeups: Wakeups | None = None,
    ) -> None:
        self.runs_dir = runs_dir
        self.wakeups = wakeups or Wakeups()
        self.transport = transport
        self.api_keys = dict(api_keys or {})
        self.base_urls = dict(base_urls or {})
        self.interval_seconds = interval_seconds
        self.runs: dict[str, Run] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    # -- lifecycle

    async def start(self) -> None:
        """Adopt the run folders already in ``runs_dir``; resume the unfinished ones."""
        await asyncio.to_thread(self.runs_dir.mkdir, parents=True, exist_ok=True)
        for run_id, path in await asyncio.to_thread(self._run_folders):
            run = await asyncio.to_thread(Run.from_disk, run_id, path)
            self.runs[run_id] = run
            if run.error is None and not run.complete:
                log.info("resuming unfinished run %s", run_id)
                self._start_resume(run)

    def _run_folders(self) -> list[tuple[str, Path]]:
        return [
            (path.name, path)
            for path in sorted(self.runs_dir.iterdir())
            if RUN_ID_RE.match(path.name) and (path / "jobs_registry.csv").is_file()
        ]

    async def close(self) -> None:
        """Cancel every submit and resume task and wait for them to finish cleaning up."""
        self._closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                log.error("task failed during shutdown: %r", result)

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        # A submit whose client went away has nobody awaiting it: log its error here.
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.debug("task %s ended with %r", task.get_name(), exc)

    # -- runs

    def get(self, run_id: str) -> Run | None:
        return self.runs.get(run_id)

    async def submit(self, body: RunRequest) -> Run:
        if self._closing:
            raise HTTPException(503, "the service is shutting down")
        provider = Provider.parse(body.backend)
        # Fail before anything is written, rather than leave a run that cannot poll.
        resolve_api_key(provider, self.api_keys.get(provider.value))
        run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"
        # The submit runs in its own tracked task: a client that disconnects mid-request
        # does not stop it half-way, and shutdown cancels and awaits it like a resume.
        task = asyncio.create_task(self._submit(run_id, body), name=f"submit-{run_id}")
        self._track(task)
        return await asyncio.shield(task)

    async def _submit(self, run_id: str, body: RunRequest) -> Run:
        output_dir = self.runs_dir / run_id
        submitted = await pairbatch.submit_pairs_multi_batch(
            body.pairs_frame(),
            model=body.model,
            trait_name=body.trait_name,
            trait_description=body.trait_description,
            prompt_template=body.prompt_template or pairbatch.DEFAULT_TEMPLATE,
            backend=body.backend,
            batch_size=body.batch_size,
            n_segments=body.n_segments,
            output_dir=output_dir,
            write_registry=True,
            api_key=self.api_keys.get(body.backend),
            base_url=self.base_urls.get(body.backend),
            transport=self.transport,
            **body.options,
        )
        settings = await asyncio.to_thread(read_settings, output_dir)
        run = Run(run_id, output_dir, {j.segment_index: j for j in submitted.jobs}, settings)
        self.runs[run_id] = run
        # Segments that failed to submit are retried by resume, after it checks that no
        # batch was created for them.
        self._start_resume(run)
        return run

    def _start_resume(self, run: Run) -> None:
        run.error = None
        run.task = asyncio.create_task(self._resume(run), name=f"resume-{run.run_id}")
        self._track(run.task)

    async def _resume(self, run: Run) -> None:
        try:
            result = await pairbatch.resume_multi_batches(
                None,
                run.output_dir,
                interval_seconds=self.interval_seconds,
                write_registry=True,
                write_combined_csv=True,
                api_keys=self.api_keys or None,
                base_urls=self.base_urls or None,
                transport=self.transport,
                on_event=run.on_event,
                wakeups=self.wakeups,
            )
        except Exception as exc:
            log.exception("run %s: resume failed", run.run_id)
            run.error = f"{type(exc).__name__}: {exc}"
        else:
            run.apply_result(result)
            log.info("run %s finished: %s", run.run_id, run.state)


# ---------------------------------------------------------------- the app


def _service(request: Request) -> RunService:
    service: RunService = request.app.state.runs
    return service


Service = Annotated[RunService, Depends(_service)]


def _json(
    payload: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    # orjson: datetimes as RFC 3339, NaN as null, and fast on large result lists.
    return Response(
        orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS),
        status_code=status_code,
        media_type="application/json",
        headers=dict(headers or {}),
    )


async def _find(service: RunService, run_id: str) -> Run:
    if not RUN_ID_RE.match(run_id):
        raise HTTPException(404, "no such run")
    run = service.get(run_id)
    if run is not None:
        return run
    # A run folder written by someone else (the CLI, another process) is reported from
    # its registry on disk, but not adopted: only one process should poll a run.
    path = service.runs_dir / run_id
    if await asyncio.to_thread((path / "jobs_registry.csv").is_file):
        return await asyncio.to_thread(Run.from_disk, run_id, path)
    raise HTTPException(404, "no such run")


def create_app(
    *,
    runs_dir: Path,
    api_keys: Mapping[str, str] | None = None,
    base_urls: Mapping[str, str] | None = None,
    interval_seconds: float = 60.0,
    max_concurrency: int = 32,
    rate_limits: Mapping[str, float] | None = None,
    webhook_secrets: Mapping[str, str] | None = None,
) -> FastAPI:
    """A pairbatch service over ``runs_dir``. Nothing is touched until the app starts.

    ``webhook_secrets`` (by provider; default ``OPENAI_WEBHOOK_SECRET`` and
    ``GEMINI_WEBHOOK_SECRET``) mounts the webhook receiver under ``/webhooks``.
    """
    keys = dict(api_keys or {})
    urls = dict(base_urls or {})
    limits = dict(rate_limits or {})
    wakeups = Wakeups()
    receiver = webhook_receiver(wakeups, webhook_secrets)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with Transport(max_concurrency=max_concurrency, rate_limits=limits) as transport:
            service = RunService(
                runs_dir=Path(runs_dir),
                transport=transport,
                api_keys=keys,
                base_urls=urls,
                interval_seconds=interval_seconds,
                wakeups=wakeups,
            )
            app.state.runs = service
            try:
                await service.start()
                yield
            finally:
                # Resume tasks first (they use the transport), then the transport.
                await service.close()

    app = FastAPI(title="pairbatch runs", lifespan=lifespan)
    app.state.wakeups = wakeups
    app.state.webhooks = receiver
    if receiver is not None:
        # A plain ASGI app: it reads the raw body itself (the signature covers its bytes).
        app.mount("/webhooks", receiver)

    @app.post("/runs", status_code=201)
    async def create_run(body: RunRequest, service: Service) -> Response:
        try:
            run = await service.submit(body)
        except pairbatch.InputError as exc:
            raise HTTPException(422, str(exc)) from None
        return _json(run.status(), 201, {"Location": f"/runs/{run.run_id}"})

    @app.get("/runs")
    async def list_runs(service: Service) -> Response:
        runs = [
            {"run_id": r.run_id, "state": r.state, "backend": r.settings.get("provider")}
            for r in service.runs.values()
        ]
        return _json({"runs": runs})

    @app.get("/runs/{run_id}")
    async def run_status(run_id: str, service: Service) -> Response:
        return _json((await _find(service, run_id)).status())

    @app.get("/runs/{run_id}/results")
    async def run_results(
        run_id: str,
        service: Service,
        format: Annotated[Literal["json", "csv"], Query()] = "json",
    ) -> Response:
        run = await _find(service, run_id)
        frames = await asyncio.to_thread(load_frames, list(run.jobs.values()))
        if format == "csv":
            text = await asyncio.to_thread(
                frames.results.write_csv, null_value="NA", datetime_format=_CSV_DATETIME
            )
            return Response(
                text,
                media_type="text/csv; charset=utf-8",
                headers={
                    "Content-Disposition": f'attachment; filename="{run.run_id}_results.csv"',
                    "X-Run-Complete": str(run.complete).lower(),
                },
            )
        return _json(
            {
                "run_id": run.run_id,
                "state": run.state,
                "complete": run.complete,
                "n_results": frames.results.height,
                "results": frames.results.to_dicts(),
                "failed_attempts": frames.failed_attempts.to_dicts(),
                "batch_failures": frames.batch_failures,
            }
        )

    return app


def webhook_receiver(
    wakeups: Wakeups, secrets: Mapping[str, str] | None = None
) -> WebhookReceiver | None:
    """The receiver for the secrets given or set in the environment; ``None`` if none is."""
    given = dict(secrets or {})
    chosen = {p: given.get(p) or os.environ.get(name) for p, name in SECRET_ENV.items()}
    if not any(chosen.values()):
        log.info("no webhook secret set: batches are noticed by polling only")
        return None
    return WebhookReceiver(wakeups, openai_secret=chosen["openai"], gemini_secret=chosen["gemini"])


def app_from_env() -> FastAPI:
    """``uvicorn --factory examples.fastapi_app:app_from_env``: settings from the environment."""
    return create_app(
        runs_dir=Path(os.environ.get("PAIRBATCH_RUNS_DIR", "runs")),
        interval_seconds=float(os.environ.get("PAIRBATCH_INTERVAL_SECONDS", "60")),
    )


# ``uvicorn examples.fastapi_app:app``. Building the app touches no disk: the runs folder
# is created and scanned by the lifespan, when the server starts.
app = app_from_env()
