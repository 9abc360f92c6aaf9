"""WaveSpeed's webhook signature (v3): HMAC-SHA256, hex, over ``{id}.{timestamp}.{raw body}``.

The key is the secret without its ``whsec_`` prefix, used as UTF-8 text and not
base64-decoded (unlike the Standard Webhooks spec). Timestamps further than the tolerance
from now are refused; comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping


class BadSignature(Exception):
    """The delivery is not provably from WaveSpeed; the reason is safe to log."""


def _key(secret: str) -> bytes:
    return secret.removeprefix("whsec_").encode()


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    message = f"{webhook_id}.{timestamp}.".encode() + body
    return "v3," + hmac.new(_key(secret), message, hashlib.sha256).hexdigest()


def signed_headers(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, webhook_id, timestamp, body),
        "content-type": "application/json",
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_seconds: int = 300,
    now: float | None = None,
) -> str:
    """Check a delivery's headers against its raw body; return its webhook id."""
    webhook_id = headers.get("webhook-id")
    timestamp_text = headers.get("webhook-timestamp")
    signature_header = headers.get("webhook-signature")
    if not webhook_id or not timestamp_text or not signature_header:
        raise BadSignature("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(timestamp_text)
    except ValueError:
        raise BadSignature("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise BadSignature("webhook-timestamp outside the tolerance window")
    expected = sign(secret, webhook_id, timestamp, body)
    # Several space-separated signatures may be sent (rotation); any match is enough.
    for candidate in signature_header.split():
        if hmac.compare_digest(candidate.encode(), expected.encode()):
            return webhook_id
    raise BadSignature("no signature matches")
