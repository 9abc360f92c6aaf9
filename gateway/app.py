"""The app factory: ``create_app(settings)`` wires the store, the WaveSpeed client, the job
service and the background workers, all owned by the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway import collector, quota
from gateway.admin import AdminService
from gateway.api import admin as admin_api
from gateway.api import admin_webhooks as admin_webhooks_api
from gateway.api import callbacks as callbacks_api
from gateway.api import compat as compat_api
from gateway.api import jobs as jobs_api
from gateway.api import ops as ops_api
from gateway.api import usage as usage_api
from gateway.api import webhooks as webhooks_api
from gateway.callbacks import Callbacks, build_callbacks
from gateway.catalog import MODELS, Catalog
from gateway.dispatcher import Dispatcher
from gateway.errors import GatewayError, UpstreamError, error_body, error_body_on
from gateway.jobs import JobService
from gateway.logs import bound, configure_logging, get_logger, log_accepted, log_transition
from gateway.metrics import CONTENT_TYPE, Metrics
from gateway.middleware import BodyLimit, RequestContext
from gateway.reconciler import Reconciler
from gateway.settings import Settings, SettingsError
from gateway.store import ApiKey, Tx
from gateway.store.sqlite import SQLiteStore
from gateway.upstream import WaveSpeedClient, make_http_client

log = get_logger()

KEY_TOUCH_SECONDS = 60.0
# How often a dispatcher looks in the store for what other workers did (Dispatcher.share_work_every):
# its slots freed by a job ending there, jobs accepted there that none has sent. A slot stays
# idle up to this long; a look is a point read of at most its concurrency, and when it has slots
# free and nothing queued, one read of at most that many queued jobs.
SHARE_SECONDS = 0.25


@dataclass
class Services:
    settings: Settings
    store: SQLiteStore
    catalog: Catalog
    upstream: WaveSpeedClient
    jobs: JobService
    dispatcher: Dispatcher
    reconciler: Reconciler
    metrics: Metrics
    admin: AdminService
    callbacks: Callbacks
    clock: Callable[[], float]
    wavespeed_webhook_secret: str | None = None
    shutting_down: bool = False
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    # key id -> when this process last started recording its use (the key as read may be
    # older: the store keeps key lookups while nothing that decides validity changes). Set
    # before the write, so a write in flight also keeps the next requests from starting one.
    touched: dict[str, float] = field(default_factory=dict)

    def touch_key(self, key: ApiKey, now: float) -> None:
        """Record a key's use, at most once a minute, without holding up the request."""
        last = max(key.last_used_at or 0.0, self.touched.get(key.id, 0.0))
        if now - last < KEY_TOUCH_SECONDS:
            return
        if self.shutting_down:
            return
        self.touched[key.id] = now
        key_id = key.id

        def script(tx: Tx) -> None:
            tx.update_api_key(key_id, last_used_at=now)

        async def touch() -> None:
            try:
                await self.store.write(script)
            except Exception:
                log.warning("key_touch_failed", key_id=key_id)

        task = asyncio.create_task(touch())
        self.tasks.append(task)
        task.add_done_callback(self.tasks.remove)

    def record_webhook(self, result: str) -> None:
        self.metrics.on_webhook(result)


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    if exc.status >= 500:
        log.warning("request_failed", code=exc.code, error=exc.message)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(
        error_body(code, str(exc.detail)), status_code=exc.status_code,
        headers=exc.headers,
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled_error", path=request.url.path)
    # Runs outside RequestContext, which leaves the request's log context bound for this line.
    request_id = bound().get("request_id")
    return JSONResponse(
        error_body_on(request.url.path, 500, "internal_error", "internal error"), status_code=500,
        headers={"X-Request-ID": request_id} if isinstance(request_id, str) else None,
    )


async def metrics_endpoint(request: Request) -> Response:
    svc: Services = request.app.state.services
    await svc.metrics.refresh()
    return Response(svc.metrics.render(), media_type=CONTENT_TYPE)


def build_services(
    settings: Settings,
    store: SQLiteStore,
    http: httpx.AsyncClient,
    clock: Callable[[], float],
    metrics: Metrics,
) -> Services:
    if settings.wavespeed_api_key is None:
        raise SettingsError(
            "invalid setting GATEWAY_WAVESPEED_API_KEY: required by create_app "
            "(the CLI starts the built-in simulator when it is absent)"
        )
    catalog = Catalog(settings.prices)
    upstream = WaveSpeedClient(
        http, settings.wavespeed_base_url, settings.wavespeed_api_key,
        on_call=metrics.on_upstream_call,
    )
    jobs = JobService(
        store=store, catalog=catalog, upstream=upstream, clock=clock,
        idempotency_ttl=settings.idempotency_ttl_seconds,
        webhook_grace_seconds=settings.webhook_grace_seconds,
    )
    jobs.accept_hooks.append(quota.reserve_for_accept)
    jobs.transition_hooks.append(quota.settle)
    jobs.commit_listeners.extend([metrics.on_transition, log_transition])
    jobs.quota_listeners.append(metrics.on_quota_rejected)
    jobs.accept_listeners.extend([lambda job: metrics.on_accepted(job.tenant_id, job.model), log_accepted])
    dispatcher = Dispatcher(
        jobs, upstream, public_url=settings.public_url,
        max_concurrency=settings.upstream_max_concurrency,
        webhook_grace_seconds=settings.webhook_grace_seconds,
        retry_seconds=settings.submit_retry_seconds, clock=clock,
    )
    reconciler = Reconciler(
        jobs, upstream, poll_interval_seconds=settings.poll_interval_seconds,
        submit_deadline_seconds=settings.submit_deadline_seconds,
        tick_seconds=min(1.0, settings.poll_interval_seconds), clock=clock,
        on_poll=metrics.on_poll,
    )
    metrics.watch_dispatcher(dispatcher)
    metrics.watch_store(store, clock)
    metrics.watch_quotas(store, clock)
    callbacks = build_callbacks(settings, store, jobs, on_result=metrics.on_callback, clock=clock)
    metrics.watch_callbacks(store)
    return Services(
        settings=settings, store=store, catalog=catalog, upstream=upstream, jobs=jobs,
        dispatcher=dispatcher, reconciler=reconciler, metrics=metrics, clock=clock,
        admin=AdminService(store, clock), callbacks=callbacks,
        wavespeed_webhook_secret=settings.wavespeed_webhook_secret,
    )


async def _fetch_webhook_secret(svc: Services) -> None:
    """Ask WaveSpeed for the webhook secret until it answers (webhooks are refused with 503
    until then, and the reconciler polls meanwhile)."""
    delay = 1.0
    while svc.wavespeed_webhook_secret is None:
        try:
            svc.wavespeed_webhook_secret = await svc.upstream.webhook_secret()
        except UpstreamError as exc:
            log.error("webhook_secret_unavailable", error=exc.message, retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], float] = time.time,
    transport: httpx.AsyncBaseTransport | None = None,
    configure_logs: bool = True,
) -> Starlette:
    """The gateway as an ASGI app. ``transport`` replaces the outbound HTTP transport (tests)."""
    metrics = Metrics(multiprocess_dir=settings.prometheus_multiproc_dir, models=MODELS)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if configure_logs:
            configure_logging(settings.log_format, settings.log_level)
        store = SQLiteStore(settings.database_path)
        await store.open()
        http = (
            httpx.AsyncClient(transport=transport, timeout=settings.upstream_timeout_seconds)
            if transport is not None
            else make_http_client(settings.upstream_transport, settings.upstream_timeout_seconds)
        )
        try:
            applied = await store.migrate()
            if applied:
                log.info("migrations_applied", versions=applied)
            # A second start of the same app (tests do it) must not keep the last start's store.
            metrics.refreshers.clear()
            svc = build_services(settings, store, http, clock, metrics)
            app.state.services = svc
            await svc.dispatcher.recover()
            if svc.wavespeed_webhook_secret is None:
                svc.tasks.append(asyncio.create_task(_fetch_webhook_secret(svc)))
            svc.tasks.append(asyncio.create_task(svc.dispatcher.run(), name="dispatcher"))
            svc.tasks.append(asyncio.create_task(
                svc.dispatcher.share_work_every(SHARE_SECONDS), name="dispatcher-share"
            ))
            svc.tasks.append(asyncio.create_task(svc.reconciler.run(), name="reconciler"))
            svc.tasks.append(asyncio.create_task(svc.callbacks.deliverer.run(), name="deliverer"))
            collector_defaults = collector.tune()
            log.info("gateway_started", upstream=settings.wavespeed_base_url)
            yield
            collector.restore(collector_defaults)
            svc.shutting_down = True
            await svc.dispatcher.stop(settings.shutdown_grace_seconds)
            await svc.callbacks.deliverer.stop(settings.shutdown_grace_seconds)
            running = list(svc.tasks)
            for task in running:
                task.cancel()
            for task in running:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            metrics.process_stopped(os.getpid())
            log.info("gateway_stopped")
        finally:
            await http.aclose()
            await store.close()

    routes = [
        *jobs_api.routes,
        *ops_api.routes,
        *webhooks_api.routes,
        *compat_api.routes,
        *admin_api.routes,
        *admin_webhooks_api.routes,
        *callbacks_api.routes,
        *usage_api.routes,
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(RequestContext, observe=metrics.on_http),
            Middleware(BodyLimit, max_bytes=settings.max_body_bytes),
        ],
        exception_handlers={
            GatewayError: _gateway_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
    )
