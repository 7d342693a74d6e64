"""The transport against the real emulator: retries, limits, downloads, secrets."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
import pytest

from pairbatch.errors import ProviderError, RetryExhaustedError
from pairbatch.retry import RetryPolicy
from pairbatch.testing import DOWNLOAD_ENDPOINTS, FaultConfig, ProviderEmulator
from pairbatch.transport import Transport

KEY = "sk-very-secret-key-0123456789"
FAST = RetryPolicy(max_tries=6, base_delay=0.01, max_delay=0.05)


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


async def list_batches(
    transport: Transport, emu: ProviderEmulator, policy: RetryPolicy = FAST
) -> int:
    response = await transport.request(
        "openai", "GET", f"{emu.base_url('openai')}/batches", headers=auth(), retry=policy
    )
    return response.status


LIST_PATHS = {
    "openai": ("/batches", {"Authorization": f"Bearer {KEY}"}),
    "anthropic": ("/v1/messages/batches", {"x-api-key": KEY, "anthropic-version": "2023-06-01"}),
    "gemini": ("/v1beta/batches", {"x-goog-api-key": KEY}),
}


@pytest.mark.parametrize("provider", sorted(LIST_PATHS))
async def test_429_storm_is_survived_and_paused_not_hammered(provider: str) -> None:
    # The client is set 5x faster than the server allows; 60 tasks wait at its bucket.
    path, headers = LIST_PATHS[provider]
    faults = {provider: FaultConfig(rate_limit=30, burst=2)}
    async with (
        ProviderEmulator(faults=faults) as emu,
        Transport(rate_limits={provider: 150}) as transport,
    ):
        url = emu.base_url(provider) + path

        async def one() -> int:
            response = await transport.request(provider, "GET", url, headers=headers, retry=FAST)
            return response.status

        statuses = await asyncio.gather(*(one() for _ in range(60)))
        assert statuses == [200] * 60
        sent_429 = emu.stats.rate_limited[provider]
        # A 429 pauses the whole provider and halves its rate, and rate-limit headers
        # (OpenAI's, Anthropic's) slow it before a 429 comes at all: a few 429s for 60
        # requests, never one per waiting task.
        assert sent_429 <= 8
        assert transport.counters().get("429s", 0) == sent_429
        assert transport.limiter(provider).rate <= 150


async def test_5xx_burst_retried_with_the_right_number_of_tries() -> None:
    faults = {"openai": FaultConfig(server_error_rate=0.5)}
    async with (
        ProviderEmulator(faults=faults, seed=3) as emu,
        Transport(rate_limits={"openai": 500}) as transport,
    ):
        for _ in range(20):
            assert await list_batches(transport, emu) == 200
        errors = sum(emu.stats.count("openai", status=s) for s in (500, 502, 503))
        assert errors > 0
        assert transport.counters()["requests"] == 20 + errors
        assert transport.counters()["retries"] == errors


async def test_connection_resets_are_retried() -> None:
    faults = {"anthropic": FaultConfig(reset_rate=0.4)}
    async with (
        ProviderEmulator(faults=faults, seed=1) as emu,
        Transport(rate_limits={"anthropic": 500}) as transport,
    ):
        headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
        for _ in range(10):
            response = await transport.request(
                "anthropic",
                "GET",
                f"{emu.base_url('anthropic')}/v1/messages/batches",
                headers=headers,
                retry=FAST,
            )
            assert response.status == 200
        assert emu.stats.count("anthropic", status=0) > 0


async def test_slow_responses_hit_the_read_timeout_then_give_up() -> None:
    faults = {"gemini": FaultConfig(slow_rate=1.0, slow_seconds=2.0)}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=0.2)
    async with (
        ProviderEmulator(faults=faults) as emu,
        Transport(rate_limits={"gemini": 100}, timeout=timeout) as transport,
    ):
        with pytest.raises(RetryExhaustedError, match="TimeoutError"):
            await transport.request(
                "gemini",
                "GET",
                f"{emu.base_url('gemini')}/v1beta/batches",
                headers={"x-goog-api-key": KEY},
                retry=RetryPolicy(max_tries=3, base_delay=0.01),
            )
        assert transport.counters()["requests"] == 3


async def test_non_idempotent_timeout_is_ambiguous_not_resent() -> None:
    faults = {"openai": FaultConfig(slow_rate=1.0, slow_seconds=2.0, slow_after=True)}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=0.2)
    async with ProviderEmulator(faults=faults) as emu, Transport(timeout=timeout) as transport:
        with pytest.raises(ProviderError) as info:
            await transport.request(
                "openai",
                "POST",
                f"{emu.base_url('openai')}/batches",
                headers=auth(),
                json={"input_file_id": "file-x", "endpoint": "/v1/chat/completions"},
                retry=FAST,
                idempotent=False,
            )
        assert info.value.error_type == "ambiguous"
        assert transport.counters()["requests"] == 1


async def test_non_retryable_error_carries_provider_status_and_message() -> None:
    async with ProviderEmulator() as emu, Transport() as transport:
        with pytest.raises(ProviderError) as info:
            await transport.request(
                "openai", "GET", f"{emu.base_url('openai')}/batches/batch_nope", headers=auth()
            )
        error = info.value
        assert error.provider == "openai" and error.status == 404
        assert error.message and "HTTP 404" in str(error)
        assert transport.counters()["requests"] == 1
        with pytest.raises(ProviderError) as info:
            await transport.request(
                "openai", "GET", f"{emu.base_url('openai')}/batches", headers={}
            )
        assert info.value.status == 401


async def test_streamed_download_survives_truncation_with_range(tmp_path: Path) -> None:
    faults = {"openai": FaultConfig(truncate_rate=0.6, endpoints=DOWNLOAD_ENDPOINTS)}
    async with ProviderEmulator(faults=faults, seed=0) as emu, Transport() as transport:
        batch = emu.add_synthetic_batch("openai", output_bytes=8_000_000)
        dest = tmp_path / "out.jsonl"
        size = await transport.download(
            "openai",
            f"{emu.base_url('openai')}/files/{batch.result_ref}/content",
            dest,
            headers=auth(),
            retry=RetryPolicy(max_tries=10, base_delay=0.01),
        )
        assert size == batch.size_bytes == dest.stat().st_size
        assert emu.stats.count("openai", "files.content", 206) >= 1  # resumed, not restarted
        lines = dest.read_bytes().splitlines()
        assert len(lines) == batch.n_requests
        assert not (tmp_path / "out.jsonl.part").exists()


async def test_truncated_download_never_leaves_a_file(tmp_path: Path) -> None:
    faults = {"openai": FaultConfig(truncate_rate=1.0, endpoints=DOWNLOAD_ENDPOINTS)}
    async with ProviderEmulator(faults=faults) as emu, Transport() as transport:
        batch = emu.add_synthetic_batch("openai", n_requests=200)
        dest = tmp_path / "out.jsonl"
        with pytest.raises(RetryExhaustedError):
            await transport.download(
                "openai",
                f"{emu.base_url('openai')}/files/{batch.result_ref}/content",
                dest,
                headers=auth(),
                retry=RetryPolicy(max_tries=3, base_delay=0.01),
            )
        assert list(tmp_path.iterdir()) == []


async def test_key_never_logged_or_raised(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    faults = {"gemini": FaultConfig(server_error_rate=0.5, rate_limit=50)}
    texts: list[str] = []
    async with ProviderEmulator(faults=faults) as emu, Transport() as transport:
        url = f"{emu.base_url('gemini')}/v1beta/batches/nope?key={KEY}"
        for _ in range(5):
            try:
                await transport.request(
                    "gemini", "GET", url, headers={"x-goog-api-key": KEY}, retry=FAST
                )
            except ProviderError as exc:
                texts.append(str(exc))
                texts.append(repr(exc))
        texts.append(repr(transport))
    assert texts
    for record in caplog.records:
        texts.append(record.getMessage())
    assert caplog.records
    assert not [t for t in texts if KEY in t]
