"""The emulator's deterministic judge, and how it finds the prompt in each request shape.

The verdict depends only on the two sample texts (the longer one wins, ties go to
SAMPLE_1), so a test can compute the truth from its pairs without the emulator.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs
import polars as pl

from pairbatch.errors import InputError
from pairbatch.prompts import DEFAULT_TEMPLATE, TRAITS, build_prompt, extract_samples

Winner = Literal["SAMPLE_1", "SAMPLE_2"]
Judge = Callable[[str], str]

NO_TAG_ANSWER = "Both samples have merits; I cannot pick one with confidence."


def expected_winner(text1: str, text2: str) -> Winner:
    """What the default judge answers for a pair: the longer text, SAMPLE_1 on a tie."""
    return "SAMPLE_1" if len(text1) >= len(text2) else "SAMPLE_2"


def tagged(winner: str) -> str:
    return f"<BETTER_SAMPLE>{winner}</BETTER_SAMPLE>"


def fixed_judge(winner: str) -> Judge:
    """A judge that always answers ``winner`` (used for synthetic outputs)."""

    def judge(_prompt: str) -> str:
        return tagged(winner)

    return judge


def default_judge(prompt: str) -> str:
    """Answer a prompt of the default layout; any other layout gets SAMPLE_1."""
    samples = extract_samples(prompt)
    if samples is None:
        return tagged("SAMPLE_1")
    return tagged(expected_winner(*samples))


def _uniforms(*parts: str) -> tuple[float, float]:
    """Two independent uniforms in [0, 1) from a keyed hash (no RNG state to share)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).digest()
    scale = float(2**64)
    return int.from_bytes(digest[:8], "big") / scale, int.from_bytes(digest[8:], "big") / scale


def _copy_qualities(qualities: Mapping[str, float]) -> dict[str, float]:
    # A private copy: the judge's truth must not change under a running emulator.
    return {str(text): float(value) for text, value in qualities.items()}


@attrs.frozen
class LatentJudge:
    """A noisy judge with known truth, for studying designs and estimators.

    ``qualities`` maps each sample *text* to its latent score. For a prompt showing
    texts with scores ``q1, q2`` it answers SAMPLE_1 with probability
    ``logistic((q1 - q2) / noise + position_bias)`` — the Bradley–Terry model with a
    first-position effect — except that a share ``lapse`` of answers is a fair coin.
    Draws are a hash of ``seed``, the prompt and an optional ``salt``, so the same
    request always gets the same answer (as a provider retry would in a replay);
    pass a different ``salt`` to :meth:`answer` to judge an identical prompt afresh.
    Use as ``ProviderEmulator(judge=LatentJudge(...))``.
    """

    qualities: Mapping[str, float] = attrs.field(converter=_copy_qualities)
    noise: float = 1.0
    position_bias: float = 0.0
    lapse: float = 0.0
    seed: int = 0

    def __attrs_post_init__(self) -> None:
        if not self.noise > 0:
            raise InputError(f"noise must be positive, got {self.noise!r}")
        if not 0 <= self.lapse <= 1:
            raise InputError(f"lapse must be in [0, 1], got {self.lapse!r}")

    def __call__(self, prompt: str) -> str:
        return self.answer(prompt)

    def _quality(self, text: str) -> float:
        try:
            return self.qualities[text]
        except KeyError:
            raise InputError(f"LatentJudge has no quality for the text {text[:40]!r}") from None

    def probability(self, text1: str, text2: str) -> float:
        """P(SAMPLE_1 wins) for texts shown in this order, lapses included."""
        z = (self._quality(text1) - self._quality(text2)) / self.noise + self.position_bias
        return (1 - self.lapse) / (1 + math.exp(-z)) + self.lapse / 2

    def answer(self, prompt: str, salt: str = "") -> str:
        """The tagged verdict for one prompt of the default layout."""
        samples = extract_samples(prompt)
        if samples is None:
            raise InputError("LatentJudge needs prompts built on the default template")
        u_lapse, u_pick = _uniforms(str(self.seed), salt, prompt)
        if u_lapse < self.lapse:
            return tagged("SAMPLE_1" if u_pick < 0.5 else "SAMPLE_2")
        z = (self._quality(samples[0]) - self._quality(samples[1])) / self.noise
        p1 = 1 / (1 + math.exp(-(z + self.position_bias)))
        return tagged("SAMPLE_1" if u_pick < p1 else "SAMPLE_2")

    def judge_pairs(self, pairs: pl.DataFrame, template: str = DEFAULT_TEMPLATE) -> pl.DataFrame:
        """Judge a pairs table directly (no batches): the input plus ``better_sample``,
        ``better_id`` and ``winner_pos``. Each prompt is built as submit builds it; the
        n-th repeat of an identical prompt gets salt ``n`` so repeats are fresh draws."""
        name, description = TRAITS["overall_quality"]
        seen: dict[str, int] = {}
        winners = []
        for text1, text2 in zip(pairs["text1"], pairs["text2"], strict=True):
            prompt = build_prompt(template, name, description, text1, text2)
            salt = seen.get(prompt, 0)
            seen[prompt] = salt + 1
            winners.append(self.answer(prompt, str(salt) if salt else ""))
        sample = pl.Series("better_sample", [w[len("<BETTER_SAMPLE>") : -16] for w in winners])
        return pairs.with_columns(sample).with_columns(
            pl.when(pl.col("better_sample") == "SAMPLE_1")
            .then(pl.col("ID1"))
            .otherwise(pl.col("ID2"))
            .alias("better_id"),
            pl.when(pl.col("better_sample") == "SAMPLE_1").then(1).otherwise(2).alias("winner_pos"),
        )


