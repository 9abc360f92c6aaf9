"""Pure ASGI middleware: the request context (request id, log context, HTTP metrics) and the
request body limit (413 past it)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import PayloadTooLarge, error_body_on
from gateway.ids import new_id
from gateway.logs import fresh_context, get_logger

log = get_logger()

REQUEST_ID_HEADER = b"x-request-id"
_SANE_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
# Probes and scrapes are logged at debug level: one line a second each would drown the rest.
_QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
HttpObserver = Callable[[str, str, int, float], None]


class RequestContext:
    """Per request: the request id (the client's ``X-Request-ID`` when it is sane, else a new
    one) is bound to every log line and returned on the answer; the answer is counted by route
    template (never the raw path) and status; one access log line is written.

    Handlers bind ``tenant_id`` and ``job_id`` as they learn them (gateway.api.common); the
    context is restored when the request ends. When the app raises, the context stays bound
    so that the 500 handler, which runs outside this middleware, logs with it.
    """

    def __init__(self, app: ASGIApp, observe: HttpObserver) -> None:
        self.app = app
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER
                ]
                headers.append((REQUEST_ID_HEADER, request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        with fresh_context(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            except BaseException:
                self._finish(scope, status, started)
                raise
            self._finish(scope, status, started)

    def _finish(self, scope: Scope, status: int, started: float) -> None:
        seconds = time.perf_counter() - started
        route = route_template(scope)
        method = scope["method"]
        self.observe(method, route, status, seconds)
        level = log.debug if route in _QUIET_ROUTES and status < 500 else log.info
        level("http_request", method=method, route=route, status=status,
              duration_ms=round(seconds * 1000, 1))


def route_template(scope: Scope) -> str:
    """The matched route's path template; when routing did not run (an answer from a
    middleware), the first route that matches; ``unmatched`` for none."""
    route = scope.get("route")
    if route is None:
        app = scope.get("app")
        for candidate in getattr(app, "routes", ()):
            match, _ = candidate.matches(scope)
            if match is not Match.NONE:
                route = candidate
                break
    path: object = getattr(route, "path", None)
    return path if isinstance(path, str) and path else "unmatched"


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            text: str = value.decode("latin-1")
            if _SANE_REQUEST_ID.fullmatch(text):
                return text
            break
    return new_id("req")


class BodyLimit:
    """Refuse bodies over ``max_bytes``: at once when Content-Length says so, else while
    reading (the handler's read raises PayloadTooLarge, answered 413 by the error handler)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await _too_large(send, self.max_bytes, scope["path"])
                    return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise PayloadTooLarge(f"request body over {self.max_bytes} bytes")
            return message

        await self.app(scope, limited, send)


async def _too_large(send: Send, limit: int, path: str) -> None:
    error = PayloadTooLarge(f"request body over {limit} bytes")
    body = json.dumps(error_body_on(path, error.status, error.code, error.message)).encode()
    await send({
        "type": "http.response.start",
        "status": 413,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close")],
    })
    await send({"type": "http.response.body", "body": body})
