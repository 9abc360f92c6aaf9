"""The store's part for tenant callbacks: endpoints, the outbox of messages, the attempt log.

A message is one event for one destination (a registered endpoint, or a job's own
``callback_url``); its id is the ``webhook-id`` of every attempt. ``status`` is ``pending``
until a 2xx (``delivered``) or the end of the retry schedule (``dead``). A deliverer claims a
pending message by stamping ``claim_token`` and moving ``next_attempt_at`` to the end of its
lease, so another process skips it, and a crashed one's claim simply runs out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gateway.store import JobEvent

EVENT_TYPES = ("job.completed", "job.failed", "job.cancelled", "job.processing")
MESSAGE_STATUSES = ("pending", "delivered", "dead")


@dataclass
class WebhookEndpoint:
    id: str
    tenant_id: str
    url: str
    secret: str
    created_at: float
    updated_at: float
    event_types: list[str] = field(default_factory=lambda: list(EVENT_TYPES))
    description: str | None = None
    enabled: bool = True
    disabled_reason: str | None = None
    previous_secret: str | None = None
    previous_secret_expires_at: float | None = None
    secret_rotated_at: float | None = None

    def signing_secrets(self, now: float) -> list[str]:
        """The current secret, then the previous one while its overlap lasts."""
        secrets = [self.secret]
        if (
            self.previous_secret is not None
            and self.previous_secret_expires_at is not None
            and self.previous_secret_expires_at > now
        ):
            secrets.append(self.previous_secret)
        return secrets


@dataclass
class WebhookMessage:
    id: str
    tenant_id: str
    endpoint_id: str | None  # None: the job's own callback_url
    url: str
    target: str  # what per-endpoint concurrency counts: the endpoint id, or tenant + origin
    job_id: str
    event_type: str
    payload: str  # the exact body, snapshotted at the transition
    event_at: float
    created_at: float
    next_attempt_at: float | None
    status: str = "pending"
    attempts: int = 0  # every attempt ever made
    round_attempts: int = 0  # attempts since the schedule (re)started; redelivery resets it
    delivered_at: float | None = None
    dead_at: float | None = None
    last_error: str | None = None
    claim_token: str | None = None
    # How it is signed and shaped: "standard" (Standard Webhooks) or "wavespeed" (a ?webhook=
    # of the WaveSpeed-compatible surface: bare prediction body, v3 signature).
    style: str = "standard"


@dataclass(frozen=True)
class WebhookAttempt:
    message_id: str
    seq: int
    at: float
    latency_ms: int | None
    status_code: int | None
    error: str | None
    response: str | None


@dataclass(frozen=True)
class MessageQuery:
    """Filters of a message listing; ``before_id`` is the cursor (newest first)."""

    tenant_id: str | None = None
    endpoint_id: str | None = None
    job_id: str | None = None
    status: str | None = None
    since: float | None = None  # messages created (or, for dead ones, dead-lettered) since
    limit: int = 50
    before_id: str | None = None


class CallbackWrites(Protocol):
    """What transaction scripts may do with callbacks (mixed into ``Tx``)."""

    def job_events(self, job_id: str) -> list[JobEvent]: ...
    def endpoints_for_event(self, tenant_id: str, event_type: str) -> list[WebhookEndpoint]: ...
    def insert_webhook_endpoint(self, endpoint: WebhookEndpoint) -> None: ...
    def get_webhook_endpoint(self, endpoint_id: str) -> WebhookEndpoint | None: ...
    def update_webhook_endpoint(self, endpoint_id: str, **changes: object) -> None: ...
    def delete_webhook_endpoint(self, endpoint_id: str) -> None: ...
    def insert_webhook_message(self, message: WebhookMessage) -> None: ...
    def get_webhook_message(self, message_id: str) -> WebhookMessage | None: ...
    def update_webhook_message(self, message_id: str, **changes: object) -> None: ...
    def claim_webhook_messages(
        self, now: float, lease_until: float, limit: int, per_target: int, token: str
    ) -> list[WebhookMessage]: ...
    def insert_webhook_attempt(self, attempt: WebhookAttempt) -> None: ...
    def dead_letter_pending(self, endpoint_id: str, now: float, reason: str) -> int: ...
    def prune_webhook_messages(self, before_id: str, limit: int) -> int: ...
    def requeue_dead(
        self, tenant_id: str, endpoint_id: str | None, since: float, now: float
    ) -> int: ...


class CallbackReads(Protocol):
    """Reads for the API and the deliverer (mixed into ``Store``)."""

    async def get_webhook_endpoint(self, endpoint_id: str) -> WebhookEndpoint | None: ...
    async def list_webhook_endpoints(self, tenant_id: str) -> list[WebhookEndpoint]: ...
    async def get_webhook_message(self, message_id: str) -> WebhookMessage | None: ...
    async def list_webhook_messages(self, query: MessageQuery) -> list[WebhookMessage]: ...
    async def webhook_attempts(self, message_ids: list[str]) -> dict[str, list[WebhookAttempt]]: ...
    async def next_webhook_due(self) -> float | None: ...
    async def count_pending_webhooks(self) -> int: ...
