"""The ``pairbatch`` command's shared parts: exit codes, usage errors, argument types."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from typing import Any

from pairbatch.models import Provider

EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2
# 128 + SIGINT, as shells report a Ctrl-C'd command.
EXIT_INTERRUPTED = 130
PROVIDERS = tuple(p.value for p in Provider)


class UsageError(Exception):
    """A wrong combination of arguments: one line on stderr, exit 2."""


# ---------------------------------------------------------------- argument types


def _number(text: str, *, low: float, strict: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < low or (strict and value == low):
        bound = f"> {low:g}" if strict else f">= {low:g}"
        raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text!r}")
    return value


def positive(text: str) -> float:
    return _number(text, low=0, strict=True)


def non_negative(text: str) -> float:
    return _number(text, low=0, strict=False)


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def rate(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    name = name.strip().lower()
    if not sep or name not in PROVIDERS:
        raise argparse.ArgumentTypeError(
            f"{text!r} must look like PROVIDER=RATE with PROVIDER one of {', '.join(PROVIDERS)}"
        )
    return name, positive(value)


def rate_pair(text: str) -> tuple[float, float]:
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"{text!r} must look like IN,OUT (e.g. 0.40,1.60)")
    return non_negative(parts[0]), non_negative(parts[1])


def segments(text: str) -> list[int] | bool:
    if text.strip().lower() == "all":
        return True
    try:
        return [count(part) for part in text.split(",") if part.strip()]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} must be segment numbers like 3 or 2,5, or 'all'"
        ) from None


def parse_option_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            value = cast(text)
        except ValueError:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"--option value {text!r} is not a finite number")
        return value
    return text


def options(items: Sequence[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--option must look like NAME=VALUE, got {item!r}")
        if name.strip() in out:
            raise UsageError(f"--option {name.strip()} is given twice")
        out[name.strip()] = parse_option_value(value)
    return out
