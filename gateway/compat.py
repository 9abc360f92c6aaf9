"""WaveSpeed's view of a gateway job: the prediction shape, the status mapping, the
``{code, message, data}`` envelope, and the one place gateway errors become WaveSpeed's error
shape on the compatible surface (``gateway.api.compat``).

Statuses: queued and submitted -> ``created``, processing -> ``processing``, the terminal ones
to themselves. A prediction's id is the gateway's job id, so an SDK never sees WaveSpeed's.

A job accepted here has ``surface`` "wavespeed"; its ``?webhook=`` URL is its ``callback_url``,
which the tenant-callback outbox and deliverer (gateway.callbacks) then send as WaveSpeed
does: the bare prediction (``webhook_body``), signed v3 with the tenant's default secret
(gateway.webhooks.wavespeed_signature).
"""

from __future__ import annotations

import json
from typing import Any

from gateway.api.common import iso
from gateway.errors import FieldError, GatewayError, InvalidRequest, QuotaExceeded, wavespeed_error_body
from gateway.normalize import json_object
from gateway.store import Job
from gateway.upstream import UpstreamRateLimited, UpstreamRejected

STATUS: dict[str, str] = {
    "queued": "created",
    "submitted": "created",
    "processing": "processing",
    "completed": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
}
# WaveSpeed's data.code when enable_sync_mode's wait ran out before the task ended.
SYNC_TIMEOUT_CODE = 5004


def result_url(base_url: str, job_id: str) -> str:
    return f"{base_url.rstrip('/')}/api/v3/predictions/{job_id}/result"


def prediction(job: Job, base_url: str) -> dict[str, Any]:
    """The ``data`` of WaveSpeed's submit and result answers, for a gateway job."""
    inference = (job.upstream_timings or {}).get("inference")
    error = job.error_message or ("cancelled by the tenant" if job.status == "cancelled" else "")
    return {
        "id": job.id,
        "model": job.wavespeed_id,
        "outputs": list(job.outputs) if job.status == "completed" else [],
        "urls": {"get": result_url(base_url, job.id)},
        "has_nsfw_contents": list(job.has_nsfw_contents) if job.status == "completed" else [],
        "status": STATUS.get(job.status, "processing"),
        "created_at": iso(job.created_at),
        "error": error,
        "timings": {"inference": inference} if inference is not None else {},
    }


def webhook_payload(job: Job, base_url: str) -> dict[str, Any]:
    """The bare prediction WaveSpeed POSTs to a ``?webhook=`` URL: no envelope, with the input."""
    data = prediction(job, base_url)
    return {"id": data.pop("id"), "model": data.pop("model"), "input": job.inputs, **data}


def webhook_body(job: Job, base_url: str) -> str:
    """The exact bytes of a ``?webhook=`` delivery (compact JSON, like WaveSpeed's)."""
    return json.dumps(webhook_payload(job, base_url), separators=(",", ":"))


def sync_timed_out(job: Job, base_url: str, waited: float) -> dict[str, Any]:
    """What enable_sync_mode answers when its wait runs out: the task goes on."""
    url = result_url(base_url, job.id)
    return {
        **prediction(job, base_url),
        "status": "processing",
        "code": SYNC_TIMEOUT_CODE,
        "error": f"Sync mode timed out after {waited:g} seconds; query {url}",
    }


def upload_ticket(body: Any) -> dict[str, Any]:
    """Check a ``POST /api/v3/media/uploads`` body (``{filename, size, content_type}``) before
    it is passed through whole; wrong fields are an InvalidRequest (WaveSpeed's 400)."""
    ticket = json_object(body)
    errors: list[FieldError] = []
    filename, size, content_type = ticket.get("filename"), ticket.get("size"), ticket.get("content_type")
    if not isinstance(filename, str) or not filename:
        errors.append(FieldError("filename", "is required"))
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        errors.append(FieldError("size", "must be a non-negative integer"))
    if content_type is not None and not isinstance(content_type, str):
        errors.append(FieldError("content_type", "must be a string"))
    if errors:
        raise InvalidRequest(errors)
    return ticket


def envelope(data: Any) -> dict[str, Any]:
    return {"code": 200, "message": "success", "data": data}


def error_body(exc: GatewayError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(HTTP status, ``{"code", "message"}``, headers) for a gateway error, WaveSpeed-style.

    Invalid input is WaveSpeed's 400 with every field named in the message; a refusal by
    WaveSpeed itself keeps WaveSpeed's status; anything else keeps the gateway's status and
    headers (a quota's 429 keeps its Retry-After).
    """
    status, headers = exc.status, dict(exc.headers)
    message = exc.message
    if isinstance(exc, InvalidRequest):
        status = 400
        message = "; ".join(f"{e.field}: {e.message}" for e in exc.errors)
    elif isinstance(exc, QuotaExceeded):
        message = f"quota exceeded ({exc.limit}): {exc.message}"
    elif isinstance(exc, UpstreamRejected):
        status = exc.upstream_status
    elif isinstance(exc, UpstreamRateLimited):
        status = 429
        headers.setdefault("Retry-After", str(max(1, round(exc.retry_after))))
    return status, wavespeed_error_body(status, message), headers
