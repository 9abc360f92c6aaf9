"""What tenants and admins do with callbacks: register, change, delete and list endpoints,
rotate a signing secret, read the outbox, redeliver one message or every dead letter since a
time. The API (tenant and admin) and the CLI call these; every write is a transaction script.

Another tenant's endpoint or message is answered as absent (404), never as forbidden.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from gateway.callbacks.urls import CallbackHostUnresolved, CallbackUrlPolicy, CallbackUrlRefused
from gateway.errors import Conflict, FieldError, InvalidRequest, NotFound
from gateway.ids import new_id
from gateway.store import Store, Tx
from gateway.store.callbacks import (
    EVENT_TYPES,
    MessageQuery,
    WebhookAttempt,
    WebhookEndpoint,
    WebhookMessage,
)
from gateway.webhooks.secrets import new_secret

DEFAULT_OVERLAP_SECONDS = 24 * 3600.0
# A host that passed the check at acceptance is not resolved again for this long (busy
# tenants send the same callback host with every job). Safe: every attempt checks afresh.
ACCEPTED_HOST_TTL_SECONDS = 60.0
_MAX_ACCEPTED_HOSTS = 10_000


@dataclass(frozen=True)
class EndpointFields:
    """A create (every field that is not None) or an update (only those that are not None)."""

    url: str | None = None
    description: str | None = None
    event_types: list[str] | None = None
    enabled: bool | None = None


@dataclass(frozen=True)
class MessageWithAttempts:
    message: WebhookMessage
    attempts: list[WebhookAttempt]


def endpoint_record(endpoint: WebhookEndpoint | None) -> dict[str, Any] | None:
    """An endpoint as the admin audit log keeps it: never its secrets."""
    if endpoint is None:
        return None
    return {
        "id": endpoint.id, "tenant_id": endpoint.tenant_id, "url": endpoint.url,
        "description": endpoint.description, "event_types": endpoint.event_types,
        "enabled": endpoint.enabled, "disabled_reason": endpoint.disabled_reason,
        "secret_rotated_at": endpoint.secret_rotated_at,
    }


def _audit(
    tx: Tx, actor: str | None, now: float, action: str, target_type: str, target_id: str,
    before: Any, after: Any,
) -> None:
    """Admin changes are audited (actor None: the tenant itself acted, through its own key)."""
    if actor is not None:
        tx.insert_audit(now, actor, action, target_type, target_id, before, after)


def _endpoint_not_found(endpoint_id: str) -> NotFound:
    return NotFound(f"no webhook endpoint {endpoint_id}", code="webhook_endpoint_not_found")


def _message_not_found(message_id: str) -> NotFound:
    return NotFound(f"no webhook message {message_id}", code="webhook_message_not_found")


def redeliver_message(
    message_id: str, tenant_id: str | None, now: float, actor: str | None = None
) -> Callable[[Tx], WebhookMessage]:
    """A transaction script that sends a message again from the start of the schedule (an
    admin passes ``tenant_id`` None). A message whose attempt is in flight just restarts its
    schedule; one to a disabled endpoint is refused (enable the endpoint first)."""

    def script(tx: Tx) -> WebhookMessage:
        message = tx.get_webhook_message(message_id)
        if message is None or (tenant_id is not None and message.tenant_id != tenant_id):
            raise _message_not_found(message_id)
        if message.endpoint_id is not None:
            endpoint = tx.get_webhook_endpoint(message.endpoint_id)
            if endpoint is None or not endpoint.enabled:
                raise Conflict(
                    "the endpoint is disabled: enable it, then redeliver",
                    code="webhook_endpoint_disabled",
                )
        in_flight = (
            message.status == "pending" and message.claim_token is not None
            and (message.next_attempt_at or 0) > now
        )
        changes: dict[str, Any] = {"status": "pending", "round_attempts": 0, "dead_at": None}
        if not in_flight:
            changes.update(next_attempt_at=now, claim_token=None)
        tx.update_webhook_message(message_id, **changes)
        _audit(tx, actor, now, "webhook_message.redeliver", "webhook_message", message_id,
               {"status": message.status}, {"status": "pending"})
        return replace(message, **changes)

    return script


def redeliver_dead(
    tenant_ref: str, endpoint_id: str | None, since: float, now: float, actor: str | None = None
) -> Callable[[Tx], int]:
    """A transaction script that requeues a tenant's dead letters (of one endpoint, or all)
    dead-lettered at or after ``since``; returns how many."""

    def script(tx: Tx) -> int:
        tenant = tx.get_tenant(tenant_ref)
        if tenant is None:
            raise NotFound(f"no tenant {tenant_ref!r}", code="tenant_not_found")
        if endpoint_id is not None:
            endpoint = tx.get_webhook_endpoint(endpoint_id)
            if endpoint is None or endpoint.tenant_id != tenant.id:
                raise _endpoint_not_found(endpoint_id)
            if not endpoint.enabled:
                raise Conflict(
                    "the endpoint is disabled: enable it, then redeliver",
                    code="webhook_endpoint_disabled",
                )
        count = tx.requeue_dead(tenant.id, endpoint_id, since, now)
        _audit(tx, actor, now, "webhook_message.redeliver_dead", "tenant", tenant.id, None,
               {"endpoint_id": endpoint_id, "since": since, "count": count})
        return count

    return script


class CallbackService:
    def __init__(
        self,
        store: Store,
        policy: CallbackUrlPolicy,
        *,
        wake: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.policy = policy
        self._wake = wake
        self._clock = clock
        self._accepted_hosts: dict[tuple[str, int | None], float] = {}  # -> monotonic expiry

    async def check_url(self, url: str, field: str) -> None:
        """Refuse a callback URL as a 422 naming ``field`` (a name that does not resolve yet is
        let through: every attempt checks it again)."""
        try:
            parts = self.policy.split(url)
            host = (parts.hostname or "", parts.port)
            if self._accepted_hosts.get(host, 0.0) > time.monotonic():
                return
            await self.policy.check(url)
        except CallbackHostUnresolved:
            return
        except CallbackUrlRefused as exc:
            raise InvalidRequest([FieldError(field, str(exc))]) from None
        if len(self._accepted_hosts) >= _MAX_ACCEPTED_HOSTS:
            self._accepted_hosts.clear()
        self._accepted_hosts[host] = time.monotonic() + ACCEPTED_HOST_TTL_SECONDS

    # -- endpoints ---------------------------------------------------------------------------

    async def create_endpoint(
        self, tenant_id: str, fields: EndpointFields, actor: str | None = None
    ) -> WebhookEndpoint:
        assert fields.url is not None
        await self.check_url(fields.url, "url")
        now = self._clock()
        endpoint = WebhookEndpoint(
            id=new_id("ep"), tenant_id=tenant_id, url=fields.url,
            secret=new_secret(), created_at=now, updated_at=now,
            event_types=list(fields.event_types or EVENT_TYPES),
            description=fields.description,
            enabled=True if fields.enabled is None else fields.enabled,
        )

        def script(tx: Tx) -> WebhookEndpoint:
            if tx.get_tenant(tenant_id) is None:
                raise NotFound(f"no tenant {tenant_id!r}", code="tenant_not_found")
            tx.insert_webhook_endpoint(endpoint)
            _audit(tx, actor, now, "webhook_endpoint.create", "webhook_endpoint", endpoint.id,
                   None, endpoint_record(endpoint))
            return endpoint

        return await self.store.write(script)

    async def list_endpoints(self, tenant_id: str) -> list[WebhookEndpoint]:
        return await self.store.list_webhook_endpoints(tenant_id)

    async def get_endpoint(self, tenant_id: str, endpoint_id: str) -> WebhookEndpoint:
        endpoint = await self.store.get_webhook_endpoint(endpoint_id)
        if endpoint is None or endpoint.tenant_id != tenant_id:
            raise _endpoint_not_found(endpoint_id)
        return endpoint

    async def update_endpoint(
        self, tenant_id: str, endpoint_id: str, fields: EndpointFields, actor: str | None = None
    ) -> WebhookEndpoint:
        if fields.url is not None:
            await self.check_url(fields.url, "url")
        changes: dict[str, Any] = {
            name: value for name, value in (
                ("url", fields.url), ("description", fields.description),
                ("event_types", fields.event_types), ("enabled", fields.enabled),
            ) if value is not None
        }
        if fields.enabled:
            changes["disabled_reason"] = None
        elif fields.enabled is False:
            changes["disabled_reason"] = "disabled by request"
        now = changes["updated_at"] = self._clock()

        def script(tx: Tx) -> WebhookEndpoint:
            endpoint = tx.get_webhook_endpoint(endpoint_id)
            if endpoint is None or endpoint.tenant_id != tenant_id:
                raise _endpoint_not_found(endpoint_id)
            tx.update_webhook_endpoint(endpoint_id, **changes)
            updated = replace(endpoint, **changes)
            _audit(tx, actor, now, "webhook_endpoint.update", "webhook_endpoint", endpoint_id,
                   endpoint_record(endpoint), endpoint_record(updated))
            return updated

        return await self.store.write(script)

    async def delete_endpoint(
        self, tenant_id: str, endpoint_id: str, actor: str | None = None
    ) -> None:
        """Delete an endpoint with its messages and their attempts."""
        now = self._clock()

        def script(tx: Tx) -> None:
            endpoint = tx.get_webhook_endpoint(endpoint_id)
            if endpoint is None or endpoint.tenant_id != tenant_id:
                raise _endpoint_not_found(endpoint_id)
            tx.delete_webhook_endpoint(endpoint_id)
            _audit(tx, actor, now, "webhook_endpoint.delete", "webhook_endpoint", endpoint_id,
                   endpoint_record(endpoint), None)

        await self.store.write(script)

    async def rotate_secret(
        self, tenant_id: str, endpoint_id: str, overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
        actor: str | None = None,
    ) -> WebhookEndpoint:
        """A new secret; the old one keeps signing too for ``overlap_seconds`` (0: not at all)."""
        now = self._clock()
        fresh = new_secret()

        def script(tx: Tx) -> WebhookEndpoint:
            endpoint = tx.get_webhook_endpoint(endpoint_id)
            if endpoint is None or endpoint.tenant_id != tenant_id:
                raise _endpoint_not_found(endpoint_id)
            changes: dict[str, Any] = {
                "secret": fresh, "previous_secret": endpoint.secret,
                "previous_secret_expires_at": now + overlap_seconds,
                "secret_rotated_at": now, "updated_at": now,
            }
            tx.update_webhook_endpoint(endpoint_id, **changes)
            _audit(tx, actor, now, "webhook_endpoint.rotate_secret", "webhook_endpoint",
                   endpoint_id, None, {"overlap_seconds": overlap_seconds})
            return replace(endpoint, **changes)

        return await self.store.write(script)

    # -- messages ----------------------------------------------------------------------------

    async def list_messages(self, query: MessageQuery) -> list[MessageWithAttempts]:
        messages = await self.store.list_webhook_messages(query)
        attempts = await self.store.webhook_attempts([m.id for m in messages])
        return [MessageWithAttempts(m, attempts[m.id]) for m in messages]

    async def get_message(self, tenant_id: str | None, message_id: str) -> MessageWithAttempts:
        message = await self.store.get_webhook_message(message_id)
        if message is None or (tenant_id is not None and message.tenant_id != tenant_id):
            raise _message_not_found(message_id)
        attempts = await self.store.webhook_attempts([message_id])
        return MessageWithAttempts(message, attempts[message_id])

    async def redeliver(
        self, tenant_id: str | None, message_id: str, actor: str | None = None
    ) -> WebhookMessage:
        message = await self.store.write(
            redeliver_message(message_id, tenant_id, self._clock(), actor)
        )
        self._wake()
        return message

    async def redeliver_dead(
        self, tenant_id: str, endpoint_id: str | None, since: float, actor: str | None = None
    ) -> int:
        count = await self.store.write(
            redeliver_dead(tenant_id, endpoint_id, since, self._clock(), actor)
        )
        self._wake()
        return count
