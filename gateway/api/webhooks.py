"""Inbound: POST /webhooks/wavespeed/{job_id}, WaveSpeed's signed callback.

Verified over the raw body before anything is parsed; deduplicated by webhook-id; a forged
delivery is refused and changes nothing. 2xx only after the outcome is committed.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import jsonio
from gateway.api.common import bind_job, json_response, services
from gateway.errors import BadRequest, Conflict, NotFound, ServiceUnavailable, Unauthorized
from gateway.logs import get_logger
from gateway.upstream import Prediction, UpstreamProtocolError
from gateway.webhooks.wavespeed_signature import BadSignature, verify

log = get_logger()


async def wavespeed_webhook(request: Request) -> Response:
    svc = services(request)
    job_id = request.path_params["job_id"]
    bind_job(job_id)
    body = await request.body()
    secret = svc.wavespeed_webhook_secret
    if secret is None:
        svc.record_webhook("secret_unknown")
        raise ServiceUnavailable("webhook secret not known yet", code="webhook_secret_unknown")
    try:
        webhook_id = verify(
            secret, request.headers, body, tolerance_seconds=svc.settings.webhook_tolerance_seconds
        )
    except BadSignature as exc:
        svc.record_webhook("bad_signature")
        log.warning("webhook_bad_signature", job_id=job_id, reason=str(exc))
        raise Unauthorized(f"bad webhook signature: {exc}", code="bad_signature") from None
    try:
        prediction = Prediction.parse(jsonio.loads(body))
    except (ValueError, UpstreamProtocolError) as exc:
        svc.record_webhook("bad_body")
        raise BadRequest(f"webhook body is not a prediction: {exc}", code="bad_webhook_body") from None
    applied = await svc.jobs.apply_prediction(job_id, prediction, "webhook", webhook_id)
    svc.record_webhook(applied.result)
    log.info(
        "webhook_received", job_id=job_id, webhook_id=webhook_id, result=applied.result,
        upstream_status=prediction.status,
    )
    if applied.result == "unknown_job":
        raise NotFound(f"no job {job_id}", code="job_not_found")
    if applied.result == "mismatch":
        raise Conflict(
            "prediction id does not match the job's upstream id", code="upstream_id_mismatch"
        )
    return json_response({"result": applied.result})


routes = [Route("/webhooks/wavespeed/{job_id}", wavespeed_webhook, methods=["POST"])]
