"""Identifiers: time-ordered, so that newest-first listing and cursors follow the id."""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def _base32(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        out.append(_ALPHABET[rem])
    return "".join(reversed(out))


def id_floor(prefix: str, at: float) -> str:
    """The smallest id ``new_id(prefix)`` can make at time ``at``: ids below it are older."""
    return f"{prefix}_{_base32(int(at * 1000), 10)}{'0' * 16}"


def new_id(prefix: str) -> str:
    """``prefix_`` + 10 chars of milliseconds + 16 random chars (a ULID in lower case)."""
    millis = time.time_ns() // 1_000_000
    return f"{prefix}_{_base32(millis, 10)}{_base32(secrets.randbits(80), 16)}"
