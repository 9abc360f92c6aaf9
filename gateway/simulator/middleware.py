"""ASGI middleware: the request log (``GET /_sim/requests``) and the Bearer key check.

Inspection routes (``/_sim/``) are neither logged nor authenticated; ``/outputs/`` and
``/media/`` (downloads and pre-signed PUTs) are logged but open, like WaveSpeed's CDN.
"""

from __future__ import annotations

import hmac
import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.simulator.records import RecordedRequest
from gateway.simulator.state import SimulatorState

INSPECTION_PREFIX = "/_sim/"
OPEN_PREFIXES = (INSPECTION_PREFIX, "/outputs/", "/media/")


class RecordRequests:
    """Buffers each request's body, logs the request, then replays the body to the app."""

    def __init__(self, app: ASGIApp, state: SimulatorState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(INSPECTION_PREFIX):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        self.state.requests.append(_record(scope, body))
        await self.app(scope, _replay(body, receive), send)


class RequireApiKey:
    """Answers 401 in WaveSpeed's envelope unless ``Authorization: Bearer <api_key>``."""

    def __init__(self, app: ASGIApp, state: SimulatorState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        if self._authorized(_headers(scope).get("authorization", "")):
            await self.app(scope, receive, send)
            return
        response = JSONResponse({"code": 401, "message": "Unauthorized"}, status_code=401)
        await response(scope, receive, send)

    def _authorized(self, header: str) -> bool:
        scheme, _, key = header.partition(" ")
        expected = self.state.config.api_key.encode()
        return scheme.lower() == "bearer" and hmac.compare_digest(key.strip().encode(), expected)


def _headers(scope: Scope) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _record(scope: Scope, body: bytes) -> RecordedRequest:
    headers = _headers(scope)
    if "authorization" in headers:
        headers["authorization"] = "Bearer ***"
    query = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
    return RecordedRequest(
        scope["method"], scope["path"], query, headers, _json_or_none(headers, body), len(body)
    )


def _json_or_none(headers: dict[str, str], body: bytes) -> Any:
    if "json" not in headers.get("content-type", "") or not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None
