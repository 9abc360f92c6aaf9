"""The simulator's settings and its fault knobs.

``SimulatorConfig`` is fixed at start-up except ``public_url`` (read at each use, so a test
may set it once its socket is bound) and ``faults``, which can be changed at any time:
directly on the object, or over HTTP with ``POST /_sim/faults``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import httpx

DEFAULT_API_KEY = "sim-key"
DEFAULT_WEBHOOK_SECRET = "whsec_simulatorsecret0123456789"  # noqa: S105 (a public test value)
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8001"


class FaultError(ValueError):
    """A fault update named an unknown knob or gave it a bad value; nothing was changed."""


@dataclass
class Faults:
    """Probabilities (0..1) and switches that make the simulator misbehave like the real thing.

    Every probability is drawn from the simulator's seeded ``random.Random``, so a run with the
    same seed and the same traffic takes the same decisions.
    """

    failure_rate: float = 0.0  # the task ends "failed" with error "simulated failure"
    rate_429: float = 0.0  # submit answered 429 + Retry-After: 1; nothing created
    rate_5xx: float = 0.0  # submit answered 500 before anything is created
    lost_answer_rate: float = 0.0  # task created and run, but the submit is answered 500
    disconnect_rate: float = 0.0  # task created and run, the connection drops unanswered
    webhook_lost_rate: float = 0.0  # the webhook is never sent
    webhook_duplicate_rate: float = 0.0  # the same delivery (id and body) is sent twice
    webhook_delay_seconds: float = 0.0  # the webhook goes out that long after completion
    webhook_reorder_rate: float = 0.0  # a stale "processing" webhook follows the terminal one
    get_5xx_rate: float = 0.0  # GET of a prediction answered 503
    paused: bool = False  # tasks stay "processing" until unpaused

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply ``changes`` (knob -> value) all at once, or raise ``FaultError`` and apply none."""
        checked = {name: _checked_value(name, value) for name, value in changes.items()}
        for name, value in checked.items():
            setattr(self, name, value)


_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Faults)}


def _is_probability(name: str) -> bool:
    return name.endswith("_rate") or name.startswith("rate_")


def _checked_value(name: str, value: Any) -> float | bool:
    if name not in _DEFAULTS:
        raise FaultError(f"{name}: unknown fault; known: {', '.join(_DEFAULTS)}")
    if isinstance(_DEFAULTS[name], bool):
        if not isinstance(value, bool):
            raise FaultError(f"{name}: must be true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FaultError(f"{name}: must be a finite number")
    if value < 0:
        raise FaultError(f"{name}: must not be negative")
    if _is_probability(name) and value > 1:
        raise FaultError(f"{name}: must be between 0 and 1")
    return float(value)


@dataclass
class SimulatorConfig:
    """How one simulator instance behaves; see the module docstring for what may change live."""

    api_key: str = DEFAULT_API_KEY
    webhook_secret: str = DEFAULT_WEBHOOK_SECRET
    public_url: str = DEFAULT_PUBLIC_URL
    latency_seconds: float = 0.0  # from submit to the end of the task
    # How long enable_sync_mode waits before code 5004: about 90 s at WaveSpeed (the contract).
    sync_timeout_seconds: float = 90.0
    webhook_timeout_seconds: float = 10.0  # per delivery attempt
    # Where webhooks travel; None = the network. Tests in one process pass an ASGITransport.
    webhook_transport: httpx.AsyncBaseTransport | None = None
    max_upload_bytes: int = 20 * 1024 * 1024  # larger uploads are answered 413
    faults: Faults = field(default_factory=Faults)
    seed: int = 0  # seeds every fault decision

    def base_url(self) -> str:
        return self.public_url.rstrip("/")


class Dice:
    """The seeded source of every fault decision."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def roll(self, probability: float) -> bool:
        """True with ``probability``; draws nothing (keeping the sequence) when it is 0."""
        return probability > 0 and self._rng.random() < probability
