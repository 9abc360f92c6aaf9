"""Admin callback routes: any tenant's webhook endpoints (the tenant routes' equivalents under
``/admin/tenants/{tenant}/webhook-endpoints``), dead letters across tenants, redelivery.
Every change is audited with the admin's actor."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.admin_auth import require_admin
from gateway.api.callback_io import (
    EndpointCreate,
    EndpointUpdate,
    RotateSecret,
    endpoint_view,
    message_page,
    message_query,
    message_view,
    parse_body,
    required_since,
)
from gateway.api.common import json_response, read_json, read_optional_json, services
from gateway.callbacks.service import CallbackService
from gateway.errors import NotFound

_BASE = "/admin/tenants/{tenant}/webhook-endpoints"


def _callbacks(request: Request) -> tuple[CallbackService, str]:
    actor = require_admin(request)
    return services(request).callbacks.service, actor


async def _tenant_id(request: Request) -> str:
    ref = request.path_params["tenant"]
    found = await services(request).store.get_tenant(ref)
    if found is None:
        raise NotFound(f"no tenant {ref!r}", code="tenant_not_found")
    return found.id


async def create_endpoint(request: Request) -> Response:
    callbacks, actor = _callbacks(request)
    tenant_id = await _tenant_id(request)
    body = parse_body(EndpointCreate, await read_json(request))
    endpoint = await callbacks.create_endpoint(tenant_id, body.fields(), actor)
    return json_response(
        endpoint_view(endpoint, secret=True), 201,
        {"Location": f"/admin/tenants/{tenant_id}/webhook-endpoints/{endpoint.id}"},
    )


async def list_endpoints(request: Request) -> Response:
    callbacks, _ = _callbacks(request)
    endpoints = await callbacks.list_endpoints(await _tenant_id(request))
    return json_response({"data": [endpoint_view(e) for e in endpoints]})


async def get_endpoint(request: Request) -> Response:
    callbacks, _ = _callbacks(request)
    endpoint = await callbacks.get_endpoint(
        await _tenant_id(request), request.path_params["endpoint_id"]
    )
    return json_response(endpoint_view(endpoint))


async def update_endpoint(request: Request) -> Response:
    callbacks, actor = _callbacks(request)
    tenant_id = await _tenant_id(request)
    body = parse_body(EndpointUpdate, await read_json(request))
    endpoint = await callbacks.update_endpoint(
        tenant_id, request.path_params["endpoint_id"], body.fields(), actor
    )
    return json_response(endpoint_view(endpoint))


async def delete_endpoint(request: Request) -> Response:
    callbacks, actor = _callbacks(request)
    tenant_id = await _tenant_id(request)
    await callbacks.delete_endpoint(tenant_id, request.path_params["endpoint_id"], actor)
    return Response(status_code=204)


async def rotate_secret(request: Request) -> Response:
    callbacks, actor = _callbacks(request)
    tenant_id = await _tenant_id(request)
    body = parse_body(RotateSecret, await read_optional_json(request))
    endpoint = await callbacks.rotate_secret(
        tenant_id, request.path_params["endpoint_id"], body.overlap_seconds, actor
    )
    return json_response(endpoint_view(endpoint, secret=True))


async def endpoint_messages(request: Request) -> Response:
    callbacks, _ = _callbacks(request)
    tenant_id = await _tenant_id(request)
    endpoint = await callbacks.get_endpoint(tenant_id, request.path_params["endpoint_id"])
    query = message_query(request.query_params, tenant_id=tenant_id, endpoint_id=endpoint.id)
    return json_response(message_page(await callbacks.list_messages(query), query))


async def redeliver_endpoint_dead(request: Request) -> Response:
    callbacks, actor = _callbacks(request)
    tenant_id = await _tenant_id(request)
    since = required_since(request.query_params)
    count = await callbacks.redeliver_dead(
        tenant_id, request.path_params["endpoint_id"], since, actor
    )
    return json_response({"redelivering": count}, 202)


async def redeliver_tenant_dead(request: Request) -> Response:
    callbacks, actor = _callbacks(request)
    tenant_id = await _tenant_id(request)
    since = required_since(request.query_params)
    count = await callbacks.redeliver_dead(tenant_id, None, since, actor)
    return json_response({"redelivering": count}, 202)


async def dead_letters(request: Request) -> Response:
    """Dead letters across tenants (``?tenant=`` narrows to one), newest first."""
    callbacks, _ = _callbacks(request)
    tenant_id = None
    if request.query_params.get("tenant"):
        ref = request.query_params["tenant"]
        found = await services(request).store.get_tenant(ref)
        if found is None:
            raise NotFound(f"no tenant {ref!r}", code="tenant_not_found")
        tenant_id = found.id
    query = message_query(request.query_params, tenant_id=tenant_id, status="dead")
    return json_response(message_page(await callbacks.list_messages(query), query))


async def get_message(request: Request) -> Response:
    callbacks, _ = _callbacks(request)
    item = await callbacks.get_message(None, request.path_params["message_id"])
    return json_response(message_view(item, payload=True))


async def redeliver_message(request: Request) -> Response:
    callbacks, actor = _callbacks(request)
    message = await callbacks.redeliver(None, request.path_params["message_id"], actor)
    return json_response(message_view(await callbacks.get_message(None, message.id)), 202)


routes = [
    Route(_BASE, create_endpoint, methods=["POST"]),
    Route(_BASE, list_endpoints, methods=["GET"]),
    Route(_BASE + "/{endpoint_id}", get_endpoint, methods=["GET"]),
    Route(_BASE + "/{endpoint_id}", update_endpoint, methods=["PATCH"]),
    Route(_BASE + "/{endpoint_id}", delete_endpoint, methods=["DELETE"]),
    Route(_BASE + "/{endpoint_id}/rotate-secret", rotate_secret, methods=["POST"]),
    Route(_BASE + "/{endpoint_id}/messages", endpoint_messages, methods=["GET"]),
    Route(_BASE + "/{endpoint_id}/redeliver-dead", redeliver_endpoint_dead, methods=["POST"]),
    Route("/admin/tenants/{tenant}/redeliver-dead", redeliver_tenant_dead, methods=["POST"]),
    Route("/admin/dead-letters", dead_letters, methods=["GET"]),
    Route("/admin/webhook-messages/{message_id}", get_message, methods=["GET"]),
    Route("/admin/webhook-messages/{message_id}/redeliver", redeliver_message, methods=["POST"]),
]
