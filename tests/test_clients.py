"""Each provider's HTTP client through a full cycle against the emulator."""

from __future__ import annotations

import asyncio
from pathlib import Path

import polars as pl
import pytest

from pairbatch.models import BatchState, Job, Provider
from pairbatch.pairs import assign_custom_ids, load_pairs, with_pair_keys
from pairbatch.prompts import DEFAULT_TEMPLATE
from pairbatch.providers import get_backend
from pairbatch.providers.base import BatchClient, write_request_file
from pairbatch.retry import RetryPolicy
from pairbatch.session import Session
from pairbatch.testing import FaultConfig, ProviderEmulator, expected_winner
from tests.engine_helpers import MODELS, study_pairs

POLICY = RetryPolicy(max_tries=6, base_delay=0.01, max_delay=0.05)


def prepare(
    tmp_path: Path, provider: str, n: int = 8, model: str | None = None, **options: object
) -> tuple[Job, pl.DataFrame, dict]:
    backend = get_backend(provider)
    model = model or MODELS[provider]
    prepared = backend.prepare_options(model, options)
    segment = assign_custom_ids(with_pair_keys(load_pairs(study_pairs(n))), "pbclient", 1, 0)
    job = Job(
        segment_index=1,
        provider=provider,
        model=model,
        batch_input_path=str(tmp_path / "batch_01_input.jsonl"),
        batch_output_path=str(tmp_path / "batch_01_output.jsonl"),
        csv_path=str(tmp_path / "batch_01_results.csv"),
        n_pairs=n,
        run_tag="pbclient",
    )
    write_request_file(
        backend,
        job.batch_input_path,
        segment,
        model=job.model,
        template=DEFAULT_TEMPLATE,
        trait_name="T",
        trait_description="D",
        options=prepared,
    )
    return job, segment, prepared


def session_for(emu: ProviderEmulator) -> Session:
    return Session(
        api_keys={p: "k" for p in MODELS},
        base_urls={p: emu.base_url(p) for p in MODELS},
        rate_limits={p: 200.0 for p in MODELS},
        max_tries={p: 6 for p in MODELS},
    )


async def wait_terminal(client: BatchClient, batch_id: str) -> object:
    for _ in range(200):
        status = await client.status(batch_id)
        if status.state.is_terminal:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError("batch never ended")


CASES = [
    ("openai", {}),
    # gpt-4.1-mini takes no reasoning effort (its profile refuses it): a gpt-5 model does.
    (
        "openai",
        {
            "include_thoughts": True,
            "reasoning": "low",
            "endpoint": "responses",
            "model": "gpt-5-mini",
        },
    ),
    ("anthropic", {}),
    ("anthropic", {"include_thoughts": True}),
    ("gemini", {"include_thoughts": True}),
    ("gemini", {"inline": False}),
]


@pytest.mark.parametrize(("provider", "options"), CASES)
async def test_full_cycle(tmp_path: Path, provider: str, options: dict[str, object]) -> None:
    faults = {provider: FaultConfig(server_error_rate=0.2, reset_rate=0.05)}
    async with (
        ProviderEmulator(latency=0.2, faults=faults, seed=3) as emu,
        session_for(emu) as session,
    ):
        job, segment, prepared = prepare(tmp_path, provider, **options)
        client = session.client(provider)
        batch_id = await client.submit(job, Path(job.batch_input_path), prepared)
        first = await client.status(batch_id)
        assert first.batch_id == batch_id and not first.state.is_terminal
        status = await wait_terminal(client, batch_id)
        assert status.state is BatchState.SUCCEEDED  # type: ignore[attr-defined]
        assert status.counts.total in (None, job.n_pairs)  # type: ignore[attr-defined]
        job = job.transition(batch_id=batch_id)
        downloaded = await client.download(job, status)  # type: ignore[arg-type]
        assert downloaded.output_path == Path(job.batch_output_path)
        raw = get_backend(provider).parse_results(downloaded.output_path)
        assert raw.height == job.n_pairs
        found = await client.find_batches(job)
        assert [(c.batch_id, c.proven) for c in found] == [(batch_id, True)]
    truth = {
        key: expected_winner(t1, t2)
        for key, t1, t2 in segment.select("custom_id", "text1", "text2").iter_rows()
    }
    assert dict(zip(raw["custom_id"], raw["better_sample"], strict=True)) == truth
    if options.get("include_thoughts"):
        assert raw["thoughts"].null_count() == 0
    assert raw["prompt_tokens"].null_count() == 0


