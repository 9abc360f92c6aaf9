"""When a failed callback is tried again: the schedule (seconds before each attempt), jitter so
that a tenant's endpoint coming back is not hit by every retry at once, and ``Retry-After``."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

MAX_RETRY_AFTER = 24 * 3600.0  # a receiver asking for longer gets a day


@dataclass(frozen=True)
class RetryPolicy:
    schedule: Sequence[float]  # schedule[n]: seconds before attempt n+1 (n failures so far)
    jitter: float = 0.1
    rng: random.Random = field(default_factory=random.Random)

    @property
    def first_delay(self) -> float:
        return float(self.schedule[0])

    def next_delay(self, failures: int, retry_after: float | None = None) -> float | None:
        """Seconds until the next attempt after ``failures`` failed ones; None: give up."""
        if failures >= len(self.schedule):
            return None
        delay = float(self.schedule[failures])
        if delay > 0 and self.jitter > 0:
            delay *= 1 + self.rng.uniform(-self.jitter, self.jitter)
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
        return delay
