"""The gateway's error tree; the one place errors become HTTP statuses and the JSON error body.

    GatewayError
    ├── BadRequest (400)          malformed JSON, unreadable body
    ├── Unauthorized (401)        missing or unknown key
    ├── Forbidden (403)           a valid key that may not do this
    ├── NotFound (404)            absent, or another tenant's
    ├── Conflict (409)            idempotency mismatch, a transition refused
    ├── PayloadTooLarge (413)
    ├── InvalidRequest (422)      every wrong field in ``details``
    ├── QuotaExceeded (429)       names the limit that was hit
    ├── ServiceUnavailable (503)  shutting down, store unreachable
    └── UpstreamError (502)       WaveSpeed misbehaved (see gateway.upstream for the subtree)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class GatewayError(Exception):
    status = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details or []
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.details)


def error_body(
    code: str, message: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The one error shape (outside the WaveSpeed-compatible surface); ``details`` is always
    there, empty unless fields are named, so a client can read it without testing for it."""
    return {"error": {"code": code, "message": message, "details": details or []}}


# The WaveSpeed-compatible surface (gateway.api.compat) answers errors in WaveSpeed's shape.
WAVESPEED_SURFACE = "/api/v3/"


def wavespeed_error_body(status: int, message: str) -> dict[str, Any]:
    return {"code": status, "message": message}


def error_body_on(path: str, status: int, code: str, message: str) -> dict[str, Any]:
    """The error shape of the surface ``path`` is on, for answers given outside a surface's
    own error handling: the body limit's 413 and an unexpected error's 500. (The router's
    404 and 405 never reach /api/v3, whose catch-all route answers any other path there.)"""
    if path.startswith(WAVESPEED_SURFACE):
        return wavespeed_error_body(status, message)
    return error_body(code, message)


class BadRequest(GatewayError):
    status = 400
    code = "bad_request"


class Unauthorized(GatewayError):
    status = 401
    code = "unauthorized"


class Forbidden(GatewayError):
    status = 403
    code = "forbidden"


class NotFound(GatewayError):
    status = 404
    code = "not_found"


class Conflict(GatewayError):
    status = 409
    code = "conflict"


class PayloadTooLarge(GatewayError):
    status = 413
    code = "payload_too_large"


class InvalidRequest(GatewayError):
    status = 422
    code = "invalid_request"

    def __init__(self, errors: list[FieldError]) -> None:
        fields = ", ".join(dict.fromkeys(e.field for e in errors))
        super().__init__(f"invalid fields: {fields}", details=[e.as_dict() for e in errors])
        self.errors = errors


class QuotaExceeded(GatewayError):
    status = 429
    code = "quota_exceeded"

    def __init__(
        self, message: str, *, limit: str, code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, code=code, headers=headers)
        self.limit = limit


class ServiceUnavailable(GatewayError):
    status = 503
    code = "service_unavailable"


class UpstreamError(GatewayError):
    status = 502
    code = "upstream_error"