@pytest.mark.parametrize("provider", sorted(MODELS))
async def test_cancel(tmp_path: Path, provider: str) -> None:
    async with ProviderEmulator(latency=30.0) as emu, session_for(emu) as session:
        job, _, prepared = prepare(tmp_path, provider)
        client = session.client(provider)
        batch_id = await client.submit(job, Path(job.batch_input_path), prepared)
        await client.cancel(batch_id)
        status = await wait_terminal(client, batch_id)
    assert status.state is BatchState.CANCELLED  # type: ignore[attr-defined]


async def test_openai_completed_with_only_an_error_file(tmp_path: Path) -> None:
    faults = {"openai": FaultConfig(batch_all_errored_rate=1.0)}
    async with ProviderEmulator(latency=0.2, faults=faults) as emu, session_for(emu) as session:
        job, _, prepared = prepare(tmp_path, "openai")
        client = session.client("openai")
        batch_id = await client.submit(job, Path(job.batch_input_path), prepared)
        status = await wait_terminal(client, batch_id)
        assert status.state is BatchState.SUCCEEDED  # type: ignore[attr-defined]
        assert status.output_ref is None and status.error_ref  # type: ignore[attr-defined]
        downloaded = await client.download(job.transition(batch_id=batch_id), status)  # type: ignore[arg-type]
    assert downloaded.output_path is None and downloaded.error_path is not None
    raw = get_backend("openai").parse_results(downloaded.error_path)
    assert raw.height == job.n_pairs
    assert set(raw["result_type"].to_list()) == {"errored"}
    assert raw["error_message"].null_count() == 0


async def test_missing_batch_is_a_clear_permanent_error(tmp_path: Path) -> None:
    from pairbatch.errors import ProviderError

    async with ProviderEmulator() as emu, session_for(emu) as session:
        for provider, missing in (
            ("openai", "batch_nope"),
            ("anthropic", "msgbatch_nope"),
            ("gemini", "batches/nope"),
        ):
            with pytest.raises(ProviderError) as info:
                await session.client(provider).status(missing)
            assert info.value.status == 404 and info.value.provider == provider


def test_client_reprs_hide_keys() -> None:
    session = Session(api_keys={p: "sk-secret-123" for p in MODELS})
    for provider in Provider:
        client = session.client(provider)
        assert "sk-secret-123" not in repr(client)
        assert "sk-secret-123" not in repr(session)


# ---------------------------------------------------------------- pre-flight, reasons, upload
#
# Two kinds of test below: through the emulator, and against a scripted transport for
# the answer shapes a test cannot make the emulator send.


def first_line(job: Job) -> dict:
    import orjson

    return orjson.loads(Path(job.batch_input_path).read_bytes().splitlines()[0])


@pytest.mark.parametrize("provider", sorted(MODELS))
async def test_preflight_through_the_emulator(tmp_path: Path, provider: str) -> None:
    async with ProviderEmulator() as emu, session_for(emu) as session:
        job, segment, prepared = prepare(tmp_path, provider)
        answer = await session.client(provider).preflight(first_line(job), prepared)
    text1, text2 = segment.select("text1", "text2").row(0)
    assert answer.better_sample == expected_winner(text1, text2)
    assert answer.prompt_tokens and answer.latency_s >= 0 and answer.raw_model


async def test_openai_failed_batch_reason_through_the_emulator(tmp_path: Path) -> None:
    faults = {"openai": FaultConfig(batch_failed_rate=1.0)}
    async with ProviderEmulator(latency=0.2, faults=faults) as emu, session_for(emu) as session:
        job, _, prepared = prepare(tmp_path, "openai")
        client = session.client("openai")
        batch_id = await client.submit(job, Path(job.batch_input_path), prepared)
        status = await wait_terminal(client, batch_id)
    assert status.state is BatchState.FAILED  # type: ignore[attr-defined]
    assert status.error  # type: ignore[attr-defined]


async def test_gemini_chunked_upload_through_the_emulator(tmp_path: Path) -> None:
    async with ProviderEmulator(latency=0.2) as emu, session_for(emu) as session:
        job, _, prepared = prepare(tmp_path, "gemini", n=40, inline=False)
        client = session.client("gemini")
        client.upload_chunk_bytes = 4096  # type: ignore[attr-defined]
        assert Path(job.batch_input_path).stat().st_size > 3 * 4096
        batch_id = await client.submit(job, Path(job.batch_input_path), prepared)
        status = await wait_terminal(client, batch_id)
        downloaded = await client.download(job.transition(batch_id=batch_id), status)  # type: ignore[arg-type]
    raw = get_backend("gemini").parse_results(downloaded.output_path)
    assert raw.height == job.n_pairs


