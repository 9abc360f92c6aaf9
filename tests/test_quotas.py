"""Quotas and money under concurrency: budgets that hold, a ledger that matches the bill,
rate and concurrency limits, UTC day/month windows, and fair dispatch between tenants."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Gateway, GatewayFactory, Sim, TenantHandle, in_process_gateway
from tests.helpers import wait_job, wait_until

T2I = {"model": "flux-kontext-max", "prompt": "a lighthouse at dusk"}
PRO = {"model": "flux-kontext-pro", "prompt": "a lighthouse at dusk"}


class FakeClock:
    """Real time moved by an offset, so windows can be crossed without waiting."""

    def __init__(self, start: datetime) -> None:
        self.offset = start.timestamp() - asyncio.get_running_loop().time()

    def __call__(self) -> float:
        return asyncio.get_running_loop().time() + self.offset

    def jump_to(self, moment: datetime) -> None:
        self.offset = moment.timestamp() - asyncio.get_running_loop().time()


async def _burst(client: httpx.AsyncClient, body: dict[str, Any], count: int) -> list[httpx.Response]:
    return list(await asyncio.gather(*(client.post("/v1/jobs", json=body) for _ in range(count))))


async def _usage(client: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    response = await client.get("/v1/usage", params=params)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def _settled_spend_matches(tenant: TenantHandle, accepted: list[str]) -> tuple[int, Decimal]:
    jobs = [await wait_job(tenant.client, job_id, within=30) for job_id in accepted]
    completed = [j for j in jobs if j["status"] == "completed"]
    expected = sum((Decimal(j["price_usd"]) for j in completed), Decimal("0"))
    for job in jobs:
        assert job["cost_usd"] == (job["price_usd"] if job["status"] == "completed" else "0.00")
    usage = await _usage(tenant.client)
    assert Decimal(usage["cost_usd"]) == expected
    assert usage["images"] == len(completed)
    assert usage["reserved_usd"] == "0.00"
    assert usage["open_jobs"] == 0
    return len(completed), expected


@pytest.mark.parametrize("failure_rate", [0.0, 0.3])
async def test_image_budget_holds_under_200_concurrent_submits(
    gateway: Gateway, simulator: Sim, failure_rate: float
) -> None:
    budget = 17
    tenant = await gateway.new_tenant(limits={"images_per_day": budget})
    simulator.state.faults.paused = True  # nothing ends (and releases) during the burst
    simulator.state.faults.failure_rate = failure_rate
    responses = await _burst(tenant.client, T2I, 200)
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {202: budget, 429: 200 - budget}
    for rejected in (r for r in responses if r.status_code == 429):
        assert rejected.json()["error"]["code"] == "images_per_day_exceeded"
        assert int(rejected.headers["Retry-After"]) >= 1
    accepted = [r.json()["id"] for r in responses if r.status_code == 202]
    simulator.state.faults.paused = False
    completed, spend = await _settled_spend_matches(tenant, accepted)
    if failure_rate:
        assert 0 < completed < budget, "the simulator should have failed some jobs"
    assert spend == Decimal("0.08") * completed
    # Failed jobs gave their images back: exactly that many more are accepted now.
    usage = await _usage(tenant.client)
    assert usage["remaining"]["images_per_day"] == budget - completed


async def test_usd_budget_holds_and_is_charged_to_the_cent(gateway: Gateway, simulator: Sim) -> None:
    tenant = await gateway.new_tenant(limits={"usd_per_day": "0.50"})
    simulator.state.faults.paused = True
    responses = await _burst(tenant.client, PRO, 60)  # $0.04 each: 12 fit in $0.50
    assert Counter(r.status_code for r in responses) == {202: 12, 429: 48}
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 429} == {"usd_per_day_exceeded"}
    simulator.state.faults.paused = False
    accepted = [r.json()["id"] for r in responses if r.status_code == 202]
    _, spend = await _settled_spend_matches(tenant, accepted)
    assert spend == Decimal("0.48")
    usage = await _usage(tenant.client)
    assert usage["by_model"] == [{"model": "flux-kontext-pro", "images": 12, "cost_usd": "0.48"}]
    assert usage["remaining"]["usd_per_day"] == "0.02"


async def test_a_price_set_finer_than_a_cent_is_charged_and_shown_as_set(tmp_path: Path) -> None:
    """GATEWAY_PRICES may give a price like 0.045: the catalog, each job, the usage and a
    limit set as finely all show the amounts exactly, never rounded to the cent."""
    prices = {"flux-kontext-pro": Decimal("0.045")}
    async with in_process_gateway(tmp_path, prices=prices) as gateway:
        tenant = await gateway.new_tenant(limits={"usd_per_day": "0.135"})
        models = (await tenant.client.get("/v1/models")).json()["data"]
        [pro] = [m for m in models if m["wavespeed_id"].startswith("wavespeed-ai/flux-kontext-pro")]
        assert pro["price_usd"] == "0.045"
        jobs = [(await tenant.client.post("/v1/jobs", json={**PRO, "wait": 10})).json() for _ in range(3)]
        assert [(j["status"], j["price_usd"], j["cost_usd"]) for j in jobs] == [
            ("completed", "0.045", "0.045")
        ] * 3
        refused = await tenant.client.post("/v1/jobs", json=PRO)  # 0.135 is spent
        assert refused.status_code == 429, refused.text
        assert "USD 0.135 per day" in refused.json()["error"]["message"]
        usage = await _usage(tenant.client)
    assert usage["cost_usd"] == "0.135" and usage["limits"]["usd_per_day"] == "0.135"
    assert usage["by_model"] == [{"model": "flux-kontext-pro", "images": 3, "cost_usd": "0.135"}]
    assert usage["remaining"]["usd_per_day"] == "0.00"


async def test_idempotent_retry_is_never_charged_twice(gateway: Gateway) -> None:
    tenant = await gateway.new_tenant(limits={"images_per_day": 1})
    headers = {"Idempotency-Key": "order-42"}
    first, *replays = await asyncio.gather(
        *(tenant.client.post("/v1/jobs", json=T2I, headers=headers) for _ in range(10))
    )
    assert first.status_code == 202
    assert {r.json()["id"] for r in replays} == {first.json()["id"]}
    await wait_job(tenant.client, first.json()["id"])
    usage = await _usage(tenant.client)
    assert (usage["images"], usage["cost_usd"]) == (1, "0.08")


async def test_concurrency_limit_counts_jobs_not_ended(gateway: Gateway, simulator: Sim) -> None:
    tenant = await gateway.new_tenant(limits={"max_concurrent_jobs": 3})
    simulator.state.faults.paused = True
    responses = await _burst(tenant.client, PRO, 10)
    assert Counter(r.status_code for r in responses) == {202: 3, 429: 7}
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 429} == {
        "max_concurrent_jobs_exceeded"
    }
    running = [r.json()["id"] for r in responses if r.status_code == 202]
    cancel = await tenant.client.post(f"/v1/jobs/{running[0]}/cancel")
    assert cancel.status_code == 200
    assert (await tenant.client.post("/v1/jobs", json=PRO)).status_code == 202
    assert (await tenant.client.post("/v1/jobs", json=PRO)).status_code == 429
    simulator.state.faults.paused = False


async def test_rate_limit_with_headers(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path) as gateway:
        tenant = await gateway.new_tenant(limits={"requests_per_minute": 5})
        answers = [await tenant.client.post("/v1/jobs", json=PRO) for _ in range(7)]
        assert [a.status_code for a in answers] == [202] * 5 + [429] * 2
        assert answers[0].headers["RateLimit-Limit"] == "5"
        assert [int(a.headers["RateLimit-Remaining"]) for a in answers[:5]] == [4, 3, 2, 1, 0]
        limited = answers[5]
        assert limited.json()["error"]["code"] == "requests_per_minute_exceeded"
        assert 1 <= int(limited.headers["Retry-After"]) <= 12
        assert limited.headers["RateLimit-Remaining"] == "0"
        # Another tenant is not affected.
        other = await gateway.new_tenant()
        assert (await other.client.post("/v1/jobs", json=PRO)).status_code == 202


async def test_day_and_month_windows_follow_the_utc_calendar(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2027, 1, 31, 23, 59, 0, tzinfo=UTC))
    async with in_process_gateway(tmp_path, clock=clock) as gateway:
        tenant = await gateway.new_tenant(limits={"images_per_day": 2, "images_per_month": 3})
        post = tenant.client.post
        assert [(await post("/v1/jobs", json=PRO)).status_code for _ in range(3)] == [202, 202, 429]
        over_day = await post("/v1/jobs", json=PRO)
        assert over_day.json()["error"]["code"] == "images_per_day_exceeded"
        assert 1 <= int(over_day.headers["Retry-After"]) <= 60  # until midnight UTC
        clock.jump_to(datetime(2027, 2, 1, 0, 0, 1, tzinfo=UTC))  # a new day and a new month
        assert [(await post("/v1/jobs", json=PRO)).status_code for _ in range(3)] == [202, 202, 429]
        clock.jump_to(datetime(2027, 2, 2, 9, 0, 0, tzinfo=UTC))  # a new day, same month
        assert (await post("/v1/jobs", json=PRO)).status_code == 202
        over_month = await post("/v1/jobs", json=PRO)
        assert over_month.json()["error"]["code"] == "images_per_month_exceeded"
        expected = datetime(2027, 3, 1, tzinfo=UTC).timestamp() - clock()
        assert abs(int(over_month.headers["Retry-After"]) - expected) <= 2
        usage = await _usage(tenant.client, **{"from": "2027-01-31", "to": "2027-02-02"})
        assert usage["limits"]["images_per_month"] == 3
        assert usage["remaining"] == {"images_per_day": 1, "images_per_month": 0}


async def test_limit_changes_and_disabling_take_effect_at_once(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path, admin_token="admin-secret") as gateway:
        tenant = await gateway.new_tenant()
        admin = {"Authorization": "Bearer admin-secret"}
        assert (await tenant.client.post("/v1/jobs", json=PRO)).status_code == 202
        patch = await gateway.client.patch(
            f"/admin/tenants/{tenant.id}", json={"limits": {"images_per_day": 1}}, headers=admin
        )
        assert patch.status_code == 200 and patch.json()["limits"]["images_per_day"] == 1
        assert (await tenant.client.post("/v1/jobs", json=PRO)).status_code == 429
        lifted = await gateway.client.patch(
            f"/admin/tenants/{tenant.id}", json={"limits": {"images_per_day": None}}, headers=admin
        )
        assert lifted.json()["limits"]["images_per_day"] is None
        assert (await tenant.client.post("/v1/jobs", json=PRO)).status_code == 202
        await gateway.client.patch(f"/admin/tenants/{tenant.id}", json={"disabled": True}, headers=admin)
        refused = await tenant.client.post("/v1/jobs", json=PRO)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "tenant_disabled"
        assert (await tenant.client.get("/v1/jobs")).status_code == 403


async def test_flooding_tenant_does_not_starve_the_others(
    gateway_factory: GatewayFactory, simulator: Sim
) -> None:
    simulator.config.latency_seconds = 0.03
    gateway = await gateway_factory(upstream_max_concurrency=2)
    flood, quiet = await gateway.new_tenant(), await gateway.new_tenant()
    # Both bursts are in before any job ends, however slow the machine: the flood's first two
    # wait at WaveSpeed, everything else in the tenants' queues.
    simulator.config.faults.paused = True
    flood_jobs = [r.json()["id"] for r in await _burst(flood.client, PRO, 40)]
    quiet_jobs = [r.json()["id"] for r in await _burst(quiet.client, PRO, 4)]
    simulator.config.faults.paused = False
    await asyncio.gather(*(wait_job(c.client, j, within=30) for c, js in
                           ((flood, flood_jobs), (quiet, quiet_jobs)) for j in js))
    order = [r.query["webhook"].rsplit("/", 1)[1] for r in simulator.submits()]
    assert sorted(order) == sorted(flood_jobs + quiet_jobs)
    first_quiet = min(order.index(j) for j in quiet_jobs)
    last_quiet = max(order.index(j) for j in quiet_jobs)
    # Round-robin: once the quiet tenant has work, it gets every other slot.
    assert last_quiet - first_quiet <= 2 * len(quiet_jobs)
    assert last_quiet < len(order) - 20, "the quiet tenant waited behind the flood"
    statuses = {(await wait_job(quiet.client, j))["status"] for j in quiet_jobs}
    assert statuses == {"completed"}


async def test_in_flight_never_exceeds_the_upstream_limit(
    gateway_factory: GatewayFactory, simulator: Sim
) -> None:
    simulator.config.latency_seconds = 0.05
    gateway = await gateway_factory(upstream_max_concurrency=3)
    tenant = await gateway.new_tenant()
    peak = 0

    async def sample() -> None:
        nonlocal peak
        while True:
            running = sum(1 for p in simulator.state.predictions.values()
                          if p.status in ("created", "processing"))
            peak = max(peak, running)
            await asyncio.sleep(0.005)

    sampler = asyncio.create_task(sample())
    jobs = [r.json()["id"] for r in await _burst(tenant.client, PRO, 15)]
    await asyncio.gather(*(wait_job(tenant.client, j, within=30) for j in jobs))
    sampler.cancel()
    assert 1 <= peak <= 3
    await wait_until(lambda: not gateway.services.dispatcher.in_flight, what="slots released")
