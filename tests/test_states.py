"""The job state graph, through the one ``transition`` function and the JobService, on a real
SQLite file: every allowed edge moves the job and records an event, every other one is
refused and changes nothing, and a terminal job never changes again."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.catalog import Catalog
from gateway.errors import Conflict
from gateway.ids import new_id
from gateway.jobs import JobService, Transition, transition
from gateway.states import EDGES, STATUSES, TERMINAL, can_transition, is_terminal
from gateway.store import Job
from gateway.store.sqlite import SQLiteStore
from gateway.tenancy import create_tenant
from gateway.upstream import Prediction, WaveSpeedClient

# The edges exactly as design.md lists them.
DESIGN_EDGES = {
    ("queued", "submitted"), ("queued", "failed"), ("queued", "processing"),
    ("queued", "completed"), ("queued", "cancelled"),
    ("submitted", "processing"), ("submitted", "completed"), ("submitted", "failed"),
    ("submitted", "cancelled"),
    ("processing", "completed"), ("processing", "failed"), ("processing", "cancelled"),
}
ALL_PAIRS = list(itertools.product(STATUSES, STATUSES))
ALLOWED = [pair for pair in ALL_PAIRS if pair in DESIGN_EDGES]
REFUSED = [pair for pair in ALL_PAIRS if pair not in DESIGN_EDGES]
PRICE_MICROS = 80_000


class Env:
    def __init__(self, store: SQLiteStore, service: JobService, tenant_id: str) -> None:
        self.store = store
        self.service = service
        self.tenant_id = tenant_id

    async def job(self, status: str, upstream_id: str | None = None, **extra: Any) -> Job:
        now = time.time()
        job = Job(
            id=new_id("job"), tenant_id=self.tenant_id, model="flux-kontext-max",
            task="text-to-image", wavespeed_id="wavespeed-ai/flux-kontext-max/text-to-image",
            status=status, inputs={"prompt": "x"}, price_micros=PRICE_MICROS, created_at=now,
            updated_at=now, upstream_id=upstream_id, **extra,
        )

        def script(tx: Any) -> None:
            tx.insert_job(job)
            tx.insert_event(job.id, None, "queued", "api", now, None)

        await self.store.write(script)
        return job

    async def move(self, job: Job, to: str, source: str = "admin") -> Transition | None:
        def script(tx: Any) -> Transition | None:
            current = tx.get_job(job.id)
            return transition(tx, current, to, source, time.time(), detail={"why": "test"})

        result: Transition | None = await self.store.write(script)
        return result


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    store = SQLiteStore(str(tmp_path / "states.db"))
    await store.open()
    await store.migrate()
    tenant = await store.write(create_tenant("states", {}, time.time()))
    async with httpx.AsyncClient() as http:
        upstream = WaveSpeedClient(http, "http://127.0.0.1:9", "unused")
        service = JobService(store=store, catalog=Catalog(), upstream=upstream)
        try:
            yield Env(store, service, tenant.id)
        finally:
            await store.close()


def test_the_graph_is_the_designs() -> None:
    edges = {(a, b) for a, targets in EDGES.items() for b in targets}
    assert edges == DESIGN_EDGES
    assert set(EDGES) == set(STATUSES)
    assert set(TERMINAL) == {"completed", "failed", "cancelled"}
    for a, b in ALL_PAIRS:
        assert can_transition(a, b) == ((a, b) in DESIGN_EDGES)
    assert not can_transition("unknown", "queued")
    assert not can_transition("queued", "unknown")
    assert all(is_terminal(s) == (s in TERMINAL) for s in STATUSES)


@pytest.mark.parametrize(("start", "to"), ALLOWED, ids=[f"{a}->{b}" for a, b in ALLOWED])
async def test_allowed_edge_moves_the_job_and_records_the_event(env: Env, start: str, to: str) -> None:
    job = await env.job(start)
    moved = await env.move(job, to)
    assert moved is not None
    assert (moved.from_status, moved.to_status, moved.source) == (start, to, "admin")
    stored = await env.store.get_job(job.id)
    assert stored is not None and stored.status == to
    assert moved.job.status == to
    events = await env.store.get_events(job.id)
    assert [(e.seq, e.from_status, e.to_status, e.source) for e in events] == [
        (1, None, "queued", "api"), (2, start, to, "admin"),
    ]
    assert events[-1].detail == {"why": "test"}
    if to in TERMINAL:
        assert stored.finished_at is not None
        assert stored.cost_micros == (PRICE_MICROS if to == "completed" else 0)
    else:
        assert stored.finished_at is None and stored.cost_micros is None


@pytest.mark.parametrize(("start", "to"), REFUSED, ids=[f"{a}->{b}" for a, b in REFUSED])
async def test_refused_edge_changes_nothing(env: Env, start: str, to: str) -> None:
    job = await env.job(start)
    before = await env.store.get_job(job.id)
    assert await env.move(job, to) is None
    assert await env.store.get_job(job.id) == before
    assert len(await env.store.get_events(job.id)) == 1


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
async def test_terminal_never_changes_through_any_service_path(env: Env, terminal: str) -> None:
    job = await env.job(terminal, upstream_id=f"up-{terminal}")
    before = await env.store.get_job(job.id)

    with pytest.raises(Conflict):
        await env.service.cancel_job(env.tenant_id, job.id)
    assert await env.service.fail(job.id, "x", "y", "admin") is None
    for status in ("created", "processing", "completed", "failed", "cancelled", "timeout"):
        applied = await env.service.apply_prediction(
            job.id, Prediction(id=f"up-{terminal}", status=status, outputs=["https://x/y.png"]),
            "poll",
        )
        assert applied.result in ("stale", "unchanged"), (status, applied.result)
        assert applied.transition is None
    after = await env.store.get_job(job.id)
    assert after is not None and before is not None
    assert (after.status, after.outputs, after.error_code, after.cost_micros) == (
        before.status, before.outputs, before.error_code, before.cost_micros,
    )
    assert len(await env.store.get_events(job.id)) == 1


@pytest.mark.parametrize(
    ("upstream_status", "expected"),
    [
        ("created", "submitted"), ("pending", "submitted"), ("queued", "submitted"),
        ("something-new", "submitted"), ("processing", "processing"), ("running", "processing"),
        ("completed", "completed"), ("succeeded", "completed"), ("failed", "failed"),
        ("timeout", "failed"), ("cancelled", "failed"), ("canceled", "failed"), ("error", "failed"),
    ],
)
async def test_wavespeed_statuses_map_onto_the_graph(
    env: Env, upstream_status: str, expected: str
) -> None:
    job = await env.job("submitted", upstream_id="up-1")
    applied = await env.service.apply_prediction(
        job.id, Prediction(id="up-1", status=upstream_status, outputs=["https://x/0.png"],
                           error="boom" if expected == "failed" else ""),
        "webhook", webhook_id=f"msg-{upstream_status}",
    )
    stored = await env.store.get_job(job.id)
    assert stored is not None and stored.status == expected
    assert applied.result == ("unchanged" if expected == "submitted" else "applied")
    if expected == "completed":
        assert stored.outputs == ["https://x/0.png"]
    if expected == "failed":
        assert stored.error_message == "boom"
        assert stored.error_code == {"timeout": "upstream_timeout", "cancelled": "upstream_cancelled",
                                     "canceled": "upstream_cancelled"}.get(
            upstream_status, "upstream_failed")


async def test_processing_does_not_go_back_to_submitted(env: Env) -> None:
    job = await env.job("processing", upstream_id="up-2")
    applied = await env.service.apply_prediction(job.id, Prediction(id="up-2", status="created"), "poll")
    assert applied.result == "unchanged"
    stored = await env.store.get_job(job.id)
    assert stored is not None and stored.status == "processing"


async def test_a_queued_job_adopts_the_first_prediction_only(env: Env) -> None:
    job = await env.job("queued", submit_attempted_at=time.time())
    first = await env.service.apply_prediction(job.id, Prediction(id="up-a", status="processing"), "webhook")
    assert first.result == "applied"
    stored = await env.store.get_job(job.id)
    assert stored is not None and stored.upstream_id == "up-a" and stored.status == "processing"
    assert stored.next_poll_at is not None
    other = await env.service.apply_prediction(job.id, Prediction(id="up-b", status="completed"), "webhook")
    assert other.result == "mismatch"
    stored = await env.store.get_job(job.id)
    assert stored is not None and stored.status == "processing" and stored.upstream_id == "up-a"


async def test_concurrent_transitions_make_exactly_one_terminal_event(env: Env) -> None:
    """Cancel, a webhook and a poll race for one job: one wins, the others change nothing."""
    job = await env.job("submitted", upstream_id="up-3")
    results = await asyncio.gather(
        env.service.cancel_job(env.tenant_id, job.id),
        env.service.apply_prediction(job.id, Prediction(id="up-3", status="completed"), "webhook",
                                     webhook_id="msg-race"),
        env.service.apply_prediction(job.id, Prediction(id="up-3", status="failed"), "poll"),
        env.service.fail(job.id, "submit_outcome_unknown", "late", "dispatcher"),
        return_exceptions=True,
    )
    assert all(not isinstance(r, BaseException) or isinstance(r, Conflict) for r in results)
    events = await env.store.get_events(job.id)
    terminal = [e for e in events if e.to_status in TERMINAL]
    assert len(terminal) == 1
    stored = await env.store.get_job(job.id)
    assert stored is not None and stored.status == terminal[0].to_status