async def test_gemini_upload_resumes_through_the_emulator(tmp_path: Path) -> None:
    from pairbatch.testing.faults import UPLOAD_CHUNK

    faults = {"gemini": FaultConfig(reset_rate=0.3, endpoints=frozenset({UPLOAD_CHUNK}))}
    async with (
        ProviderEmulator(latency=0.2, faults=faults, seed=5) as emu,
        session_for(emu) as session,
    ):
        job, _, prepared = prepare(tmp_path, "gemini", n=40, inline=False)
        client = session.client("gemini")
        client.upload_chunk_bytes = 4096  # type: ignore[attr-defined]
        batch_id = await client.submit(job, Path(job.batch_input_path), prepared)
        status = await wait_terminal(client, batch_id)
        downloaded = await client.download(job.transition(batch_id=batch_id), status)  # type: ignore[arg-type]
    assert get_backend("gemini").parse_results(downloaded.output_path).height == job.n_pairs


async def test_gemini_models_prefix_through_the_emulator(tmp_path: Path) -> None:
    async with ProviderEmulator(latency=0.2) as emu, session_for(emu) as session:
        job, _, prepared = prepare(tmp_path, "gemini", model="models/gemini-2.5-flash")
        client = session.client("gemini")
        batch_id = await client.submit(job, Path(job.batch_input_path), prepared)
        status = await wait_terminal(client, batch_id)
    assert status.state is BatchState.SUCCEEDED  # type: ignore[attr-defined]


async def test_gemini_v1_through_the_emulator(tmp_path: Path) -> None:
    async with ProviderEmulator(latency=0.2) as emu, session_for(emu) as session:
        job, _, prepared = prepare(tmp_path, "gemini", api_version="v1")
        client = session.client("gemini")
        batch_id = await client.submit(job, Path(job.batch_input_path), prepared)
        status = await wait_terminal(client, batch_id)
    assert status.state is BatchState.SUCCEEDED  # type: ignore[attr-defined]


class Scripted:
    """A transport stand-in: answers from a script of (status, headers, body) or an
    exception, and records each call."""

    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)
        self.calls: list[dict] = []

    async def request(self, provider: str, method: str, url: str, **kwargs: object) -> object:
        import orjson

        from pairbatch.transport import Response

        self.calls.append({"method": method, "url": url, **kwargs})
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        status, headers, body = answer  # type: ignore[misc]
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        return Response(status, headers, raw)


def scripted_client(provider: str, transport: Scripted) -> BatchClient:
    return get_backend(provider).client(
        transport,  # type: ignore[arg-type]
        api_key="k",
        base_url="http://test/v1" if provider == "openai" else "http://test",
        retry=POLICY,
    )


