"""Tenant callbacks: every job outcome reaches the tenant, signed, retried, never lost.

    transition ──(same transaction)──► outbox message ──► deliverer ──► tenant's URL
                    gateway.callbacks.outbox              .deliverer     (Standard Webhooks
                                                                          signature, .signing)

URLs are checked by .urls when a tenant hands them over and before each attempt; .retry says
when a failed attempt is tried again; .service is what the API and CLI do with endpoints and
messages. ``build_callbacks`` wires them onto a JobService.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.callbacks.deliverer import Deliverer, ResultListener
from gateway.callbacks.outbox import Outbox
from gateway.callbacks.retry import RetryPolicy
from gateway.callbacks.service import CallbackService
from gateway.callbacks.urls import CallbackUrlPolicy, Resolver, system_resolver
from gateway.jobs import JobService
from gateway.normalize import JobRequest
from gateway.settings import Settings
from gateway.store import Store
from gateway.tenancy import Principal

__all__ = ["CallbackService", "Callbacks", "Deliverer", "build_callbacks"]


@dataclass
class Callbacks:
    service: CallbackService
    deliverer: Deliverer
    policy: CallbackUrlPolicy


def build_callbacks(
    settings: Settings,
    store: Store,
    jobs: JobService,
    *,
    on_result: ResultListener = lambda result, lag: None,
    clock: Callable[[], float] = time.time,
    resolver: Resolver = system_resolver,
) -> Callbacks:
    """The outbox hook, the callback URL check and the deliverer, registered on ``jobs``."""
    policy = CallbackUrlPolicy(
        settings.callback_allowed_networks, resolver=resolver,
        resolve_timeout=min(5.0, settings.callback_timeout_seconds),
    )
    retry = RetryPolicy(settings.callback_retry_schedule, settings.callback_retry_jitter)
    deliverer = Deliverer(
        store, policy, retry, timeout=settings.callback_timeout_seconds,
        max_concurrency=settings.callback_max_concurrency,
        per_endpoint=settings.callback_max_concurrency_per_endpoint,
        poll_seconds=settings.callback_poll_seconds, clock=clock, on_result=on_result,
        retention_seconds=settings.callback_retention_days * 24 * 3600,
    )
    service = CallbackService(store, policy, wake=deliverer.wake, clock=clock)

    async def check_callback_url(principal: Principal, request: JobRequest) -> None:
        if request.callback_url is not None:
            field = "webhook" if request.surface == "wavespeed" else "callback_url"
            await service.check_url(request.callback_url, field)

    jobs.accept_checks.append(check_callback_url)
    jobs.transition_hooks.append(Outbox(retry.first_delay, clock, settings.public_url))
    jobs.commit_listeners.append(deliverer.on_commit)
    return Callbacks(service=service, deliverer=deliverer, policy=policy)
