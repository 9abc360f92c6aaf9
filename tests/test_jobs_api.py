"""The tenant job API: idempotency, tenant isolation, listing and pagination, cancel, ``wait``,
and the health endpoints."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.store.migrations import LATEST
from tests.conftest import Gateway, GatewayFactory, Sim, TenantHandle, in_process_gateway
from tests.helpers import submits_for, wait_job, wait_until

PRO: dict[str, Any] = {"model": "flux-kontext-pro", "prompt": "a fox in the snow"}
MAX: dict[str, Any] = {"model": "flux-kontext-max", "prompt": "a lighthouse"}
EDIT: dict[str, Any] = {"model": "flux-kontext-max", "prompt": "bluer",
                        "images": ["https://images.example/a.png"]}
MULTI: dict[str, Any] = {"model": "flux-kontext-max", "prompt": "together",
                         "images": ["https://images.example/a.png", "https://images.example/b.png"]}


async def set_faults(sim: Sim, **faults: Any) -> None:
    async with httpx.AsyncClient(base_url=sim.url) as client:
        response = await client.post("/_sim/faults", json=faults)
    assert response.status_code == 200, response.text


def sim_of(gateway: Gateway) -> Sim:
    sim: Sim = gateway.simulator  # type: ignore[attr-defined]
    return sim


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    """In process, with WaveSpeed answering every submit 429: jobs stay queued."""
    async with in_process_gateway(tmp_path) as gateway:
        sim_of(gateway).config.faults.rate_429 = 1
        yield gateway


def error_code(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    code: str = body["error"]["code"]
    return code


# -- idempotency ------------------------------------------------------------------------------


async def test_idempotent_replay_is_the_same_job_as_it_is_now(
    gateway: Gateway, tenant: TenantHandle, simulator: Sim
) -> None:
    key = {"Idempotency-Key": "order-1"}
    first = await tenant.client.post("/v1/jobs", json=PRO, headers=key)
    assert first.status_code == 202, first.text
    job_id = first.json()["id"]
    done = await wait_job(tenant.client, job_id)
    assert done["status"] == "completed"

    # Same body after normalization: explicit defaults, the full WaveSpeed id, other key order.
    same = {"prompt": PRO["prompt"], "guidance_scale": 3.5, "aspect_ratio": "1:1",
            "safety_tolerance": "2", "model": "wavespeed-ai/flux-kontext-pro/text-to-image"}
    replay = await tenant.client.post("/v1/jobs", json=same, headers=key)
    assert replay.status_code == 202, replay.text
    replayed = replay.json()
    assert replayed["id"] == job_id
    assert replayed["status"] == "completed"
    assert replayed["outputs"] == done["outputs"]
    assert replayed["events"] == done["events"]
    assert replay.headers["location"] == f"/v1/jobs/{job_id}"

    assert len(simulator.submits()) == 1
    assert len(submits_for(simulator, job_id)) == 1
    listed = await tenant.client.get("/v1/jobs")
    assert [job["id"] for job in listed.json()["data"]] == [job_id]

    for other in (
        {**PRO, "prompt": "a wolf"},
        {**PRO, "seed": 1},
        {**PRO, "metadata": {"order": 2}},
        {**PRO, "callback_url": "https://hooks.example/x"},
        {**PRO, "model": "flux-kontext-max"},
    ):
        conflict = await tenant.client.post("/v1/jobs", json=other, headers=key)
        assert error_code(conflict, 409) == "idempotency_conflict"
    assert len(simulator.submits()) == 1
    assert len((await tenant.client.get("/v1/jobs")).json()["data"]) == 1


async def test_idempotency_keys_are_per_tenant(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path) as gateway:
        a, b = await gateway.new_tenant(), await gateway.new_tenant()
        key = {"Idempotency-Key": "shared-key"}
        job_a = (await a.client.post("/v1/jobs", json=PRO, headers=key)).json()
        job_b = (await b.client.post("/v1/jobs", json={**PRO, "prompt": "other"}, headers=key))
        assert job_b.status_code == 202, job_b.text
        assert job_b.json()["id"] != job_a["id"]
        again_b = await b.client.post("/v1/jobs", json={**PRO, "prompt": "other"}, headers=key)
        assert again_b.json()["id"] == job_b.json()["id"]
        again_a = await a.client.post("/v1/jobs", json=PRO, headers=key)
        assert again_a.json()["id"] == job_a["id"]
        await wait_until(lambda: len(sim_of(gateway).submits()) == 2, 5, what="two submits")
        await asyncio.sleep(0.1)
        assert len(sim_of(gateway).submits()) == 2


async def test_without_a_key_every_post_is_a_new_job(gw: Gateway) -> None:
    tenant = await gw.new_tenant()
    ids = {(await tenant.client.post("/v1/jobs", json=PRO)).json()["id"] for _ in range(3)}
    assert len(ids) == 3


async def test_concurrent_identical_requests_make_one_job(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path) as gateway:
        tenant = await gateway.new_tenant()
        key = {"Idempotency-Key": "burst"}
        responses = await asyncio.gather(
            *(tenant.client.post("/v1/jobs", json=PRO, headers=key) for _ in range(20))
        )
        assert {r.status_code for r in responses} == {202}
        ids = {r.json()["id"] for r in responses}
        assert len(ids) == 1
        [job_id] = ids
        listed = await tenant.client.get("/v1/jobs")
        assert [job["id"] for job in listed.json()["data"]] == [job_id]
        sim = sim_of(gateway)
        await wait_until(lambda: len(sim.submits()) == 1, 5, what="the submit")
        await asyncio.sleep(0.1)
        assert len(sim.submits()) == 1
        job = (await tenant.client.get(f"/v1/jobs/{job_id}")).json()
        assert [e["to"] for e in job["events"]].count("queued") == 1


async def test_concurrent_requests_with_one_key_and_two_bodies(gw: Gateway) -> None:
    tenant = await gw.new_tenant()
    key = {"Idempotency-Key": "race"}
    bodies = [PRO if i % 2 else {**PRO, "prompt": "other"} for i in range(20)]
    responses = await asyncio.gather(
        *(tenant.client.post("/v1/jobs", json=body, headers=key) for body in bodies)
    )
    accepted = [r for r in responses if r.status_code == 202]
    refused = [r for r in responses if r.status_code == 409]
    # Every request with the first body to commit gets its job; every one with the other, 409.
    assert len(accepted) == len(refused) == 10
    assert len({r.json()["id"] for r in accepted}) == 1
    assert {r.json()["error"]["code"] for r in refused} == {"idempotency_conflict"}
    winner = accepted[0].json()["inputs"]["prompt"]
    assert all(json.loads(r.request.content)["prompt"] == winner for r in accepted)
    assert all(json.loads(r.request.content)["prompt"] != winner for r in refused)
    assert len((await tenant.client.get("/v1/jobs")).json()["data"]) == 1


async def test_idempotency_key_expires_after_its_ttl(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path, idempotency_ttl_seconds=1) as gateway:
        tenant = await gateway.new_tenant()
        key = {"Idempotency-Key": "short-lived"}
        first = (await tenant.client.post("/v1/jobs", json=PRO, headers=key)).json()["id"]
        assert (await tenant.client.post("/v1/jobs", json=PRO, headers=key)).json()["id"] == first
        await asyncio.sleep(1.1)
        later = await tenant.client.post("/v1/jobs", json={**PRO, "prompt": "new"}, headers=key)
        assert later.status_code == 202, later.text
        assert later.json()["id"] != first
        again = await tenant.client.post("/v1/jobs", json={**PRO, "prompt": "new"}, headers=key)
        assert again.json()["id"] == later.json()["id"]


# -- tenant isolation --------------------------------------------------------------------------


async def test_tenants_never_see_each_others_jobs(gw: Gateway) -> None:
    a, b = await gw.new_tenant(), await gw.new_tenant()
    job_a = (await a.client.post("/v1/jobs", json=PRO)).json()
    job_b = (await b.client.post("/v1/jobs", json=MAX)).json()

    stranger = await b.client.get(f"/v1/jobs/{job_a['id']}")
    missing = await b.client.get("/v1/jobs/job_0000000000zzzzzzzzzzzzzzzz")
    assert error_code(stranger, 404) == error_code(missing, 404) == "job_not_found"
    assert stranger.json()["error"]["message"].replace(job_a["id"], "ID") == (
        missing.json()["error"]["message"].replace("job_0000000000zzzzzzzzzzzzzzzz", "ID")
    )
    cancel = await b.client.post(f"/v1/jobs/{job_a['id']}/cancel")
    assert error_code(cancel, 404) == "job_not_found"
    assert (await a.client.get(f"/v1/jobs/{job_a['id']}")).json()["status"] == "queued"

    for query in ("", "?status=queued", "?model=flux-kontext-pro", f"?cursor={job_a['id']}z",
                  "?limit=100"):
        listed = (await b.client.get(f"/v1/jobs{query}")).json()["data"]
        assert job_a["id"] not in {job["id"] for job in listed}, query
    assert [j["id"] for j in (await b.client.get("/v1/jobs")).json()["data"]] == [job_b["id"]]
    assert [j["id"] for j in (await a.client.get("/v1/jobs")).json()["data"]] == [job_a["id"]]


# -- listing ---------------------------------------------------------------------------------


async def test_listing_newest_first_with_cursor_pagination_and_filters(gw: Gateway) -> None:
    tenant = await gw.new_tenant()
    bodies = [PRO, MAX, EDIT, MULTI, PRO, MAX, PRO]
    created: list[str] = []
    for body in bodies:
        response = await tenant.client.post("/v1/jobs", json=body)
        assert response.status_code == 202, response.text
        created.append(response.json()["id"])
    newest_first = list(reversed(created))

    everything = (await tenant.client.get("/v1/jobs")).json()
    assert [job["id"] for job in everything["data"]] == newest_first
    assert everything["next_cursor"] is None
    stamps = [job["created_at"] for job in everything["data"]]
    assert stamps == sorted(stamps, reverse=True)

    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        query = "?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = (await tenant.client.get(f"/v1/jobs{query}")).json()
        pages.append([job["id"] for job in page["data"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(pages) < 10
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [job_id for page in pages for job_id in page] == newest_first

    exact = (await tenant.client.get("/v1/jobs?limit=7")).json()
    assert len(exact["data"]) == 7 and exact["next_cursor"] is None
    one = (await tenant.client.get("/v1/jobs?limit=1")).json()
    assert [job["id"] for job in one["data"]] == newest_first[:1]
    assert one["next_cursor"] == newest_first[0]

    for job_id in (created[0], created[3]):
        cancelled = await tenant.client.post(f"/v1/jobs/{job_id}/cancel")
        assert cancelled.status_code == 200, cancelled.text

    async def ids(query: str) -> list[str]:
        response = await tenant.client.get(f"/v1/jobs?{query}")
        assert response.status_code == 200, response.text
        return [job["id"] for job in response.json()["data"]]

    assert await ids("status=cancelled") == [created[3], created[0]]
    assert await ids("status=queued") == [i for i in newest_first if i not in (created[0], created[3])]
    assert await ids("status=completed") == []
    assert await ids("model=flux-kontext-pro") == [created[6], created[4], created[0]]
    assert await ids("model=flux-kontext-max") == [created[5], created[3], created[2], created[1]]
    assert await ids("model=wavespeed-ai/flux-kontext-max/multi") == [created[3]]
    assert await ids("model=wavespeed-ai/flux-kontext-max") == [created[2]]
    assert await ids("model=flux-kontext-pro&status=queued") == [created[6], created[4]]
    first = await ids("status=queued&limit=2")
    second = (await tenant.client.get(
        f"/v1/jobs?status=queued&limit=2&cursor={first[-1]}"
    )).json()
    assert first + [job["id"] for job in second["data"]] == [created[6], created[5], created[4],
                                                             created[2]]


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ("limit=0", {"limit"}),
        ("limit=101", {"limit"}),
        ("limit=-1", {"limit"}),
        ("limit=abc", {"limit"}),
        ("limit=1.5", {"limit"}),
        ("status=done", {"status"}),
        ("status=QUEUED", {"status"}),
        ("cursor=not-a-cursor", {"cursor"}),
        ("limit=0&status=done", {"limit", "status"}),
    ],
)
async def test_bad_list_parameters_are_422(gw: Gateway, query: str, fields: set[str]) -> None:
    tenant = await gw.new_tenant()
    response = await tenant.client.get(f"/v1/jobs?{query}")
    assert error_code(response, 422) == "invalid_request"
    assert {d["field"] for d in response.json()["error"]["details"]} == fields


# -- cancel -----------------------------------------------------------------------------------


async def test_cancel_queued_and_submitted_and_a_late_webhook_changes_nothing(
    gateway_factory: GatewayFactory, simulator: Sim
) -> None:
    gateway = await gateway_factory(upstream_max_concurrency=1)
    tenant = await gateway.new_tenant()
    await set_faults(simulator, paused=True)
    first = (await tenant.client.post("/v1/jobs", json=PRO)).json()["id"]
    await wait_job(tenant.client, first, ("submitted",))
    second = (await tenant.client.post("/v1/jobs", json=MAX)).json()["id"]
    await asyncio.sleep(0.2)
    assert (await tenant.client.get(f"/v1/jobs/{second}")).json()["status"] == "queued"

    queued = await tenant.client.post(f"/v1/jobs/{second}/cancel")
    assert queued.status_code == 200, queued.text
    assert queued.json()["status"] == "cancelled"
    assert [(e["from"], e["to"], e["source"]) for e in queued.json()["events"]] == [
        (None, "queued", "api"), ("queued", "cancelled", "api"),
    ]
    assert queued.json()["cost_usd"] == "0.00"

    in_flight = await tenant.client.post(f"/v1/jobs/{first}/cancel")
    assert in_flight.status_code == 200, in_flight.text
    cancelled = in_flight.json()
    assert [(e["from"], e["to"], e["source"]) for e in cancelled["events"]] == [
        (None, "queued", "api"), ("queued", "submitted", "dispatcher"), ("submitted", "cancelled", "api"),
    ]
    again = await tenant.client.post(f"/v1/jobs/{first}/cancel")
    assert error_code(again, 409) == "job_terminal"

    # The slot is free again; the cancelled queued job is never sent.
    third = (await tenant.client.post("/v1/jobs", json=PRO)).json()["id"]
    await wait_job(tenant.client, third, ("submitted",))
    await set_faults(simulator, paused=False)
    done = await wait_job(tenant.client, third)
    assert done["status"] == "completed"
    await asyncio.wait_for(simulator.state.wait_idle(), 10)
    [late] = [w for w in simulator.state.webhooks if w.prediction_id == cancelled["upstream_id"]]
    assert late.response_status == 200
    after = (await tenant.client.get(f"/v1/jobs/{first}")).json()
    assert after["status"] == "cancelled"
    assert after["events"] == cancelled["events"]
    assert after["outputs"] == []
    assert submits_for(simulator, second) == []
    assert len(submits_for(simulator, first)) == 1

    terminal = await tenant.client.post(f"/v1/jobs/{third}/cancel")
    assert error_code(terminal, 409) == "job_terminal"
    assert (await tenant.client.get(f"/v1/jobs/{third}")).json()["status"] == "completed"


async def test_cancel_unknown_job_is_404(gw: Gateway) -> None:
    tenant = await gw.new_tenant()
    response = await tenant.client.post("/v1/jobs/job_0000000000zzzzzzzzzzzzzzzz/cancel")
    assert error_code(response, 404) == "job_not_found"


# -- wait -----------------------------------------------------------------------------------


async def test_wait_returns_200_with_the_finished_job(
    gateway: Gateway, tenant: TenantHandle, simulator: Sim
) -> None:
    response = await tenant.client.post("/v1/jobs", json={**PRO, "wait": 10})
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "completed"
    assert job["outputs"]
    assert [e["to"] for e in job["events"]] == ["queued", "submitted", "completed"]


async def test_wait_returns_200_with_a_failed_job(
    gateway: Gateway, tenant: TenantHandle, simulator: Sim
) -> None:
    await set_faults(simulator, failure_rate=1)
    response = await tenant.client.post("/v1/jobs", json={**PRO, "wait": 10})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "failed"


async def test_wait_runs_out_with_202_and_the_job_in_flight(
    gateway: Gateway, tenant: TenantHandle, simulator: Sim
) -> None:
    await set_faults(simulator, paused=True)
    started = time.monotonic()
    response = await tenant.client.post("/v1/jobs", json={**PRO, "wait": 0.6})
    elapsed = time.monotonic() - started
    assert response.status_code == 202, response.text
    assert response.json()["status"] in ("queued", "submitted")
    assert 0.55 <= elapsed < 3


async def test_wait_ends_when_the_job_is_cancelled(
    gateway: Gateway, tenant: TenantHandle, simulator: Sim
) -> None:
    await set_faults(simulator, paused=True)
    waiting = asyncio.create_task(tenant.client.post("/v1/jobs", json={**PRO, "wait": 30}))
    await wait_until(lambda: len(simulator.submits()) == 1, 5, what="the submit")
    job_id = simulator.submits()[0].query["webhook"].rsplit("/", 1)[1]
    started = time.monotonic()
    cancel = await tenant.client.post(f"/v1/jobs/{job_id}/cancel")
    assert cancel.status_code == 200
    response = await asyncio.wait_for(waiting, 5)
    assert time.monotonic() - started < 2
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"


# -- the job view and operations ---------------------------------------------------------------


async def test_job_view_has_every_documented_field(gw: Gateway) -> None:
    tenant = await gw.new_tenant()
    job = (await tenant.client.post("/v1/jobs", json={**EDIT, "metadata": {"k": "v"}})).json()
    for name in ("id", "status", "model", "wavespeed_model_id", "upstream_id", "inputs", "outputs",
                 "has_nsfw_contents", "error", "timings", "cost_usd", "metadata", "events",
                 "created_at"):
        assert name in job, name
    assert job["metadata"] == {"k": "v"}
    assert job["cost_usd"] is None
    assert job["events"][0] == {
        "seq": 1, "from": None, "to": "queued", "source": "api", "at": job["created_at"],
        "detail": None,
    }


async def test_a_job_stored_before_reading_was_strict_is_still_shown(gw: Gateway) -> None:
    """Metadata with an unpaired surrogate was accepted before request bodies were read
    strictly (gateway.jsonio) and stored escaped: such a job must still be shown."""
    tenant = await gw.new_tenant()
    job = (await tenant.client.post("/v1/jobs", json={**EDIT, "metadata": {"k": "v"}})).json()
    database = gw.settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as conn:  # as the earlier code wrote it
        conn.execute("UPDATE jobs SET metadata = ? WHERE id = ?", ('{"k":"\\ud800"}', job["id"]))
    shown = await tenant.client.get(f"/v1/jobs/{job['id']}")
    assert shown.status_code == 200 and shown.json()["metadata"] == {"k": "\ud800"}
    listed = await tenant.client.get("/v1/jobs")
    assert listed.status_code == 200 and listed.json()["data"][0]["metadata"] == {"k": "\ud800"}


async def test_health_and_readiness(gw: Gateway) -> None:
    health = await gw.client.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    ready = await gw.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    assert ready.json()["schema_version"] == LATEST


def test_usd_amounts_are_written_as_decimal_would_write_them() -> None:
    import random
    from decimal import Decimal

    from gateway.api.common import usd
    from gateway.money import MICROS

    def by_decimal(micros: int) -> str:
        amount = Decimal(micros) / MICROS
        return f"{amount:.2f}" if micros % 10_000 == 0 else str(amount)

    rng = random.Random(7)
    amounts = [0, 10_000, -10_000, 40_000, 1_000_000, -1_230_000, 5, -5, 123_456, 99_990_000]
    amounts += [rng.randint(-10**9, 10**9) for _ in range(20_000)]
    amounts += [rng.randint(-10**6, 10**6) * 10_000 for _ in range(20_000)]
    assert [usd(m) for m in amounts] == [by_decimal(m) for m in amounts]
    assert usd(None) is None and usd(40_000) == "0.04" and usd(-1_230_000) == "-1.23"
