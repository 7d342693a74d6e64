"""The pre-flight: one ordinary request with the exact body of a run's first pair.

Sent before any file is written or batch created, so an option the model refuses stops
the submit with the provider's own words instead of failing every line of every batch
hours later; its verdict, tokens and latency are logged and kept in ``run_settings.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import polars as pl

from pairbatch.errors import InputError, ProviderError
from pairbatch.providers.base import BatchClient, iter_prompts

log = logging.getLogger("pairbatch.submit")
TAG = "[submit_pairs_multi_batch]"


async def preflight_check(
    client: BatchClient,
    backend: Any,
    first: pl.DataFrame,
    model: str,
    plan: Any,
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """Send the first pair's exact request as an ordinary call: the one real answer a
    user sees before paying for thousands. A refusal is an :class:`InputError` quoting the
    provider; nothing is written or created."""
    ((key, prompt),) = list(
        iter_prompts(first, plan.template, plan.trait_name, plan.trait_description)
    )
    line = backend.request_line(key, prompt, model, options)
    try:
        answer = await client.preflight(line, options)
    except ProviderError as exc:
        if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (408, 429):
            raise InputError(
                f"pre-flight: {client.provider.value} refused model {model!r} with these "
                f"options (HTTP {exc.status}): {exc.message} -- change the option it names, "
                "or pass preflight=False (--no-preflight) to skip this check"
            ) from None
        raise
    summary = {
        "verdict": answer.better_sample,
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "reasoning_tokens": answer.reasoning_tokens,
        "latency_s": round(answer.latency_s, 3),
        "model": answer.raw_model,
        "error": answer.error_message,
    }
    log.info(
        "%s pre-flight %s %s: verdict %s, %s prompt + %s completion tokens, %.2f s",
        TAG,
        client.provider.value,
        model,
        answer.better_sample,
        answer.prompt_tokens,
        answer.completion_tokens,
        answer.latency_s,
    )
    if answer.better_sample is None:
        log.warning(
            "%s pre-flight answer has no verdict (%s): check the template and options",
            TAG,
            answer.error_message or (answer.content or "")[:120],
        )
    return summary
