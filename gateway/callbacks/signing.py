"""Standard Webhooks signatures for the callbacks the gateway sends its tenants.

A secret is ``whsec_`` + base64 of random bytes; the HMAC key is those bytes. Each attempt is
signed over ``{webhook-id}.{webhook-timestamp}.{body}`` (HMAC-SHA256, base64) and sent as
``webhook-signature: v1,<sig>``; during a secret rotation one signature per live secret,
space-separated, so a receiver holding either secret verifies it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

from gateway.webhooks.secrets import PREFIX


def _key(secret: str) -> bytes:
    encoded = secret.removeprefix(PREFIX)
    try:
        return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a signing secret must be whsec_ followed by base64") from exc


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    message = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), message, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(
    secrets_: Sequence[str], webhook_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers, signed with every secret given (current first)."""
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, webhook_id, timestamp, body) for s in secrets_),
    }
