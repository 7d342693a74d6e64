"""A local emulator of the OpenAI, Anthropic and Gemini batch APIs, for tests and demos.

    async with ProviderEmulator(latency=0.05) as emu:
        client = openai.AsyncOpenAI(base_url=emu.base_url("openai"), api_key="x")
        ...

``ProviderEmulator(webhook_url=...)`` also posts signed "batch finished" webhooks (OpenAI,
Gemini) to a loopback receiver such as :class:`pairbatch.webhooks.WebhookReceiver`.

Nothing here talks to a real provider.
"""

from pairbatch.testing.emulator import ProviderEmulator, SyntheticBatch, main, serve
from pairbatch.testing.faults import (
    CREATE_ENDPOINTS,
    DOWNLOAD_ENDPOINTS,
    ENDPOINTS,
    POLL_ENDPOINTS,
    FaultConfig,
)
from pairbatch.testing.judge import (
    NO_TAG_ANSWER,
    Judge,
    LatentJudge,
    default_judge,
    expected_winner,
)
from pairbatch.testing.stats import EmulatorStats

__all__ = [
    "CREATE_ENDPOINTS",
    "DOWNLOAD_ENDPOINTS",
    "ENDPOINTS",
    "NO_TAG_ANSWER",
    "POLL_ENDPOINTS",
    "EmulatorStats",
    "FaultConfig",
    "Judge",
    "LatentJudge",
    "ProviderEmulator",
    "SyntheticBatch",
    "default_judge",
    "expected_winner",
    "main",
    "serve",
]
