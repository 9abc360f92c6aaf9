"""What every handler shares: the app's services, reading JSON, the tenant, and job views."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway import jsonio
from gateway.errors import BadRequest, FieldError
from gateway.logs import bind
from gateway.money import usd_text
from gateway.store import Job, JobEvent
from gateway.tenancy import Principal, authenticate
from gateway.times import iso_millis

if TYPE_CHECKING:
    from gateway.app import Services


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


async def read_json(request: Request) -> Any:
    body = await request.body()
    if not body:
        raise BadRequest("request body is empty; send a JSON object", code="invalid_json")
    try:
        return jsonio.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None


async def read_optional_json(request: Request) -> Any:
    """The JSON body, or an empty object when there is none (optional bodies)."""
    if not await request.body():
        return {}
    return await read_json(request)


async def tenant(request: Request) -> Principal:
    svc = services(request)
    now = svc.clock()
    principal = await authenticate(svc.store, request.headers.get("authorization"), now)
    bind(tenant_id=principal.tenant.id)
    svc.touch_key(principal.key, now)
    return principal


def bind_job(job_id: str) -> None:
    """The job this request is about: on every log line from here on."""
    bind(job_id=job_id)


MAX_PAGE = 100


def list_params(
    params: QueryParams, statuses: Sequence[str], cursor_prefix: str, errors: list[FieldError]
) -> tuple[str | None, int, str | None]:
    """``status``, ``limit`` and ``cursor`` of a listing: one status of ``statuses``, 1 to
    MAX_PAGE items (20 by default), and a cursor this listing handed out (an id). Problems are
    added to ``errors``, so the caller can report them with its own fields."""
    status = params.get("status") or None
    if status is not None and status not in statuses:
        errors.append(FieldError("status", f"must be one of {', '.join(statuses)}"))
    limit = 20
    if "limit" in params:
        try:
            limit = int(params["limit"])
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_PAGE:
            errors.append(FieldError("limit", f"must be an integer from 1 to {MAX_PAGE}"))
    cursor = params.get("cursor") or None
    if cursor is not None and not cursor.startswith(cursor_prefix):
        errors.append(FieldError("cursor", "is not a cursor returned by this endpoint"))
    return status, limit, cursor


def iso(ts: float | None) -> str | None:
    """UTC, to the millisecond (truncated), with a Z: 2026-11-21T13:36:56.470Z."""
    return None if ts is None else iso_millis(ts)


def usd(micros: int | None) -> str | None:
    return None if micros is None else usd_text(micros)


def _span(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else round(end - start, 3)


def job_view(job: Job, events: list[JobEvent] | None = None) -> dict[str, Any]:
    error = (
        {"code": job.error_code, "message": job.error_message}
        if job.error_code is not None else None
    )
    upstream_start = job.submitted_at or job.submit_attempted_at
    view: dict[str, Any] = {
        "id": job.id,
        "status": job.status,
        "model": job.model,
        "task": job.task,
        "wavespeed_model_id": job.wavespeed_id,
        "upstream_id": job.upstream_id,
        "inputs": job.inputs,
        "outputs": job.outputs,
        "has_nsfw_contents": job.has_nsfw_contents,
        "error": error,
        "price_usd": usd(job.price_micros),
        "cost_usd": usd(job.cost_micros),
        "metadata": job.metadata,
        "callback_url": job.callback_url,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "timings": {
            "submitted_at": iso(job.submitted_at),
            "finished_at": iso(job.finished_at),
            "queued_seconds": _span(job.created_at, upstream_start),
            "upstream_seconds": _span(upstream_start, job.finished_at),
            "total_seconds": _span(job.created_at, job.finished_at),
            "inference_ms": (job.upstream_timings or {}).get("inference"),
        },
    }
    if events is not None:
        view["events"] = [event_view(e) for e in events]
    return view


def event_view(event: JobEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "from": event.from_status,
        "to": event.to_status,
        "source": event.source,
        "at": iso(event.at),
        "detail": event.detail,
    }


class CompactJSONResponse(JSONResponse):
    """Starlette's JSONResponse, rendered compact by gateway.jsonio."""

    def render(self, content: Any) -> bytes:
        return jsonio.dumps_bytes(content)


def json_response(
    content: Any, status: int = 200, headers: dict[str, str] | None = None
) -> JSONResponse:
    return CompactJSONResponse(content, status_code=status, headers=headers)
