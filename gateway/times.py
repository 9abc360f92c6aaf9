"""Times in ISO 8601: written as UTC with a Z (answers, log lines), and read from people and
clients (with a time zone) as unix timestamps."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from gateway.errors import FieldError, InvalidRequest

_second: tuple[int, str] = (0, "1970-01-01T00:00:00")  # the last second formatted


def _format_second(seconds: int) -> tuple[int, str]:
    """Format a new second (and keep it: the next time is nearly always in the same one)."""
    global _second
    _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return _second


def _parts(ts: float) -> tuple[str, int]:
    """``ts`` as its UTC date and time to the second, and the microseconds, rounded as
    datetime.fromtimestamp rounds them (half to even). The date and time are formatted once
    per second: in a job's view and on a log line, the times are nearly always this second."""
    fraction, whole = math.modf(ts)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    elif micros < 0:
        whole, micros = whole - 1, micros + 1_000_000
    seconds = int(whole)
    last = _second
    if seconds != last[0]:
        last = _format_second(seconds)
    return last[1], micros


def now_iso_micros() -> str:
    """Now, as ``iso_micros(time.time())`` writes it (to the microsecond, truncated rather
    than rounded, from the integer clock): every log line's time, at a third of the cost."""
    seconds, micros = divmod(time.time_ns() // 1000, 1_000_000)
    last = _second
    if seconds != last[0]:
        last = _format_second(seconds)
    return f"{last[1]}.{micros:06d}Z"


_millis: tuple[float, str] = (math.nan, "")  # the last time iso_millis wrote (nan: none)


def iso_millis(ts: float) -> str:
    """UTC to the millisecond (truncated, as isoformat does), with a Z: 2026-11-21T13:36:56.470Z.
    The last one is kept: a job's view asks for the same time several times in a row (a new
    job's creation, update and first event)."""
    global _millis
    last = _millis
    if ts == last[0]:
        return last[1]
    date_time, micros = _parts(ts)
    text = f"{date_time}.{micros // 1000:03d}Z"
    _millis = (ts, text)
    return text


def iso_micros(ts: float) -> str:
    """UTC to the microsecond, with a Z: 2026-11-21T13:36:56.470123Z."""
    date_time, micros = _parts(ts)
    return f"{date_time}.{micros:06d}Z"


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


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from now: a number of seconds or an HTTP date; None if
    unreadable. (WaveSpeed's 429 and a tenant's callback endpoint both send it.)"""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - now)
