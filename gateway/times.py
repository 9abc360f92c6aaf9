"""Times given by people and clients: ISO 8601 with a time zone, read as unix timestamps."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.errors import FieldError, InvalidRequest


def parse_time(value: Any, field: str, *, after: float | None = None) -> float | None:
    """``value`` (None or "" = absent) as a unix timestamp; with ``after``, it must be later.
    A wrong value is an InvalidRequest naming ``field``."""
    if value is None or value == "":
        return None
    bad = InvalidRequest([FieldError(field, "must be an ISO 8601 time, e.g. 2027-01-31T00:00:00Z")])
    if not isinstance(value, str):
        raise bad
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise bad from None
    if moment.tzinfo is None:
        raise InvalidRequest([FieldError(field, "must include a time zone, e.g. a trailing Z")])
    ts = moment.timestamp()
    if after is not None and ts <= after:
        raise InvalidRequest([FieldError(field, "must be in the future")])
    return ts
