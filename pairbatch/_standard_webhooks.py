"""The Standard Webhooks signature scheme: signing secrets, signing, verifying, replays.

Rules, from the Standard Webhooks spec 1.0 (github.com/standard-webhooks/standard-webhooks,
``spec/standard-webhooks.md``: "Signature scheme", "Webhook headers", "Verifying
signatures") and its Python reference library, checked against the official ``openai``
SDK's ``resources/webhooks`` (``unwrap``/``verify_signature``) and ``lib/_webhooks.py``:

* headers ``webhook-id``, ``webhook-timestamp`` (integer Unix seconds) and
  ``webhook-signature``: space-separated ``v1,<base64 HMAC-SHA256>`` entries (several
  during a secret rotation; other versions such as ``v1a``, ed25519, are skipped);
* the HMAC key is the secret after its ``whsec_`` prefix, base64-decoded, and the signed
  content is ``{webhook-id}.{webhook-timestamp}.{raw body}``;
* signatures are compared in constant time, a timestamp more than the tolerance (300 s,
  the spec's and the SDK's default) away from now is refused either way, and the
  ``webhook-id`` is the idempotency key (the spec suggests remembering ids for minutes).

Where the readings differ, this one is the stricter: the ``openai`` SDK also takes an
entry without ``v1,`` and the reference library a fractional timestamp; both are refused.
A secret without ``whsec_`` is used as its UTF-8 bytes, as the ``openai`` SDK does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
from collections.abc import Mapping, Sequence

import attrs

DEFAULT_TOLERANCE = 300.0  # seconds
_SECRET_PREFIX = "whsec_"
_MAX_ID = 256  # a webhook-id longer than this is not one a provider sends


class WebhookRejected(Exception):
    """A delivery that is not accepted: ``status`` (400, 401, ...) and a short reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@attrs.frozen(repr=False)
class SigningSecret:
    """An HMAC key. ``whsec_<base64>`` is decoded (Standard Webhooks); any other string
    is used as its UTF-8 bytes, as the ``openai`` SDK does."""

    key: bytes

    @classmethod
    def parse(cls, text: str, what: str = "webhook secret") -> SigningSecret:
        text = text.strip()
        if text.startswith(_SECRET_PREFIX):
            body = text[len(_SECRET_PREFIX) :]
            try:
                # Padding is optional in what people paste; extra "=" is ignored.
                key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(f"{what} is not valid base64 after 'whsec_'") from None
        else:
            key = text.encode()
        if not key:
            raise ValueError(f"{what} is empty")
        return cls(key)

    @classmethod
    def generate(cls) -> tuple[SigningSecret, str]:
        """A new random 32-byte secret and its ``whsec_`` text."""
        key = os.urandom(32)
        return cls(key), _SECRET_PREFIX + base64.b64encode(key).decode()

    def __repr__(self) -> str:
        return "SigningSecret(<redacted>)"


def sign(secret: SigningSecret, webhook_id: str, timestamp: int | str, body: bytes) -> str:
    """One ``v1,<base64>`` signature entry over ``{id}.{timestamp}.{body}``."""
    content = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(
    secrets: Sequence[SigningSecret], webhook_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers, signed with every secret given."""
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, webhook_id, timestamp, body) for s in secrets),
    }


def verify_signature(
    body: bytes,
    headers: Mapping[str, str],
    secrets: Sequence[SigningSecret],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> tuple[str, int, int]:
    """Check one delivery; ``headers`` keys must be lower case. Returns ``(webhook-id,
    timestamp, index of the secret that matched)`` or raises :class:`WebhookRejected`."""
    webhook_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not webhook_id or not stamp or not signatures:
        raise WebhookRejected(400, "missing webhook-id, webhook-timestamp or webhook-signature")
    # Printable ASCII and bounded: the id is kept in the replay set and goes in logs.
    if len(webhook_id) > _MAX_ID or not all(33 <= ord(c) < 127 for c in webhook_id):
        raise WebhookRejected(400, "malformed webhook-id")
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
        raise WebhookRejected(400, "malformed webhook-timestamp")
    timestamp = int(stamp)
    current = time.time() if now is None else now
    if current - timestamp > tolerance:
        raise WebhookRejected(401, "webhook-timestamp too old")
    if timestamp - current > tolerance:
        raise WebhookRejected(401, "webhook-timestamp in the future")
    given: list[bytes] = []
    for entry in signatures.split():
        version, _, encoded = entry.partition(",")
        if version != "v1" or not encoded:
            continue  # another scheme (v1a: ed25519) or noise; the spec says skip
        try:
            given.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    if not given:
        raise WebhookRejected(400, "no v1 signature in webhook-signature")
    content = f"{webhook_id}.{stamp}.".encode() + body
    for index, secret in enumerate(secrets):
        expected = hmac.new(secret.key, content, hashlib.sha256).digest()
        # compare_digest per entry: the time taken says nothing about the expected bytes.
        if any(hmac.compare_digest(expected, candidate) for candidate in given):
            return webhook_id, timestamp, index
    raise WebhookRejected(401, "signature does not match")


@attrs.define
class ReplayGuard:
    """The ``webhook-id``s seen in the last ``window`` seconds (at most ``capacity``).

    A literal replay (same id, same timestamp) is refused. The same id with a newer
    timestamp is the sender retrying an event whose answer it missed (the spec keeps the
    id across retries and re-signs with a fresh timestamp): that is acknowledged without
    acting on it again, so the sender stops retrying. Entries older than twice the
    tolerance can go: a replay of them fails the timestamp check anyway.
    """

    window: float
    capacity: int = 10_000
    _seen: dict[str, tuple[int, float]] = attrs.field(factory=dict, init=False)

    def check(self, webhook_id: str, timestamp: int, now: float) -> str:
        """``"new"``, ``"redelivery"`` or ``"replay"``; records new ids."""
        self._prune(now)
        previous = self._seen.get(webhook_id)
        if previous is not None:
            return "replay" if previous[0] == timestamp else "redelivery"
        if len(self._seen) >= self.capacity:
            self._seen.pop(next(iter(self._seen)))  # the oldest; dicts keep insertion order
        self._seen[webhook_id] = (timestamp, now + self.window)
        return "new"

    def _prune(self, now: float) -> None:
        while self._seen:
            oldest = next(iter(self._seen))
            if self._seen[oldest][1] > now:
                break
            del self._seen[oldest]

    def __len__(self) -> int:
        return len(self._seen)
