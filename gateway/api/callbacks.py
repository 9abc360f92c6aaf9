"""Tenant callback routes: the default signing secret, webhook endpoints (register, list,
change, delete, rotate the secret), their messages with every attempt, and redelivery."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

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
from gateway.api.common import json_response, read_json, read_optional_json, services, tenant
from gateway.callbacks.service import CallbackService


def _callbacks(request: Request) -> CallbackService:
    return services(request).callbacks.service


async def webhook_secret(request: Request) -> Response:
    principal = await tenant(request)
    return json_response({"secret": principal.tenant.webhook_secret})


async def create_endpoint(request: Request) -> Response:
    principal = await tenant(request)
    body = parse_body(EndpointCreate, await read_json(request))
    endpoint = await _callbacks(request).create_endpoint(principal.tenant.id, body.fields())
    return json_response(
        endpoint_view(endpoint, secret=True), 201,
        {"Location": f"/v1/webhook-endpoints/{endpoint.id}"},
    )


async def list_endpoints(request: Request) -> Response:
    principal = await tenant(request)
    endpoints = await _callbacks(request).list_endpoints(principal.tenant.id)
    return json_response({"data": [endpoint_view(e) for e in endpoints]})


async def get_endpoint(request: Request) -> Response:
    principal = await tenant(request)
    endpoint = await _callbacks(request).get_endpoint(
        principal.tenant.id, request.path_params["endpoint_id"]
    )
    return json_response(endpoint_view(endpoint))


async def update_endpoint(request: Request) -> Response:
    principal = await tenant(request)
    body = parse_body(EndpointUpdate, await read_json(request))
    endpoint = await _callbacks(request).update_endpoint(
        principal.tenant.id, request.path_params["endpoint_id"], body.fields()
    )
    return json_response(endpoint_view(endpoint))


async def delete_endpoint(request: Request) -> Response:
    principal = await tenant(request)
    await _callbacks(request).delete_endpoint(principal.tenant.id, request.path_params["endpoint_id"])
    return Response(status_code=204)


async def rotate_secret(request: Request) -> Response:
    principal = await tenant(request)
    body = parse_body(RotateSecret, await read_optional_json(request))
    endpoint = await _callbacks(request).rotate_secret(
        principal.tenant.id, request.path_params["endpoint_id"], body.overlap_seconds
    )
    return json_response(endpoint_view(endpoint, secret=True))


async def endpoint_messages(request: Request) -> Response:
    principal = await tenant(request)
    callbacks = _callbacks(request)
    endpoint = await callbacks.get_endpoint(principal.tenant.id, request.path_params["endpoint_id"])
    query = message_query(request.query_params, tenant_id=principal.tenant.id, endpoint_id=endpoint.id)
    return json_response(message_page(await callbacks.list_messages(query), query))


async def redeliver_dead(request: Request) -> Response:
    principal = await tenant(request)
    since = required_since(request.query_params)
    count = await _callbacks(request).redeliver_dead(
        principal.tenant.id, request.path_params["endpoint_id"], since
    )
    return json_response({"redelivering": count}, 202)


async def list_messages(request: Request) -> Response:
    principal = await tenant(request)
    query = message_query(
        request.query_params, tenant_id=principal.tenant.id,
        endpoint_id=request.query_params.get("endpoint_id") or None,
    )
    return json_response(message_page(await _callbacks(request).list_messages(query), query))


async def get_message(request: Request) -> Response:
    principal = await tenant(request)
    item = await _callbacks(request).get_message(principal.tenant.id, request.path_params["message_id"])
    return json_response(message_view(item, payload=True))


async def redeliver_message(request: Request) -> Response:
    principal = await tenant(request)
    callbacks = _callbacks(request)
    message = await callbacks.redeliver(principal.tenant.id, request.path_params["message_id"])
    item = await callbacks.get_message(principal.tenant.id, message.id)
    return json_response(message_view(item), 202)


async def redeliver_all_dead(request: Request) -> Response:
    """Every dead letter of the tenant since a time, one-off callback URLs included."""
    principal = await tenant(request)
    since = required_since(request.query_params)
    count = await _callbacks(request).redeliver_dead(principal.tenant.id, None, since)
    return json_response({"redelivering": count}, 202)


routes = [
    Route("/v1/webhook-secret", webhook_secret, methods=["GET"]),
    Route("/v1/webhook-endpoints", create_endpoint, methods=["POST"]),
    Route("/v1/webhook-endpoints", list_endpoints, methods=["GET"]),
    Route("/v1/webhook-endpoints/{endpoint_id}", get_endpoint, methods=["GET"]),
    Route("/v1/webhook-endpoints/{endpoint_id}", update_endpoint, methods=["PATCH"]),
    Route("/v1/webhook-endpoints/{endpoint_id}", delete_endpoint, methods=["DELETE"]),
    Route("/v1/webhook-endpoints/{endpoint_id}/rotate-secret", rotate_secret, methods=["POST"]),
    Route("/v1/webhook-endpoints/{endpoint_id}/messages", endpoint_messages, methods=["GET"]),
    Route("/v1/webhook-endpoints/{endpoint_id}/redeliver-dead", redeliver_dead, methods=["POST"]),
    Route("/v1/webhook-messages", list_messages, methods=["GET"]),
    Route("/v1/webhook-messages/redeliver-dead", redeliver_all_dead, methods=["POST"]),
    Route("/v1/webhook-messages/{message_id}", get_message, methods=["GET"]),
    Route("/v1/webhook-messages/{message_id}/redeliver", redeliver_message, methods=["POST"]),
]
