"""The callback API's edges, shared by the tenant routes (gateway.api.callbacks) and the admin
routes (gateway.api.admin_webhooks): request bodies and query strings in, JSON views out."""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import QueryParams

from gateway.api.common import iso, list_params
from gateway.callbacks.service import DEFAULT_OVERLAP_SECONDS, EndpointFields, MessageWithAttempts
from gateway.errors import FieldError, InvalidRequest
from gateway.normalize import json_object
from gateway.store.callbacks import MESSAGE_STATUSES, MessageQuery, WebhookEndpoint
from gateway.times import parse_time

EventType = Literal["job.completed", "job.failed", "job.cancelled", "job.processing"]
M = TypeVar("M", bound=BaseModel)


class EndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    url: str = Field(max_length=2048)
    description: str | None = Field(default=None, max_length=500)
    event_types: list[EventType] | None = Field(default=None, min_length=1)
    enabled: bool = True

    def fields(self) -> EndpointFields:
        types: list[str] | None = list(dict.fromkeys(self.event_types)) if self.event_types else None
        return EndpointFields(self.url, self.description, types, self.enabled)


class EndpointUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    url: str | None = Field(default=None, max_length=2048)
    description: str | None = Field(default=None, max_length=500)
    event_types: list[EventType] | None = Field(default=None, min_length=1)
    enabled: bool | None = None

    def fields(self) -> EndpointFields:
        types: list[str] | None = list(dict.fromkeys(self.event_types)) if self.event_types else None
        return EndpointFields(self.url, self.description, types, self.enabled)


class RotateSecret(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    overlap_seconds: float = Field(default=DEFAULT_OVERLAP_SECONDS, ge=0, le=7 * 24 * 3600)


def parse_body(model: type[M], data: Any) -> M:
    """Validate a JSON body; every wrong field becomes one entry of a 422."""
    data = json_object(data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [
            FieldError(".".join(str(p) for p in error["loc"]) or "body", error["msg"])
            for error in exc.errors()
        ]
        raise InvalidRequest(errors) from None


def required_since(params: QueryParams) -> float:
    since = parse_time(params.get("since"), "since")
    if since is None:
        raise InvalidRequest([FieldError("since", "is required (an ISO 8601 time)")])
    return since


def message_query(params: QueryParams, **fixed: str | None) -> MessageQuery:
    """Filters and the page from a query string: status, job_id, since, limit, cursor."""
    errors: list[FieldError] = []
    status, limit, cursor = list_params(params, MESSAGE_STATUSES, "msg_", errors)
    try:
        since = parse_time(params.get("since"), "since")
    except InvalidRequest as exc:
        errors.extend(exc.errors)
        since = None
    if errors:
        raise InvalidRequest(errors)
    values: dict[str, Any] = {
        "status": status, "since": since, "limit": limit + 1, "before_id": cursor,
        "job_id": params.get("job_id") or None,
    }
    values.update(fixed)
    return MessageQuery(**values)


def message_page(items: list[MessageWithAttempts], query: MessageQuery) -> dict[str, Any]:
    page, more = items[: query.limit - 1], len(items) >= query.limit
    return {
        "data": [message_view(item) for item in page],
        "next_cursor": page[-1].message.id if more and page else None,
    }


def endpoint_view(endpoint: WebhookEndpoint, *, secret: bool = False) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": endpoint.id,
        "url": endpoint.url,
        "description": endpoint.description,
        "event_types": endpoint.event_types,
        "enabled": endpoint.enabled,
        "disabled_reason": endpoint.disabled_reason,
        "created_at": iso(endpoint.created_at),
        "updated_at": iso(endpoint.updated_at),
        "secret_rotated_at": iso(endpoint.secret_rotated_at),
        "previous_secret_expires_at": iso(endpoint.previous_secret_expires_at),
    }
    if secret:
        view["secret"] = endpoint.secret
    return view


def message_view(item: MessageWithAttempts, *, payload: bool = False) -> dict[str, Any]:
    message = item.message
    view: dict[str, Any] = {
        "id": message.id,
        "endpoint_id": message.endpoint_id,
        "url": message.url if message.endpoint_id is None else None,
        "job_id": message.job_id,
        "event_type": message.event_type,
        "status": message.status,
        "created_at": iso(message.created_at),
        "event_at": iso(message.event_at),
        "next_attempt_at": iso(message.next_attempt_at) if message.status == "pending" else None,
        "delivered_at": iso(message.delivered_at),
        "dead_at": iso(message.dead_at),
        "last_error": message.last_error,
        "attempt_count": message.attempts,
        "attempts": [
            {
                "seq": a.seq,
                "at": iso(a.at),
                "status_code": a.status_code,
                "latency_ms": a.latency_ms,
                "error": a.error,
                "response": a.response,
            }
            for a in item.attempts
        ],
    }
    if payload:
        view["payload"] = json.loads(message.payload)
    return view
