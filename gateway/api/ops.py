"""Operations routes: /healthz (the process answers), /readyz (the store is usable), /v1/models."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.common import json_response, services, tenant
from gateway.store.migrations import LATEST


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    svc = services(request)
    problems: list[str] = []
    if svc.shutting_down:
        problems.append("shutting down")
    try:
        version = await svc.store.schema_version()
    except Exception as exc:  # any store failure means not ready; say which
        problems.append(f"store unreachable: {type(exc).__name__}")
    else:
        if version < LATEST:
            problems.append(f"schema at version {version}, expected {LATEST}")
    if problems:
        return json_response({"status": "unavailable", "problems": problems}, 503)
    return json_response({"status": "ready", "schema_version": LATEST})


async def models(request: Request) -> Response:
    await tenant(request)
    return json_response({"data": services(request).catalog.describe()})


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/v1/models", models, methods=["GET"]),
]
