"""Tenant job routes: POST/GET /v1/jobs, GET /v1/jobs/{id}, POST /v1/jobs/{id}/cancel."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.common import (
    bind_job,
    job_view,
    json_response,
    list_params,
    read_json,
    services,
    tenant,
)
from gateway.errors import FieldError, InvalidRequest
from gateway.jobs import first_event
from gateway.quota import Limits
from gateway.states import STATUSES, is_terminal
from gateway.usage import rate_headers


async def create_job(request: Request) -> Response:
    principal = await tenant(request)
    body = await read_json(request)
    svc = services(request)
    job, created = await svc.jobs.create_job(principal, body, request.headers.get("idempotency-key"))
    bind_job(job.id)
    wait = body.get("wait") if isinstance(body, dict) else None
    waited = False
    if wait and not is_terminal(job.status):
        job, waited = await svc.jobs.wait_terminal(job, float(wait)), True
    # A job created just now has its first event only, as this request wrote it.
    events = [first_event(job)] if created and not waited else await svc.jobs.get_events(job.id)
    status = 200 if is_terminal(job.status) and wait else 202
    headers = {"Location": f"/v1/jobs/{job.id}"}
    limits = Limits.from_stored(principal.tenant.limits)
    if limits.requests_per_minute:
        tat = await svc.store.rate_tat(principal.tenant.id)
        headers.update(rate_headers(limits, tat, svc.clock()))
    return json_response(job_view(job, events), status, headers)


async def get_job(request: Request) -> Response:
    principal = await tenant(request)
    svc = services(request)
    job = await svc.jobs.get_job(principal.tenant.id, request.path_params["job_id"])
    bind_job(job.id)
    return json_response(job_view(job, await svc.jobs.get_events(job.id)))


async def list_jobs(request: Request) -> Response:
    principal = await tenant(request)
    params = request.query_params
    errors: list[FieldError] = []
    status, limit, cursor = list_params(params, STATUSES, "job_", errors)
    if errors:
        raise InvalidRequest(errors)
    svc = services(request)
    jobs = await svc.store.list_jobs(
        principal.tenant.id, status=status, model=params.get("model") or None,
        limit=limit + 1, before_id=cursor,
    )
    page, more = jobs[:limit], len(jobs) > limit
    return json_response({
        "data": [job_view(job) for job in page],
        "next_cursor": page[-1].id if more and page else None,
    })


async def cancel_job(request: Request) -> Response:
    principal = await tenant(request)
    svc = services(request)
    job = await svc.jobs.cancel_job(principal.tenant.id, request.path_params["job_id"])
    bind_job(job.id)
    return json_response(job_view(job, await svc.jobs.get_events(job.id)))


routes = [
    Route("/v1/jobs", create_job, methods=["POST"]),
    Route("/v1/jobs", list_jobs, methods=["GET"]),
    Route("/v1/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/v1/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
]
