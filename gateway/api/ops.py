"""Operations routes: /healthz (the process answers), /readyz (the store is usable),
/openapi.json (the HTTP surface, openapi/openapi.yaml), /v1/models."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import yaml
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.common import json_response, services, tenant
from gateway.errors import ServiceUnavailable
from gateway.store.migrations import LATEST

# Beside the package in a checkout and in the image (Dockerfile copies openapi/ next to gateway/).
OPENAPI_PATH = Path(__file__).resolve().parents[2] / "openapi" / "openapi.yaml"


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


@functools.cache
def openapi_json(path: Path = OPENAPI_PATH) -> bytes:
    """The hand-written document as JSON, read once."""
    with path.open(encoding="utf-8") as source:
        return json.dumps(yaml.safe_load(source)).encode()


async def openapi(request: Request) -> Response:
    try:
        body = openapi_json()
    except OSError:
        raise ServiceUnavailable(
            f"the OpenAPI document is not installed ({OPENAPI_PATH})", code="openapi_missing"
        ) from None
    return Response(body, media_type="application/json")


async def models(request: Request) -> Response:
    await tenant(request)
    return json_response({"data": services(request).catalog.describe()})


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/v1/models", models, methods=["GET"]),
]
