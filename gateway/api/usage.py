"""Tenant usage: GET /v1/usage?from=&to= (UTC dates; default today)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.common import json_response, services, tenant
from gateway.usage import parse_range, usage_report


async def usage(request: Request) -> Response:
    principal = await tenant(request)
    svc = services(request)
    now = svc.clock()
    first, last = parse_range(request.query_params.get("from"), request.query_params.get("to"), now)
    return json_response(await usage_report(svc.store, principal.tenant, first, last, now))


routes = [Route("/v1/usage", usage, methods=["GET"])]
