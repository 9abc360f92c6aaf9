"""The transactional outbox: a ``TransitionHook`` that writes one callback message per
destination in the same transaction as the job's transition, so no crash can separate a job's
outcome from the notice of it.

The body is built here, once: ``{type, timestamp, data}`` with ``data`` the job as
``GET /v1/jobs/{id}`` shows it at this transition. Every retry sends these same bytes.

Events: ``job.processing`` for the move to processing; ``job.completed``, ``job.failed`` and
``job.cancelled`` for the terminal moves. A job's own ``callback_url`` gets only the terminal
event; each enabled endpoint of the tenant gets the events its filter names. A job accepted on
the WaveSpeed-compatible surface is called back at its ``?webhook=`` URL the way WaveSpeed
does it: the bare prediction body (gateway.compat), signed v3 by the deliverer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import urlsplit

from gateway import compat
from gateway.api.common import iso, job_view
from gateway.ids import new_id
from gateway.jobs import Transition
from gateway.store import Tx
from gateway.store.callbacks import WebhookMessage

_EVENTS = {
    "processing": "job.processing",
    "completed": "job.completed",
    "failed": "job.failed",
    "cancelled": "job.cancelled",
}
TERMINAL_EVENTS = frozenset({"job.completed", "job.failed", "job.cancelled"})


def event_type(status: str) -> str | None:
    """The callback event a transition to ``status`` raises, if any."""
    return _EVENTS.get(status)


def url_target(tenant_id: str, url: str) -> str:
    """What a one-off callback URL's concurrency is counted by: the tenant and the origin."""
    parts = urlsplit(url)
    return f"{tenant_id} {parts.scheme}://{parts.netloc.rpartition('@')[2].lower()}"


def encode_payload(kind: str, at: float, data: dict[str, object]) -> str:
    return json.dumps({"type": kind, "timestamp": iso(at), "data": data}, separators=(",", ":"))


class Outbox:
    """Registered on ``JobService.transition_hooks``; runs inside the transition's transaction."""

    def __init__(self, first_delay: float, clock: Callable[[], float], public_url: str = "") -> None:
        self._first_delay = first_delay
        self._clock = clock
        self._public_url = public_url  # the base of a WaveSpeed-style body's urls.get

    def __call__(self, tx: Tx, moved: Transition) -> None:
        kind = event_type(moved.to_status)
        if kind is None:
            return
        job = moved.job
        destinations: list[tuple[str | None, str, str]] = []
        if job.callback_url is not None and kind in TERMINAL_EVENTS:
            destinations.append((None, job.callback_url, url_target(job.tenant_id, job.callback_url)))
        for endpoint in tx.endpoints_for_event(job.tenant_id, kind):
            destinations.append((endpoint.id, endpoint.url, endpoint.id))
        if not destinations:
            return
        events = tx.job_events(job.id)
        payload = encode_payload(kind, moved.at, job_view(job, events))
        now = self._clock()
        for endpoint_id, url, target in destinations:
            body, style = payload, "standard"
            if endpoint_id is None and job.surface == "wavespeed":
                body, style = compat.webhook_body(job, self._public_url), "wavespeed"
            tx.insert_webhook_message(WebhookMessage(
                id=new_id("msg"), tenant_id=job.tenant_id, endpoint_id=endpoint_id, url=url,
                target=target, job_id=job.id, event_type=kind, payload=body,
                event_at=moved.at, created_at=now, next_attempt_at=moved.at + self._first_delay,
                style=style,
            ))
