"""Identifiers: time-ordered, so that newest-first listing and cursors follow the id.

``prefix_`` + 26 characters of Crockford base32 over 130 bits: 50 bits of milliseconds, then
80 bits that start random each millisecond and count up within it (ULID's monotonic form), so
ids made by one process are strictly increasing. They are identifiers, not secrets: access is
decided by the tenant a job belongs to, never by knowing its id.
"""

from __future__ import annotations

import os
import random
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # 10 bits -> 2 characters
_RANDOM_BITS = 80
_random = random.Random(os.urandom(16))
_lock = threading.Lock()
_last = (0, 0)


_SHIFTS = tuple(range(120, -1, -10))


def _encode(value: int) -> str:
    """130 bits as 26 characters, most significant first."""
    return "".join([_PAIRS[(value >> shift) & 0x3FF] for shift in _SHIFTS])


def id_floor(prefix: str, at: float) -> str:
    """The smallest id ``new_id(prefix)`` can make at time ``at``: ids below it are older."""
    return f"{prefix}_{_encode(int(at * 1000) << _RANDOM_BITS)}"


def new_id(prefix: str) -> str:
    global _last
    millis = time.time_ns() // 1_000_000
    with _lock:
        last_millis, last_random = _last
        if millis <= last_millis:
            millis, rand = last_millis, last_random + 1
        else:
            rand = _random.getrandbits(_RANDOM_BITS - 1)  # room to count up within a millisecond
        _last = (millis, rand)
    return f"{prefix}_{_encode((millis << _RANDOM_BITS) | rand)}"
