"""Prometheus metrics: every family the gateway exports, the methods that feed them, and the
scrape itself.

Rules every family here follows (so that Grafana queries and alerts stay cheap and stable):
names are ``gateway_...`` with ``_total`` for counters and ``_seconds`` / ``_usd`` for base
units; label values come from fixed sets only (tenant id, model, route template, status code,
operation, outcome, result, limit), never from a raw path or free text. Counters whose label
values are known up front are created at zero, so that rates and alerts see a series before
the first event.

One ``Metrics`` per app, with its own registry, so several apps in one process (tests) do not
collide. With several worker processes (``PROMETHEUS_MULTIPROC_DIR`` set before start),
prometheus-client writes every value to files in that directory and a scrape merges all
workers' files (``MultiProcessCollector`` on a fresh registry); gauges say how to merge.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import values as prometheus_values
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from gateway.dispatcher import Dispatcher
from gateway.jobs import Transition
from gateway.quota import OPEN, Limits, day_key, periods
from gateway.states import is_terminal
from gateway.store import Store

CONTENT_TYPE = CONTENT_TYPE_LATEST

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
UPSTREAM_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200, 36000)

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
STAGES = ("queued", "upstream", "total")
ACTIVE_STATUSES = ("queued", "submitted", "processing")
# What a WaveSpeed webhook came to (gateway.jobs.ApplyResult plus the refusals in api/webhooks).
WEBHOOK_RESULTS = (
    "applied", "unchanged", "stale", "duplicate", "unknown_job", "mismatch",
    "bad_signature", "bad_body", "secret_unknown",
)
OUTCOMES = ("completed", "failed", "cancelled")
# Error codes of failed jobs (gateway.jobs, gateway.dispatcher, gateway.reconciler).
FAILURE_REASONS = (
    "upstream_failed", "upstream_rejected", "upstream_timeout", "upstream_cancelled",
    "submit_outcome_unknown",
)
POLL_RESULTS = ("applied", "unchanged", "stale", "unknown_job", "mismatch", "error")
# Tenant callbacks (gateway.callbacks.deliverer): a 2xx, a failed attempt, a message given up
# on (its schedule ran out, or its endpoint was disabled), an endpoint disabled by a 410.
CALLBACK_RESULTS = ("delivered", "failed_attempt", "dead_lettered", "disabled")

Refresher = Callable[[], Awaitable[None]]
# The limits whose use is exported as gauges, and the quota counter period each is counted in.
_BUDGET_LIMITS = {
    "images_per_day": "day", "usd_per_day": "day", "images_per_month": "month",
    "usd_per_month": "month", "max_concurrent_jobs": "open",
}


def _version() -> str:
    try:
        return version("kontext-gateway")
    except PackageNotFoundError:
        return "unknown"


def multiprocess_enabled() -> bool:
    """True when prometheus-client was imported with PROMETHEUS_MULTIPROC_DIR set."""
    return prometheus_values.ValueClass is not prometheus_values.MutexValue


class Metrics:
    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        multiprocess_dir: str | None = None,
        models: tuple[str, ...] = (),
    ) -> None:
        if multiprocess_dir is not None and not multiprocess_enabled():
            raise RuntimeError(
                "PROMETHEUS_MULTIPROC_DIR must be set in the environment before the gateway starts"
            )
        self.registry = registry or CollectorRegistry()
        self.multiprocess_dir = multiprocess_dir
        self.models = models
        self.refreshers: list[Refresher] = []
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        # The same children, found by the values the two hottest callers have at hand.
        self._http_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._accepted_children: dict[tuple[str, str], Any] = {}
        r = self.registry

        # -- HTTP --------------------------------------------------------------------------
        self.http_requests = Counter(
            "gateway_http_requests_total", "HTTP requests answered, by route template and status.",
            ["method", "route", "status"], registry=r,
        )
        self.http_duration = Histogram(
            "gateway_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by route template and status.",
            ["method", "route", "status"], buckets=HTTP_BUCKETS, registry=r,
        )

        # -- jobs --------------------------------------------------------------------------
        self.jobs_accepted = Counter(
            "gateway_jobs_accepted_total", "Jobs accepted (stored as queued).", ["tenant", "model"],
            registry=r,
        )
        self.transitions = Counter(
            "gateway_job_transitions_total", "Job state transitions, by who caused them.",
            ["from_status", "to_status", "source"], registry=r,
        )
        self.jobs_finished = Counter(
            "gateway_jobs_finished_total", "Jobs that reached a terminal state.",
            ["tenant", "model", "outcome"], registry=r,
        )
        self.job_failures = Counter(
            "gateway_job_failures_total", "Failed jobs, by error code.", ["model", "reason"],
            registry=r,
        )
        self.job_stage = Histogram(
            "gateway_job_stage_duration_seconds",
            "Time a finished job spent in each stage: queued (accept to submit), upstream "
            "(submit to end) and total.",
            ["model", "stage", "outcome"], buckets=STAGE_BUCKETS, registry=r,
        )
        self.jobs_active = Gauge(
            "gateway_jobs_active", "Jobs not yet finished, by status (read from the store).",
            ["model", "status"], registry=r, multiprocess_mode="mostrecent",
        )

        # -- WaveSpeed ---------------------------------------------------------------------
        self.upstream_calls = Counter(
            "gateway_upstream_calls_total", "Calls to WaveSpeed, by operation and HTTP status "
            "(\"error\": no answer).", ["operation", "status"], registry=r,
        )
        self.upstream_duration = Histogram(
            "gateway_upstream_call_duration_seconds", "Duration of calls to WaveSpeed.",
            ["operation", "status"], buckets=UPSTREAM_BUCKETS, registry=r,
        )
        self.in_flight = Gauge(
            "gateway_upstream_in_flight", "Jobs this gateway holds in flight at WaveSpeed.",
            registry=r, multiprocess_mode="livesum",
        )
        self.max_in_flight = Gauge(
            "gateway_upstream_max_concurrency", "GATEWAY_UPSTREAM_MAX_CONCURRENCY (per process).",
            registry=r, multiprocess_mode="livesum",
        )
        self.queued = Gauge(
            "gateway_dispatch_queued", "Jobs waiting in the dispatcher's queue.", registry=r,
            multiprocess_mode="livesum",
        )
        self.webhooks = Counter(
            "gateway_wavespeed_webhooks_total", "WaveSpeed webhooks received, by result.",
            ["result"], registry=r,
        )
        self.polls = Counter(
            "gateway_reconciler_polls_total", "Results polled from WaveSpeed for overdue jobs.",
            ["result"], registry=r,
        )
        self.poll_backlog = Gauge(
            "gateway_reconciler_backlog", "Jobs whose webhook is overdue and whose poll is due now.",
            registry=r, multiprocess_mode="mostrecent",
        )
        self.poll_oldest = Gauge(
            "gateway_reconciler_oldest_due_seconds", "How long the longest-waiting due poll has waited.",
            registry=r, multiprocess_mode="mostrecent",
        )

        # -- tenants: callbacks, quotas, spend ---------------------------------------------
        self.callbacks = Counter(
            "gateway_callbacks_total", "Tenant callback delivery attempts, by result.", ["result"],
            registry=r,
        )
        self.callback_lag = Histogram(
            "gateway_callback_lag_seconds",
            "Time from a job's transition to the successful delivery of its tenant callback.",
            buckets=LAG_BUCKETS, registry=r,
        )
        self.callbacks_pending = Gauge(
            "gateway_callbacks_pending", "Tenant callback messages not yet delivered nor dead.",
            registry=r, multiprocess_mode="mostrecent",
        )
        self.quota_rejections = Counter(
            "gateway_quota_rejections_total", "Requests refused by a tenant limit.",
            ["tenant", "limit"], registry=r,
        )
        self.quota_used = Gauge(
            "gateway_quota_used", "Use of a tenant's limit in its current period (images or USD).",
            ["tenant", "limit"], registry=r, multiprocess_mode="mostrecent",
        )
        self.quota_limit = Gauge(
            "gateway_quota_limit", "A tenant's limit for its current period (images or USD).",
            ["tenant", "limit"], registry=r, multiprocess_mode="mostrecent",
        )
        self.images = Counter(
            "gateway_images_total", "Images charged (completed jobs).", ["tenant", "model"],
            registry=r,
        )
        self.spend = Counter(
            "gateway_spend_usd_total", "USD charged (completed jobs).", ["tenant", "model"],
            registry=r,
        )
        self.build = Gauge(
            "gateway_build_info", "The running version.", ["version"], registry=r,
            multiprocess_mode="max",
        )
        self.build.labels(_version()).set(1)
        self._zero_known_series()

    def _zero_known_series(self) -> None:
        for result in WEBHOOK_RESULTS:
            self.webhooks.labels(result)
        for result in POLL_RESULTS:
            self.polls.labels(result)
        for result in CALLBACK_RESULTS:
            self.callbacks.labels(result)
        for model in self.models:
            for status in ACTIVE_STATUSES:
                self.jobs_active.labels(model, status)
            for reason in FAILURE_REASONS:
                self.job_failures.labels(model, reason)

    # -- what the rest of the gateway reports ------------------------------------------------

    def _child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, remembered: labels() validates and locks on every call,
        and these run several times per request. Label values come from fixed sets, so the
        cache stays small."""
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def on_http(self, method: str, route: str, status: int, seconds: float) -> None:
        # Every request: one lookup for both series (a third of what two _child calls and
        # the status's text cost).
        method = method if method in METHODS else "other"
        key = (method, route, status)
        pair = self._http_children.get(key)
        if pair is None:
            code = str(status)
            pair = self._http_children[key] = (
                self._child(self.http_requests, method, route, code),
                self._child(self.http_duration, method, route, code),
            )
        pair[0].inc()
        pair[1].observe(seconds)

    def on_accepted(self, tenant: str, model: str) -> None:
        child = self._accepted_children.get((tenant, model))
        if child is None:
            child = self._accepted_children[tenant, model] = self._child(
                self.jobs_accepted, tenant, model
            )
            for outcome in OUTCOMES:  # at zero, so that a failure ratio sees the first failure
                self._child(self.jobs_finished, tenant, model, outcome)
        child.inc()

    def on_upstream_call(self, operation: str, status: str, seconds: float) -> None:
        self._child(self.upstream_calls, operation, status).inc()
        self._child(self.upstream_duration, operation, status).observe(seconds)

    def on_webhook(self, result: str) -> None:
        self._child(self.webhooks, result).inc()

    def on_poll(self, result: str) -> None:
        self._child(self.polls, result).inc()

    def on_callback(self, result: str, lag_seconds: float | None = None) -> None:
        self._child(self.callbacks, result).inc()
        if lag_seconds is not None:
            self.callback_lag.observe(max(0.0, lag_seconds))

    def on_quota_rejected(self, tenant: str, limit: str) -> None:
        self._child(self.quota_rejections, tenant, limit).inc()

    def set_quota_usage(self, tenant: str, limit: str, used: float, limit_value: float) -> None:
        self._child(self.quota_used, tenant, limit).set(used)
        self._child(self.quota_limit, tenant, limit).set(limit_value)

    def on_transition(self, moved: Transition) -> None:
        self._child(self.transitions, moved.from_status or "none", moved.to_status, moved.source).inc()
        if not is_terminal(moved.to_status):
            return
        job, outcome = moved.job, moved.to_status
        self._child(self.jobs_finished, job.tenant_id, job.model, outcome).inc()
        if outcome == "failed":
            self._child(self.job_failures, job.model, job.error_code or "unknown").inc()
        if outcome == "completed" and job.cost_micros:
            self._child(self.images, job.tenant_id, job.model).inc()
            self._child(self.spend, job.tenant_id, job.model).inc(job.cost_micros / 1_000_000)
        upstream_start = job.submitted_at or job.submit_attempted_at
        stages = {
            "queued": (upstream_start or moved.at) - job.created_at,
            "upstream": None if upstream_start is None else moved.at - upstream_start,
            "total": moved.at - job.created_at,
        }
        for stage, seconds in stages.items():
            if seconds is not None:
                self._child(self.job_stage, job.model, stage, outcome).observe(max(0.0, seconds))

    # -- the scrape ----------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Bring the gauges read from elsewhere (the store, the dispatcher) up to date."""
        for refresher in self.refreshers:
            await refresher()

    def render(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(merged)

    def process_stopped(self, pid: int) -> None:
        """Drop this process's live gauges from the shared directory (multiprocess mode)."""
        if self.multiprocess_dir is not None:
            with contextlib.suppress(OSError):
                mark_process_dead(pid, self.multiprocess_dir)  # type: ignore[no-untyped-call]

    def watch_dispatcher(self, dispatcher: Dispatcher) -> None:
        async def refresh() -> None:
            self.in_flight.set(len(dispatcher.in_flight))
            self.queued.set(dispatcher.queued_count)
            self.max_in_flight.set(dispatcher.max_concurrency)

        self.refreshers.append(refresh)

    def watch_quotas(self, store: Store, clock: Callable[[], float]) -> None:
        """Each tenant's use of its budget limits (and of ``max_concurrent_jobs``) in the
        current UTC day and month, from the quota counters: what the budget alert watches."""
        shown: set[tuple[str, str]] = set()

        async def refresh() -> None:
            now = clock()
            day, month = periods(day_key(now))
            keys = {"day": day, "month": month, "open": OPEN}
            current: set[tuple[str, str]] = set()
            for tenant in await store.list_tenants():
                limits = Limits.from_stored(tenant.limits)
                watched = {
                    name: getattr(limits, name) for name in _BUDGET_LIMITS
                    if getattr(limits, name) is not None
                }
                if tenant.disabled_at is not None or not watched:
                    continue
                counters = await store.counters(tenant.id, tuple(keys.values()))
                for name, limit in watched.items():
                    images, micros = counters[keys[_BUDGET_LIMITS[name]]]
                    used = micros / 1_000_000 if name.startswith("usd_") else images
                    self.set_quota_usage(tenant.id, name, used, float(limit))
                    current.add((tenant.id, name))
            for gone in shown - current:
                self.quota_used.remove(*gone)
                self.quota_limit.remove(*gone)
            shown.clear()
            shown.update(current)

        self.refreshers.append(refresh)

    def watch_callbacks(self, store: Store) -> None:
        async def refresh() -> None:
            self.callbacks_pending.set(await store.count_pending_webhooks())

        self.refreshers.append(refresh)

    def watch_store(self, store: Store, clock: Callable[[], float]) -> None:
        """Gauges that are true for the whole deployment, so they are read from the store
        (every worker reads the same numbers; a scrape keeps the most recent)."""

        async def refresh() -> None:
            counts = await store.active_job_counts()
            models = dict.fromkeys((*self.models, *(model for model, _ in counts)))
            for model in models:
                for status in ACTIVE_STATUSES:
                    self.jobs_active.labels(model, status).set(counts.get((model, status), 0))
            now = clock()
            due, oldest = await store.poll_backlog(now)
            self.poll_backlog.set(due)
            self.poll_oldest.set(0.0 if oldest is None else max(0.0, now - oldest))

        self.refreshers.append(refresh)
