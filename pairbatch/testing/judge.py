"""The emulator's deterministic judge, and how it finds the prompt in each request shape.

The verdict depends only on the two sample texts (the longer one wins, ties go to
SAMPLE_1), so a test can compute the truth from its pairs without the emulator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from pairbatch.prompts import extract_samples

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
