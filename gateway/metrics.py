"""Prometheus metrics: every family is ``gateway_...``, labels come from fixed sets only
(tenant id, model, status, operation, result), in base units."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gateway.jobs import Transition
from gateway.states import is_terminal

CONTENT_TYPE = CONTENT_TYPE_LATEST
_STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.jobs_accepted = Counter(
            "gateway_jobs_accepted_total", "Jobs accepted (202).", ["tenant", "model"], registry=r
        )
        self.transitions = Counter(
            "gateway_job_transitions_total", "Job state transitions.", ["from_status", "to_status"],
            registry=r,
        )
        self.jobs_finished = Counter(
            "gateway_jobs_finished_total", "Jobs that reached a terminal state.",
            ["tenant", "model", "outcome"], registry=r,
        )
        self.job_duration = Histogram(
            "gateway_job_duration_seconds", "Time from accept to terminal state.",
            ["model", "outcome"], buckets=_STAGE_BUCKETS, registry=r,
        )
        self.upstream_calls = Counter(
            "gateway_upstream_calls_total", "Calls to WaveSpeed.", ["operation", "status"],
            registry=r,
        )
        self.upstream_duration = Histogram(
            "gateway_upstream_call_duration_seconds", "Duration of calls to WaveSpeed.",
            ["operation"], registry=r,
        )
        self.webhooks = Counter(
            "gateway_wavespeed_webhooks_total", "WaveSpeed webhooks received, by result.",
            ["result"], registry=r,
        )
        self.in_flight = Gauge(
            "gateway_upstream_in_flight", "Jobs in flight at WaveSpeed.", registry=r
        )
        self.queued = Gauge("gateway_dispatch_queued", "Jobs waiting for dispatch.", registry=r)

    def on_upstream_call(self, operation: str, status: str, seconds: float) -> None:
        self.upstream_calls.labels(operation, status).inc()
        self.upstream_duration.labels(operation).observe(seconds)

    def on_transition(self, moved: Transition) -> None:
        self.transitions.labels(moved.from_status or "none", moved.to_status).inc()
        if is_terminal(moved.to_status):
            job = moved.job
            self.jobs_finished.labels(job.tenant_id, job.model, moved.to_status).inc()
            self.job_duration.labels(job.model, moved.to_status).observe(
                max(0.0, moved.at - job.created_at)
            )

    def render(self) -> bytes:
        return generate_latest(self.registry)