async def test_preflight_bodies_paths_and_parsing() -> None:
    s1 = "<BETTER_SAMPLE>SAMPLE_1</BETTER_SAMPLE>"
    chat = {
        "object": "chat.completion",
        "model": "gpt-4.1-mini-2025-04-14",
        "choices": [{"message": {"role": "assistant", "content": s1}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
    }
    transport = Scripted((200, {}, chat))
    line = get_backend("openai").request_line(
        "c1", "p", "gpt-4.1-mini", get_backend("openai").prepare_options("gpt-4.1-mini", {})
    )
    answer = await scripted_client("openai", transport).preflight(line, {})
    assert transport.calls[0]["url"] == "http://test/v1/chat/completions"
    assert transport.calls[0]["json"] == line["body"]
    assert (answer.better_sample, answer.prompt_tokens, answer.completion_tokens) == (
        "SAMPLE_1",
        20,
        5,
    )
    assert answer.raw_model == "gpt-4.1-mini-2025-04-14" and answer.latency_s >= 0

    responses = {
        "object": "response",
        "model": "gpt-5-mini",
        "status": "incomplete",
        "incomplete_details": {"reason": "max_output_tokens"},
        "output": [{"type": "reasoning", "summary": []}],
        "usage": {
            "input_tokens": 9,
            "output_tokens": 64,
            "output_tokens_details": {"reasoning_tokens": 64},
        },
    }
    transport = Scripted((200, {}, responses))
    options = get_backend("openai").prepare_options("gpt-5-mini", {"include_thoughts": True})
    line = get_backend("openai").request_line("c1", "p", "gpt-5-mini", options)
    answer = await scripted_client("openai", transport).preflight(line, options)
    assert transport.calls[0]["url"] == "http://test/v1/responses"
    assert answer.reasoning_tokens == 64 and answer.error_message == "truncated: max_output_tokens"

    message = {
        "type": "message",
        "model": "claude-opus-4-7",
        "content": [{"type": "thinking", "thinking": ""}, {"type": "text", "text": s1}],
        "stop_reason": "end_turn",
        "usage": {
            "input_tokens": 30,
            "output_tokens": 40,
            "output_tokens_details": {"thinking_tokens": 33},
        },
    }
    transport = Scripted((200, {}, message))
    options = get_backend("anthropic").prepare_options(
        "claude-opus-4-7", {"include_thoughts": True}
    )
    line = get_backend("anthropic").request_line("c1", "p", "claude-opus-4-7", options)
    answer = await scripted_client("anthropic", transport).preflight(line, options)
    assert transport.calls[0]["url"] == "http://test/v1/messages"
    assert transport.calls[0]["json"] == line["params"]
    assert (answer.better_sample, answer.reasoning_tokens) == ("SAMPLE_1", 33)

    generated = {
        "candidates": [{"content": {"parts": [{"text": s1}]}, "finishReason": "STOP"}],
        "usageMetadata": {
            "promptTokenCount": 7,
            "candidatesTokenCount": 3,
            "thoughtsTokenCount": 50,
        },
        "modelVersion": "gemini-3-flash-preview",
    }
    transport = Scripted((200, {}, generated))
    options = get_backend("gemini").prepare_options("models/gemini-3-flash-preview", {})
    line = get_backend("gemini").request_line("c1", "p", "gemini-3-flash-preview", options)
    answer = await scripted_client("gemini", transport).preflight(line, options)
    assert transport.calls[0]["url"] == (
        "http://test/v1beta/models/gemini-3-flash-preview:generateContent"
    )
    assert transport.calls[0]["json"] == line["request"]
    assert (answer.completion_tokens, answer.reasoning_tokens) == (3, 50)


async def test_preflight_refusal_keeps_the_providers_message() -> None:
    from pairbatch.errors import ProviderError

    text = "Unsupported value: 'temperature' does not support 0 with this model."
    transport = Scripted(ProviderError("openai", 400, text, error_type="unsupported_value"))
    line = {"custom_id": "c", "method": "POST", "url": "/v1/chat/completions", "body": {}}
    with pytest.raises(ProviderError) as info:
        await scripted_client("openai", transport).preflight(line, {})
    assert info.value.status == 400 and info.value.message == text


async def test_openai_status_reads_batch_errors(caplog: pytest.LogCaptureFixture) -> None:
    batch = {
        "id": "batch_1",
        "status": "failed",
        "errors": {
            "object": "list",
            "data": [
                {
                    "code": "duplicate_custom_id",
                    "message": "Duplicate custom_id",
                    "line": 21,
                    "param": None,
                },
                {
                    "code": "token_limit_exceeded",
                    "message": "Enqueued token limit reached",
                    "line": None,
                },
            ],
        },
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
    }
    transport = Scripted(
        (200, {}, batch),
        (200, {}, batch | {"status": "paused"}),
        (200, {}, batch | {"status": "paused"}),
    )
    client = scripted_client("openai", transport)
    status = await client.status("batch_1")
    assert status.state is BatchState.FAILED and not status.unknown_state  # type: ignore[attr-defined]
    assert status.error == (  # type: ignore[attr-defined]
        "duplicate_custom_id: Duplicate custom_id (line 21); "
        "token_limit_exceeded: Enqueued token limit reached"
    )
    with caplog.at_level("WARNING"):
        first = await client.status("batch_1")
        await client.status("batch_1")
    assert first.unknown_state and first.state is BatchState.RUNNING  # type: ignore[attr-defined]
    assert len([r for r in caplog.records if "paused" in r.getMessage()]) == 1


def gemini_batch(state: str, **extra: object) -> dict:
    return {
        "name": "batches/b1",
        "metadata": {"state": state, **extra.pop("metadata", {})},
        **extra,
    }  # type: ignore[dict-item]


async def test_gemini_states_and_operation_error(caplog: pytest.LogCaptureFixture) -> None:
    output = {"responsesFile": "files/batch-b1"}
    transport = Scripted(
        (200, {}, gemini_batch("JOB_STATE_PARTIALLY_SUCCEEDED", metadata={"output": output})),
        (200, {}, gemini_batch("JOB_STATE_PARTIALLY_SUCCEEDED")),
        (
            200,
            {},
            gemini_batch(
                "BATCH_STATE_FAILED",
                error={"code": 3, "message": "bad input file", "status": "INVALID_ARGUMENT"},
            ),
        ),
        (200, {}, gemini_batch("BATCH_STATE_WEIRD")),
        (200, {}, gemini_batch("BATCH_STATE_WEIRD")),
        (
            200,
            {},
            gemini_batch("BATCH_STATE_WEIRD", done=True, error={"code": 13, "message": "internal"}),
        ),
    )
    client = scripted_client("gemini", transport)
    partial = await client.status("batches/b1")
    assert partial.state is BatchState.SUCCEEDED and partial.output_ref == "files/batch-b1"  # type: ignore[attr-defined]
    assert partial.outcome == "partially_succeeded" and not partial.unknown_state  # type: ignore[attr-defined]
    partial = await client.status("batches/b1")
    assert partial.state is BatchState.FAILED  # type: ignore[attr-defined]
    failed = await client.status("batches/b1")
    assert failed.error == "INVALID_ARGUMENT: bad input file"  # type: ignore[attr-defined]
    with caplog.at_level("WARNING"):
        odd = await client.status("batches/b1")
        await client.status("batches/b1")
        done = await client.status("batches/b1")
    assert odd.unknown_state and odd.state is BatchState.RUNNING  # type: ignore[attr-defined]
    assert done.unknown_state and done.state is BatchState.FAILED and done.error == "13: internal"  # type: ignore[attr-defined]
    assert len([r for r in caplog.records if "WEIRD" in r.getMessage()]) == 1


async def test_anthropic_unknown_state() -> None:
    batch = {"id": "msgbatch_1", "processing_status": "paused", "request_counts": {"processing": 3}}
    status = await scripted_client("anthropic", Scripted((200, {}, batch))).status("msgbatch_1")
    assert status.unknown_state and status.state is BatchState.RUNNING  # type: ignore[attr-defined]


async def test_gemini_upload_resumes_after_an_interrupted_chunk(tmp_path: Path) -> None:
    from pairbatch.providers.gemini_upload import ResumableUpload
    from pairbatch.retry import TransientError

    data = bytes(range(256)) * 40  # 10,240 bytes: chunks of 4096, 4096, 2048
    path = tmp_path / "in.jsonl"
    path.write_bytes(data)
    final = {"file": {"name": "files/abc"}}
    transport = Scripted(
        (200, {"x-goog-upload-url": "http://up/1"}, b""),
        (200, {"x-goog-upload-status": "active"}, b""),
        TransientError("gemini", None, "connection reset"),  # second chunk lost
        (200, {"x-goog-upload-status": "active", "x-goog-upload-size-received": "6000"}, b""),
        (200, {"x-goog-upload-status": "active"}, b""),  # from 6000: 4096 bytes
        (200, {"x-goog-upload-status": "final"}, final),  # the last 144
    )
    upload = ResumableUpload(transport, POLICY, "http://test/upload/v1beta/files", {"k": "v"}, 4096)  # type: ignore[arg-type]
    assert await upload.run(path, len(data), "name") == "files/abc"
    commands = [c["headers"].get("X-Goog-Upload-Command") for c in transport.calls]
    assert commands == ["start", "upload", "upload", "query", "upload", "upload, finalize"]
    offsets = [c["headers"].get("X-Goog-Upload-Offset") for c in transport.calls[1:]]
    assert offsets == ["0", "4096", None, "6000", "10096"]
    sent = [c["data"] for c in transport.calls if c["headers"].get("X-Goog-Upload-Offset")]
    assert all(len(chunk) <= 4096 for chunk in sent)
    assert sent[0] + sent[1][: 6000 - 4096] == data[:6000]
    assert sent[-2] + sent[-1] == data[6000:]
    # the upload URL carries no API key
    assert all("k" not in c["headers"] for c in transport.calls[1:])


async def test_gemini_upload_refuses_a_dead_session(tmp_path: Path) -> None:
    from pairbatch.errors import ProviderError
    from pairbatch.providers.gemini_upload import ResumableUpload

    path = tmp_path / "in.jsonl"
    path.write_bytes(b"x" * 5000)
    transport = Scripted(
        (200, {"x-goog-upload-url": "http://up/1"}, b""),
        (200, {"x-goog-upload-status": "cancelled"}, b""),
    )
    upload = ResumableUpload(transport, POLICY, "http://test/upload/v1beta/files", {}, 4096)  # type: ignore[arg-type]
    with pytest.raises(ProviderError, match="no longer active"):
        await upload.run(path, 5000, "name")
