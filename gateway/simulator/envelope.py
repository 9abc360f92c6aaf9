"""WaveSpeed's answer envelope ``{"code", "message", "data"}`` and the simulator's HTTP helpers.

Handlers raise ``ApiError``; ``error_envelope`` (registered for it and for Starlette's own
HTTP errors) turns it into ``{"code": status, "message": ...}`` with that HTTP status.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.simulator.state import SimulatorState


class ApiError(Exception):
    """Answered as ``{"code": status, "message": message}`` with that HTTP status."""

    def __init__(
        self, status: int, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def ok(data: Any, background: BackgroundTask | None = None) -> JSONResponse:
    return JSONResponse({"code": 200, "message": "success", "data": data}, background=background)


def fail(status: int, message: str, headers: dict[str, str] | None = None,
         background: BackgroundTask | None = None) -> JSONResponse:
    body = {"code": status, "message": message}
    return JSONResponse(body, status_code=status, headers=headers, background=background)


def sim_state(request: Request) -> SimulatorState:
    state: SimulatorState = request.app.state.simulator
    return state


async def json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise ApiError(400, "body: must be valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "body: must be a JSON object")
    return body


async def error_envelope(request: Request, exc: Exception) -> Response:
    """``ApiError`` and Starlette's own HTTP errors (unknown path, wrong method) as envelopes."""
    if isinstance(exc, ApiError):
        return fail(exc.status, exc.message, exc.headers)
    if isinstance(exc, HTTPException):
        return fail(exc.status_code, exc.detail, dict(exc.headers or {}))
    raise exc
