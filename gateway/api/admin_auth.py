"""Admin authentication: the bearer GATEWAY_ADMIN_TOKEN, compared in constant time.

No token configured means the admin API is off, and every admin route says so (403
``admin_disabled``). Tenant keys never open it.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request

from gateway.api.common import services
from gateway.errors import Forbidden, Unauthorized
from gateway.tenancy import bearer_token


def require_admin(request: Request) -> str:
    """Check the admin token; return the actor to record in the audit log."""
    expected = services(request).settings.admin_token
    if not expected:
        raise Forbidden(
            "the admin API is off: set GATEWAY_ADMIN_TOKEN to enable it", code="admin_disabled"
        )
    token = bearer_token(request.headers.get("authorization"))
    if token is None or not hmac.compare_digest(token.encode(), expected.encode()):
        raise Unauthorized("admin token required", code="invalid_admin_token")
    actor = request.headers.get("x-actor", "").strip()
    return f"admin:{actor[:64]}" if actor and actor.isprintable() else "admin"
