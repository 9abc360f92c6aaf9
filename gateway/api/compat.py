"""The WaveSpeed-compatible surface: WaveSpeed's own paths, bodies and ``{code, message, data}``
envelope, so that WaveSpeed's SDKs work against the gateway by changing the base URL and key.

Thin: each route authenticates the tenant key and calls the same service layer as ``/v1``
(``JobService.accept``, so quotas, job records and metrics are shared); gateway.compat shapes
the answers, and ``wavespeed_errors`` is where this surface's errors take WaveSpeed's shape.

    POST /api/v3/{model id}                  submit (``enable_sync_mode``, ``?webhook=``: the job's
                                             callback, sent WaveSpeed-style by gateway.callbacks)
    GET  /api/v3/predictions/{id}/result     the prediction (id = the gateway's job id)
    GET  /api/v3/predictions/{id}
    GET  /api/v3/webhook/secret              the tenant's default signing secret
    POST /api/v3/media/upload/binary         multipart upload, passed through to WaveSpeed
    POST /api/v3/media/uploads               pre-signed upload ticket, passed through
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import compat
from gateway.api.common import bind_job, json_response, read_json, services, tenant
from gateway.errors import BadRequest, GatewayError, NotFound
from gateway.logs import get_logger
from gateway.normalize import parse_wavespeed_request
from gateway.states import is_terminal

log = get_logger()

Handler = Callable[[Request], Awaitable[Response]]


def wavespeed_errors(handler: Handler) -> Handler:
    """Answer gateway errors as WaveSpeed does: ``{"code": status, "message"}``, same status."""

    @wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except GatewayError as exc:
            status, body, headers = compat.error_body(exc)
            if status >= 500:
                log.warning("request_failed", code=exc.code, error=exc.message)
            return json_response(body, status, headers)

    return wrapped


def ok(data: object) -> Response:
    return json_response(compat.envelope(data))


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@wavespeed_errors
async def submit(request: Request) -> Response:
    principal = await tenant(request)
    body = await read_json(request)
    parsed = parse_wavespeed_request(
        request.path_params["model_id"], body, request.query_params.get("webhook")
    )
    svc = services(request)
    job, _ = await svc.jobs.accept(principal, parsed.job, request.headers.get("idempotency-key"))
    bind_job(job.id)
    base = _base_url(request)
    if parsed.sync_mode and not is_terminal(job.status):
        waited = svc.settings.sync_mode_timeout_seconds
        job = await svc.jobs.wait_terminal(job, waited)
        if not is_terminal(job.status):
            return ok(compat.sync_timed_out(job, base, waited))
    return ok(compat.prediction(job, base))


@wavespeed_errors
async def get_prediction(request: Request) -> Response:
    principal = await tenant(request)
    prediction_id = request.path_params["prediction_id"]
    try:
        job = await services(request).jobs.get_job(principal.tenant.id, prediction_id)
    except NotFound:
        raise NotFound(f"prediction not found: {prediction_id}", code="job_not_found") from None
    bind_job(job.id)
    return ok(compat.prediction(job, _base_url(request)))


@wavespeed_errors
async def webhook_secret(request: Request) -> Response:
    principal = await tenant(request)
    return ok({"secret": principal.tenant.webhook_secret})


@wavespeed_errors
async def upload_binary(request: Request) -> Response:
    await tenant(request)
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise BadRequest("file: send multipart/form-data with a field 'file'", code="bad_upload")
    body = await request.body()
    return ok(await services(request).upstream.forward_upload_binary(body, content_type))


@wavespeed_errors
async def create_upload(request: Request) -> Response:
    await tenant(request)
    ticket = compat.upload_ticket(await read_json(request))
    return ok(await services(request).upstream.create_upload(ticket))


@wavespeed_errors
async def not_found(request: Request) -> Response:
    raise NotFound(f"not found: {request.method} {request.url.path}")


routes = [
    Route("/api/v3/predictions/{prediction_id}/result", get_prediction, methods=["GET"]),
    Route("/api/v3/predictions/{prediction_id}", get_prediction, methods=["GET"]),
    Route("/api/v3/webhook/secret", webhook_secret, methods=["GET"]),
    Route("/api/v3/media/upload/binary", upload_binary, methods=["POST"]),
    Route("/api/v3/media/uploads", create_upload, methods=["POST"]),
    Route("/api/v3/{model_id:path}", submit, methods=["POST"]),
    # Anything else under /api/v3 still answers in WaveSpeed's shape.
    Route("/api/v3/{path:path}", not_found, methods=["GET", "PUT", "PATCH", "DELETE"]),
]
