"""The dispatcher as tenants see it: never more than GATEWAY_UPSTREAM_MAX_CONCURRENCY jobs at
WaveSpeed, each freed slot taken by the next tenant in turn (one tenant's burst cannot starve
another), and a cancelled job that was waiting never sent."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from gateway.store.sqlite import SQLiteStore
from tests.conftest import Gateway, GatewayFactory, Sim, TenantHandle, in_process_gateway
from tests.helpers import submits_for, wait_job, wait_until

PRO: dict[str, Any] = {"model": "flux-kontext-pro", "prompt": "a fox"}


def sim_of(gateway: Gateway) -> Sim:
    sim: Sim = gateway.simulator  # type: ignore[attr-defined]
    return sim


def submitted_ids(sim: Sim) -> list[str]:
    return [r.query["webhook"].rsplit("/", 1)[1] for r in sim.submits()]


async def post(tenant: TenantHandle, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        response = await tenant.client.post("/v1/jobs", json=PRO)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    return ids


async def test_the_concurrency_limit_holds_under_a_burst(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path, upstream_max_concurrency=3) as gateway:
        sim = sim_of(gateway)
        sim.config.faults.paused = True
        tenant = await gateway.new_tenant()
        await asyncio.gather(*(post(tenant, 1) for _ in range(10)))
        await wait_until(lambda: len(sim.submits()) == 3, 5, what="three submits")
        await asyncio.sleep(0.3)
        assert len(sim.submits()) == 3
        listed = (await tenant.client.get("/v1/jobs?limit=100")).json()["data"]
        assert sorted(job["status"] for job in listed) == ["queued"] * 7 + ["submitted"] * 3
        # WaveSpeed's answers were committed without waiting for an fsync (README, "How a job
        # travels"): the posts were answered before, so the answers made batches of their own.
        store = gateway.services.store
        assert isinstance(store, SQLiteStore) and store.relaxed_batches >= 1

        # Each slot freed (here by cancelling) lets exactly one more job go.
        in_flight = submitted_ids(sim)
        await tenant.client.post(f"/v1/jobs/{in_flight[0]}/cancel")
        await wait_until(lambda: len(sim.submits()) == 4, 5, what="a fourth submit")
        await asyncio.sleep(0.2)
        assert len(sim.submits()) == 4


async def test_a_burst_from_one_tenant_does_not_starve_the_others(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path, upstream_max_concurrency=1) as gateway:
        sim = sim_of(gateway)
        sim.config.faults.paused = True
        a, b, c = [await gateway.new_tenant(f"fair-{n}") for n in "abc"]
        owner: dict[str, TenantHandle] = {}
        first = await post(a, 1)
        await wait_until(lambda: len(sim.submits()) == 1, 5, what="the first submit")
        for tenant, count in ((a, 5), (b, 2), (c, 1)):
            for job_id in await post(tenant, count):
                owner[job_id] = tenant
        owner[first[0]] = a

        order: list[str] = []
        for step in range(9):
            current = submitted_ids(sim)[-1]
            order.append(owner[current].name[-1])
            response = await owner[current].client.post(f"/v1/jobs/{current}/cancel")
            assert response.status_code == 200, response.text
            if step < 8:
                await wait_until(lambda n=step: len(sim.submits()) == n + 2, 5, what="the next submit")
        assert order == ["a", "a", "b", "c", "a", "b", "a", "a", "a"]
        assert len(set(submitted_ids(sim))) == 9


async def test_a_cancelled_waiting_job_is_never_sent(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path, upstream_max_concurrency=1) as gateway:
        sim = sim_of(gateway)
        sim.config.faults.paused = True
        tenant = await gateway.new_tenant()
        [running] = await post(tenant, 1)
        await wait_until(lambda: len(sim.submits()) == 1, 5, what="the first submit")
        waiting = await post(tenant, 3)
        cancelled = await tenant.client.post(f"/v1/jobs/{waiting[0]}/cancel")
        assert cancelled.json()["status"] == "cancelled"
        await tenant.client.post(f"/v1/jobs/{running}/cancel")
        await wait_until(lambda: len(sim.submits()) == 2, 5, what="the next submit")
        assert submitted_ids(sim) == [running, waiting[1]]


async def test_a_job_committed_after_its_request_was_cancelled_is_still_sent(
    tmp_path: Path,
) -> None:
    """The accept claims a free slot and commits the job already claimed; the dispatcher
    must hear of the commit even when the request stopped waiting for it (a client gone, a
    shutdown), or the job would sit claimed and unsent until the reconciler failed it."""
    async with in_process_gateway(tmp_path) as gateway:
        sim = sim_of(gateway)
        tenant = await gateway.new_tenant()
        store = gateway.services.store
        assert isinstance(store, SQLiteStore)
        started, release = threading.Event(), threading.Event()

        def hold(tx: Any) -> None:  # keeps the writer thread busy while the POST is cancelled
            started.set()
            release.wait(5)

        holder = asyncio.ensure_future(store.write(hold))
        await asyncio.to_thread(started.wait, 5)
        post = asyncio.ensure_future(tenant.client.post("/v1/jobs", json=PRO))
        dispatcher = gateway.services.dispatcher
        # The accept claims its slot, then queues its script in the same step.
        await wait_until(lambda: len(dispatcher.in_flight) == 1, 5, what="the accept to be queued")
        post.cancel()
        with pytest.raises(asyncio.CancelledError):
            await post
        release.set()
        await holder
        listed: list[dict[str, Any]] = []

        async def committed() -> bool:  # although its request was cancelled
            listed[:] = (await tenant.client.get("/v1/jobs")).json()["data"]
            return len(listed) == 1

        await wait_until(committed, 5, what="the job to be committed")
        job_id = listed[0]["id"]
        await wait_until(lambda: len(submits_for(sim, job_id)) == 1, 5, what="its submit")
        assert (await wait_job(tenant.client, job_id))["status"] == "completed"


async def test_a_failing_accept_listener_keeps_the_job_from_no_other(tmp_path: Path) -> None:
    """Listeners run after the commit; one that raises (a metrics or logging bug) is logged,
    and the others, the dispatcher among them, still hear of the job."""
    async with in_process_gateway(tmp_path) as gateway:
        def broken(job: Any) -> None:
            raise RuntimeError("listener bug")

        gateway.services.jobs.accept_listeners.insert(0, broken)
        tenant = await gateway.new_tenant()
        response = await tenant.client.post("/v1/jobs", json={**PRO, "wait": 10})
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "completed"


async def test_a_slot_freed_by_another_worker_is_taken_again(
    gateway_factory: GatewayFactory, simulator: Sim
) -> None:
    """Two workers on one database. Worker A sends every job, one at a time; WaveSpeed's
    webhooks all reach worker B (A's public URL is B's), so B commits each job's end and A
    never hears that commit. A still learns from the store that its slot is free."""
    b = await gateway_factory()
    a = await gateway_factory(public_url=b.url, upstream_max_concurrency=1)
    tenant = await a.new_tenant()
    ids = await post(tenant, 3)
    for job_id in ids:
        assert (await wait_job(tenant.client, job_id, within=15))["status"] == "completed"
    assert sorted(submitted_ids(simulator)) == sorted(ids)
    assert {w.url.rsplit("/webhooks/", 1)[0] for w in simulator.state.webhooks} == {b.url}
    await wait_until(lambda: not a.services.dispatcher.in_flight, 5, what="the last slot freed")


async def test_only_jobs_the_store_says_are_finished_give_their_slots_back(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path) as gateway:
        tenant = await gateway.new_tenant()
        [done] = await post(tenant, 1)
        await wait_job(tenant.client, done)
        dispatcher = gateway.services.dispatcher
        # Counted here but finished by another worker; and one whose accepting commit has not
        # ended yet (not in the store): that one keeps its slot.
        dispatcher.in_flight.update({done, "job_not_committed_yet"})
        assert await dispatcher.release_finished() == 1
        assert dispatcher.in_flight == {"job_not_committed_yet"}


async def test_an_idle_worker_sends_what_a_busy_one_accepted(
    gateway_factory: GatewayFactory, simulator: Sim
) -> None:
    """Two workers on one database, one slot each. Every job is accepted by A, whose slot is
    taken; B, idle, sends the next one: each job once, by whichever worker claims it."""
    simulator.config.faults.paused = True
    a = await gateway_factory(upstream_max_concurrency=1)
    b = await gateway_factory(upstream_max_concurrency=1)
    tenant = await a.new_tenant()
    ids = await post(tenant, 3)
    await wait_until(lambda: len(simulator.submits()) == 2, 5, what="a submit from each worker")
    await asyncio.sleep(0.6)  # two more looks at the store: no worker sends a third
    assert len(simulator.submits()) == 2
    assert len(a.services.dispatcher.in_flight) == len(b.services.dispatcher.in_flight) == 1
    simulator.config.faults.paused = False
    for job_id in ids:
        assert (await wait_job(tenant.client, job_id, within=15))["status"] == "completed"
    assert sorted(submitted_ids(simulator)) == sorted(ids)
