"""Times written as UTC ISO 8601 (gateway.times): the same text as datetime's isoformat, which
they replace on the hot paths, for any timestamp, including those that round into the next
second."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from gateway.times import iso_micros, iso_millis


def by_datetime(ts: float, timespec: str) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec=timespec)[:-6] + "Z"


def test_iso_matches_datetime() -> None:
    pick = random.Random(20261121)
    edges = [-86_400.25, -1.5, -0.0000005, 0.0, 1.0, 0.0000005, 0.0000015,
             1_799_999_999.9999995, 1_799_999_999.9999994, 1_763_731_016.4705,
             1_763_731_016.999999, 4_102_444_799.999999]
    stamps = edges + [pick.uniform(0, 4_102_444_800) for _ in range(50_000)]
    # Runs of timestamps within one second, as the formatting is kept per second.
    base = pick.uniform(1.7e9, 1.8e9)
    stamps += [base + pick.random() * 3 for _ in range(5_000)]
    for ts in stamps:
        assert iso_millis(ts) == by_datetime(ts, "milliseconds"), ts
        assert iso_micros(ts) == by_datetime(ts, "microseconds"), ts
