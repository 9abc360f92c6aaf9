"""The job state graph, drawn once; every transition in the gateway is checked here.

    queued ──► submitted ──► processing ──► completed
      │  │         │  └──────────┬─────────► failed
      │  └─────────┴─────────────┴─────────► cancelled (by the tenant)
      └──► processing | completed | failed   (a late webhook or poll adopts a lost submit)

Terminal states (completed, failed, cancelled) never change again.
"""

from __future__ import annotations

from typing import Final, Literal

Status = Literal["queued", "submitted", "processing", "completed", "failed", "cancelled"]
Source = Literal["api", "dispatcher", "webhook", "poll", "admin", "reconciler"]

STATUSES: Final[tuple[Status, ...]] = (
    "queued", "submitted", "processing", "completed", "failed", "cancelled",
)
TERMINAL: Final[frozenset[str]] = frozenset({"completed", "failed", "cancelled"})
ACTIVE: Final[frozenset[str]] = frozenset({"queued", "submitted", "processing"})

EDGES: Final[dict[str, frozenset[str]]] = {
    "queued": frozenset({"submitted", "processing", "completed", "failed", "cancelled"}),
    "submitted": frozenset({"processing", "completed", "failed", "cancelled"}),
    "processing": frozenset({"completed", "failed", "cancelled"}),
    "completed": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}


def can_transition(current: str, new: str) -> bool:
    return new in EDGES.get(current, frozenset())


def is_terminal(status: str) -> bool:
    return status in TERMINAL