def reasoning_text(prompt: str) -> str:
    """A short, deterministic 'thought' to put in reasoning/thinking outputs."""
    samples = extract_samples(prompt)
    if samples is None:
        return "The prompt does not follow the two-sample layout; defaulting to SAMPLE_1."
    one, two = samples
    return (
        f"SAMPLE_1 has {len(one)} characters and SAMPLE_2 has {len(two)}; "
        f"the longer one shows the trait better here."
    )


def _text_of_content(content: Any) -> str | None:
    """A message ``content``: a string, or a list of text parts (joined in order)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            part["text"]
            for part in content
            if isinstance(part, Mapping)
            and part.get("type") in ("text", "input_text")
            and isinstance(part.get("text"), str)
        ]
        return "".join(texts) if texts else None
    return None


def _first_message_text(messages: Any) -> str | None:
    if not isinstance(messages, list) or not messages:
        return None
    # The pairbatch layouts send one user message; prefer it over a leading system one.
    for message in messages:
        if isinstance(message, Mapping) and message.get("role", "user") == "user":
            return _text_of_content(message.get("content"))
    first = messages[0]
    return _text_of_content(first.get("content")) if isinstance(first, Mapping) else None


def openai_prompt(body: Mapping[str, Any]) -> str | None:
    """The prompt of a chat-completions (``messages``) or responses (``input``) body."""
    if "messages" in body:
        return _first_message_text(body["messages"])
    value = body.get("input")
    if isinstance(value, str):
        return value
    return _first_message_text(value)


def anthropic_prompt(params: Mapping[str, Any]) -> str | None:
    return _first_message_text(params.get("messages"))


def gemini_prompt(request: Mapping[str, Any]) -> str | None:
    contents = request.get("contents")
    if not isinstance(contents, list) or not contents or not isinstance(contents[0], Mapping):
        return None
    parts = contents[0].get("parts")
    if not isinstance(parts, list):
        return None
    texts = [p["text"] for p in parts if isinstance(p, Mapping) and isinstance(p.get("text"), str)]
    return "".join(texts) if texts else None


def tokens(text: str) -> int:
    """A token count that only depends on the text's length (about 4 characters a token)."""
    return len(text) // 4 + 1


def cached_tokens(prompt_tokens: int) -> int:
    """Prompt caching only kicks in from 1024 tokens and counts in 128-token blocks."""
    return 0 if prompt_tokens < 1024 else (prompt_tokens // 2) // 128 * 128
