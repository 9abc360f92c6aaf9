"""WaveSpeed's webhooks into the gateway, and every way they and the submit can go wrong:
forged, duplicated, lost, late and out of order, for another prediction, for no job; a submit
whose answer is lost or whose connection drops (never re-sent, adopted by the webhook, or
failed at the deadline); 429 (retried, created once); refusals (failed with WaveSpeed's word).

Forged deliveries are signed here with hmac from the contract, not with the gateway's code.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import math
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.runner import bind
from gateway.simulator import SimulatorConfig, create_simulator_app
from gateway.webhooks.wavespeed_signature import BadSignature, verify
from tests.conftest import Gateway, GatewayFactory, Sim, TenantHandle
from tests.helpers import (
    HoldSubmitAnswers,
    created_for,
    metric_value,
    prediction_body,
    submits_for,
    wait_job,
    wait_until,
    wavespeed_signed,
)
from tests.servers import reserve_port, serve_on

PRO = {"model": "flux-kontext-pro", "prompt": "a fox in the snow"}
FAST = {"webhook_grace_seconds": 0.2, "poll_interval_seconds": 0.2}


async def set_faults(sim: Sim, **faults: Any) -> None:
    async with httpx.AsyncClient(base_url=sim.url) as client:
        response = await client.post("/_sim/faults", json=faults)
    assert response.status_code == 200, response.text


async def submitted_job(tenant: TenantHandle, sim: Sim) -> dict[str, Any]:
    """A job at WaveSpeed that stays there (the simulator is paused)."""
    await set_faults(sim, paused=True)
    response = await tenant.client.post("/v1/jobs", json=PRO)
    assert response.status_code == 202, response.text
    job = await wait_job(tenant.client, response.json()["id"], ("submitted",))
    assert job["upstream_id"]
    return job


async def deliver(
    gateway: Gateway, job_id: str, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    return await gateway.client.post(f"/webhooks/wavespeed/{job_id}", content=body, headers=headers)


async def job_state(tenant: TenantHandle, job_id: str) -> tuple[Any, ...]:
    job = (await tenant.client.get(f"/v1/jobs/{job_id}")).json()
    return job["status"], job["upstream_id"], job["outputs"], job["events"], job["updated_at"]


async def metrics(gateway: Gateway) -> str:
    return (await gateway.client.get("/metrics")).text


async def simulator_idle(sim: Sim) -> None:
    await asyncio.wait_for(sim.state.wait_idle(), 10)


# -- forged --------------------------------------------------------------------------------


def _forgeries(secret: str, upstream_id: str) -> dict[str, tuple[bytes, dict[str, str]]]:
    body = prediction_body(upstream_id)
    now = int(time.time())
    ahead = math.ceil(time.time()) + 301  # int() would round the clock down: 300.x s ahead
    good = wavespeed_signed(secret, body, "msg_forged")
    drop = lambda name: {k: v for k, v in good.items() if k != name}  # noqa: E731
    tampered = prediction_body(upstream_id, outputs=["https://evil.example/x.png"])
    v1 = base64.b64encode(
        hmac.new(secret.removeprefix("whsec_").encode(), f"msg_forged.{now}.".encode() + body,
                 hashlib.sha256).digest()
    ).decode()
    return {
        "bad-signature": (body, {**good, "webhook-signature": "v3," + "0" * 64}),
        "wrong-secret": (body, wavespeed_signed("whsec_notthesecret", body, "msg_forged")),
        "no-webhook-id": (body, drop("webhook-id")),
        "no-timestamp": (body, drop("webhook-timestamp")),
        "no-signature": (body, drop("webhook-signature")),
        "no-headers": (body, {"content-type": "application/json"}),
        "timestamp-301s-old": (body, wavespeed_signed(secret, body, "msg_forged", now - 301)),
        "timestamp-1h-old": (body, wavespeed_signed(secret, body, "msg_forged", now - 3600)),
        "timestamp-301s-ahead": (body, wavespeed_signed(secret, body, "msg_forged", ahead)),
        "timestamp-not-a-number": (body, {**good, "webhook-timestamp": "yesterday"}),
        "tampered-body": (tampered, good),
        "other-webhook-id": (body, {**good, "webhook-id": "msg_other"}),
        "standard-webhooks-v1": (body, {**good, "webhook-signature": f"v1,{v1}",
                                        "webhook-timestamp": str(now)}),
        "bare-hex": (body, {**good, "webhook-signature": good["webhook-signature"][3:]}),
    }


@pytest.mark.parametrize(("offset", "accepted"), [
    (-300, True), (300, True), (0, True), (-301, False), (301, False), (-3600, False),
])
def test_the_signature_window_is_300_seconds_either_way(offset: int, accepted: bool) -> None:
    secret, body, now = "whsec_windowtest", b'{"id":"p1"}', 1_800_000_000
    headers = wavespeed_signed(secret, body, "msg_window", now + offset)
    if accepted:
        assert verify(secret, headers, body, tolerance_seconds=300, now=now) == "msg_window"
    else:
        with pytest.raises(BadSignature, match="tolerance window"):
            verify(secret, headers, body, tolerance_seconds=300, now=now)


async def test_forged_webhooks_are_401_and_change_nothing(
    gateway: Gateway, tenant: TenantHandle, simulator: Sim
) -> None:
    job = await submitted_job(tenant, simulator)
    before = await job_state(tenant, job["id"])
    secret = simulator.config.webhook_secret
    forgeries = _forgeries(secret, job["upstream_id"])
    for name in forgeries:
        # Signed just before it is sent: a timestamp 301 s ahead of a clock read earlier in
        # the loop would be inside the 300 s window by the time a slow machine delivers it.
        body, headers = _forgeries(secret, job["upstream_id"])[name]
        response = await deliver(gateway, job["id"], body, headers)
        assert response.status_code == 401, (name, response.text)
        assert response.json()["error"]["code"] == "bad_signature", name
        assert secret.removeprefix("whsec_") not in response.text
        assert await job_state(tenant, job["id"]) == before, name
    assert metric_value(await metrics(gateway), "gateway_wavespeed_webhooks_total",
                        result="bad_signature") == len(forgeries)

    # The same delivery signed properly is accepted: the refusals were the forgeries' fault.
    body = prediction_body(job["upstream_id"])
    genuine = await deliver(gateway, job["id"], body, wavespeed_signed(secret, body, "msg_forged"))
    assert genuine.status_code == 200, genuine.text
    assert genuine.json() == {"result": "applied"}
    done = (await tenant.client.get(f"/v1/jobs/{job['id']}")).json()
    assert done["status"] == "completed"
    assert done["outputs"] == ["https://cdn.example/out.png"]
    assert done["events"][-1]["source"] == "webhook"


async def test_timestamp_inside_the_tolerance_is_accepted(
    gateway: Gateway, tenant: TenantHandle, simulator: Sim
) -> None:
    job = await submitted_job(tenant, simulator)
    body = prediction_body(job["upstream_id"])
    headers = wavespeed_signed(simulator.config.webhook_secret, body, "msg_a", int(time.time()) - 290)
    response = await deliver(gateway, job["id"], body, headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"result": "applied"}
    done = (await tenant.client.get(f"/v1/jobs/{job['id']}")).json()
    assert done["status"] == "completed" and done["events"][-1]["source"] == "webhook"


async def test_signed_webhook_that_is_not_a_prediction_is_400(
    gateway: Gateway, tenant: TenantHandle, simulator: Sim
) -> None:
    job = await submitted_job(tenant, simulator)
    before = await job_state(tenant, job["id"])
    secret = simulator.config.webhook_secret
    not_json = prediction_body(job["upstream_id"]).replace(b'"error":""', b'"error":NaN')
    bodies = [b"not json", b"[]", b'{"status": "completed"}', b'{"id": ""}', not_json]
    for index, body in enumerate(bodies):
        response = await deliver(gateway, job["id"], body, wavespeed_signed(secret, body, f"m{index}"))
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "bad_webhook_body"
    assert await job_state(tenant, job["id"]) == before


async def test_webhook_for_another_prediction_is_409(
    gateway: Gateway, tenant: TenantHandle, simulator: Sim
) -> None:
    job = await submitted_job(tenant, simulator)
    before = await job_state(tenant, job["id"])
    body = prediction_body("0123456789abcdef0123456789abcdef")
    headers = wavespeed_signed(simulator.config.webhook_secret, body, "msg_mismatch")
    response = await deliver(gateway, job["id"], body, headers)
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "upstream_id_mismatch"
    assert await job_state(tenant, job["id"]) == before


async def test_webhook_for_an_unknown_job_is_404(gateway: Gateway, simulator: Sim) -> None:
    body = prediction_body("abc")
    headers = wavespeed_signed(simulator.config.webhook_secret, body, "msg_nojob")
    response = await deliver(gateway, "job_0000000000zzzzzzzzzzzzzzzz", body, headers)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "job_not_found"


async def test_processing_then_completed_webhooks(
    gateway: Gateway, tenant: TenantHandle, simulator: Sim
) -> None:
    job = await submitted_job(tenant, simulator)
    secret = simulator.config.webhook_secret
    processing = prediction_body(job["upstream_id"], "processing")
    first = await deliver(gateway, job["id"], processing, wavespeed_signed(secret, processing, "m1"))
    assert first.json() == {"result": "applied"}
    again = await deliver(gateway, job["id"], processing, wavespeed_signed(secret, processing, "m2"))
    assert again.json() == {"result": "unchanged"}
    done = prediction_body(job["upstream_id"])
    last = await deliver(gateway, job["id"], done, wavespeed_signed(secret, done, "m3"))
    assert last.json() == {"result": "applied"}
    final = (await tenant.client.get(f"/v1/jobs/{job['id']}")).json()
    assert [(e["to"], e["source"]) for e in final["events"]] == [
        ("queued", "api"), ("submitted", "dispatcher"), ("processing", "webhook"),
        ("completed", "webhook"),
    ]


# -- the simulator's own deliveries going wrong ----------------------------------------------


async def test_duplicated_webhook_makes_one_transition(
    gateway: Gateway, tenant: TenantHandle, simulator: Sim
) -> None:
    await set_faults(simulator, webhook_duplicate_rate=1)
    response = await tenant.client.post("/v1/jobs", json=PRO)
    job = await wait_job(tenant.client, response.json()["id"])
    await simulator_idle(simulator)
    deliveries = [w for w in simulator.state.webhooks if w.prediction_id == job["upstream_id"]]
    assert len(deliveries) == 2
    assert deliveries[0].webhook_id == deliveries[1].webhook_id
    assert [d.response_status for d in deliveries] == [200, 200]
    final = (await tenant.client.get(f"/v1/jobs/{job['id']}")).json()
    assert final["status"] == "completed"
    assert [e["to"] for e in final["events"]] == ["queued", "submitted", "completed"]
    text = await metrics(gateway)
    assert metric_value(text, "gateway_wavespeed_webhooks_total", result="applied") == 1
    assert metric_value(text, "gateway_wavespeed_webhooks_total", result="duplicate") == 1

    # The same delivery once more, replayed here: answered "duplicate", nothing changes.
    body = deliveries[0].body.encode()
    replay = await deliver(
        gateway, job["id"], body,
        wavespeed_signed(simulator.config.webhook_secret, body, deliveries[0].webhook_id),
    )
    assert replay.status_code == 200
    assert replay.json() == {"result": "duplicate"}
    assert (await tenant.client.get(f"/v1/jobs/{job['id']}")).json() == final


async def test_lost_webhook_is_recovered_by_polling(
    gateway_factory: GatewayFactory, simulator: Sim
) -> None:
    gateway = await gateway_factory(**FAST)
    tenant = await gateway.new_tenant()
    await set_faults(simulator, webhook_lost_rate=1)
    response = await tenant.client.post("/v1/jobs", json=PRO)
    job = await wait_job(tenant.client, response.json()["id"])
    assert job["status"] == "completed"
    [delivery] = [w for w in simulator.state.webhooks if w.prediction_id == job["upstream_id"]]
    assert delivery.sent is False
    assert [(e["to"], e["source"]) for e in job["events"]] == [
        ("queued", "api"), ("submitted", "dispatcher"), ("completed", "poll"),
    ]
    [prediction] = created_for(simulator, job["id"])
    assert job["outputs"] == prediction.outputs
    assert job["cost_usd"] == "0.04"
    polls = [r for r in simulator.state.requests
             if r.method == "GET" and r.path == f"/api/v3/predictions/{prediction.id}/result"]
    assert polls
    assert len(submits_for(simulator, job["id"])) == 1


async def test_lost_webhook_of_a_failed_task_is_polled_too(
    gateway_factory: GatewayFactory, simulator: Sim
) -> None:
    gateway = await gateway_factory(**FAST)
    tenant = await gateway.new_tenant()
    await set_faults(simulator, webhook_lost_rate=1, failure_rate=1)
    response = await tenant.client.post("/v1/jobs", json=PRO)
    job = await wait_job(tenant.client, response.json()["id"])
    assert job["status"] == "failed"
    assert job["error"] == {"code": "upstream_failed", "message": "simulated failure"}
    assert job["events"][-1]["source"] == "poll"
    assert job["cost_usd"] == "0.00"


async def test_a_prediction_wavespeed_forgot_fails_after_the_submit_deadline(
    gateway_factory: GatewayFactory, simulator: Sim
) -> None:
    gateway = await gateway_factory(**{**FAST, "submit_deadline_seconds": 0.6})
    tenant = await gateway.new_tenant()
    await set_faults(simulator, webhook_lost_rate=1, paused=True)
    response = await tenant.client.post("/v1/jobs", json=PRO)
    job = await wait_job(tenant.client, response.json()["id"], ("submitted",))
    simulator.state.predictions.pop(job["upstream_id"])  # WaveSpeed now answers 404 for it
    failed = await wait_job(tenant.client, job["id"])
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "upstream_prediction_not_found"
    assert failed["events"][-1]["source"] == "poll"
    polls = [r for r in simulator.state.requests
             if r.method == "GET" and r.path == f"/api/v3/predictions/{job['upstream_id']}/result"]
    assert len(polls) >= 2, "a 404 inside the deadline is polled again, not failed at once"
    await set_faults(simulator, paused=False)


async def test_no_poll_while_the_webhook_is_on_time(
    gateway_factory: GatewayFactory, simulator: Sim
) -> None:
    gateway = await gateway_factory(webhook_grace_seconds=30, poll_interval_seconds=0.2)
    tenant = await gateway.new_tenant()
    response = await tenant.client.post("/v1/jobs", json=PRO)
    job = await wait_job(tenant.client, response.json()["id"])
    assert job["events"][-1]["source"] == "webhook"
    await asyncio.sleep(0.5)
    assert not [r for r in simulator.state.requests if r.method == "GET"]


async def test_stale_webhook_after_completed_changes_nothing(
    gateway: Gateway, tenant: TenantHandle, simulator: Sim
) -> None:
    await set_faults(simulator, webhook_reorder_rate=1)
    response = await tenant.client.post("/v1/jobs", json=PRO)
    job = await wait_job(tenant.client, response.json()["id"])
    await simulator_idle(simulator)
    deliveries = [w for w in simulator.state.webhooks if w.prediction_id == job["upstream_id"]]
    assert [d.status for d in deliveries] == ["completed", "processing"]
    assert [d.response_status for d in deliveries] == [200, 200]
    final = (await tenant.client.get(f"/v1/jobs/{job['id']}")).json()
    assert final["status"] == "completed"
    assert final["outputs"] == job["outputs"] and final["outputs"]
    assert [e["to"] for e in final["events"]] == ["queued", "submitted", "completed"]
    assert metric_value(await metrics(gateway), "gateway_wavespeed_webhooks_total",
                        result="stale") == 1


async def test_late_webhook_after_a_poll_completed_the_job(
    gateway_factory: GatewayFactory, simulator: Sim
) -> None:
    """The webhook comes after the reconciler has already polled the result: one transition."""
    gateway = await gateway_factory(**FAST)
    tenant = await gateway.new_tenant()
    await set_faults(simulator, webhook_delay_seconds=1.0)
    response = await tenant.client.post("/v1/jobs", json=PRO)
    job = await wait_job(tenant.client, response.json()["id"])
    assert job["events"][-1]["source"] == "poll"
    await simulator_idle(simulator)
    [delivery] = [w for w in simulator.state.webhooks if w.prediction_id == job["upstream_id"]]
    assert delivery.response_status == 200
    final = (await tenant.client.get(f"/v1/jobs/{job['id']}")).json()
    assert final["events"] == job["events"]


# -- the submit going wrong -----------------------------------------------------------------


async def test_lost_submit_answer_is_adopted_by_the_webhook(
    gateway: Gateway, tenant: TenantHandle, simulator: Sim
) -> None:
    await set_faults(simulator, lost_answer_rate=1)
    response = await tenant.client.post("/v1/jobs", json=PRO)
    job = await wait_job(tenant.client, response.json()["id"])
    [prediction] = created_for(simulator, job["id"])
    assert len(submits_for(simulator, job["id"])) == 1
    assert job["status"] == "completed"
    assert job["upstream_id"] == prediction.id
    assert job["outputs"] == prediction.outputs
    assert [(e["from"], e["to"], e["source"]) for e in job["events"]] == [
        (None, "queued", "api"), ("queued", "completed", "webhook"),
    ]
    assert job["events"][-1]["detail"]["adopted_upstream_id"] == prediction.id
    assert job["cost_usd"] == "0.04"


async def test_disconnect_after_send_is_never_resent(
    gateway: Gateway, tenant: TenantHandle, simulator: Sim
) -> None:
    await set_faults(simulator, disconnect_rate=1)
    response = await tenant.client.post("/v1/jobs", json=PRO)
    job = await wait_job(tenant.client, response.json()["id"])
    [prediction] = created_for(simulator, job["id"])
    assert job["status"] == "completed"
    assert job["upstream_id"] == prediction.id
    assert [(e["to"], e["source"]) for e in job["events"]] == [
        ("queued", "api"), ("completed", "webhook"),
    ]
    await asyncio.sleep(0.3)  # time enough for a wrongful retry to show
    assert len(submits_for(simulator, job["id"])) == 1


@pytest.mark.parametrize("fault", ["lost_answer_rate", "disconnect_rate", "rate_5xx"])
async def test_unknown_outcome_without_webhook_fails_at_the_deadline(
    gateway_factory: GatewayFactory, simulator: Sim, fault: str
) -> None:
    gateway = await gateway_factory(submit_deadline_seconds=0.5, **FAST)
    tenant = await gateway.new_tenant()
    await set_faults(simulator, **{fault: 1, "webhook_lost_rate": 1})
    response = await tenant.client.post("/v1/jobs", json=PRO)
    job = await wait_job(tenant.client, response.json()["id"])
    assert job["status"] == "failed"
    assert job["error"]["code"] == "submit_outcome_unknown"
    assert job["upstream_id"] is None
    assert [e["to"] for e in job["events"]] == ["queued", "failed"]
    assert job["cost_usd"] == "0.00"
    assert len(submits_for(simulator, job["id"])) == 1


async def test_429_is_retried_later_and_created_once(
    gateway: Gateway, tenant: TenantHandle, simulator: Sim
) -> None:
    await set_faults(simulator, rate_429=1)
    response = await tenant.client.post("/v1/jobs", json=PRO)
    job_id = response.json()["id"]
    await wait_until(lambda: len(submits_for(simulator, job_id)) >= 1, 5, what="a 429'd submit")
    queued = (await tenant.client.get(f"/v1/jobs/{job_id}")).json()
    assert queued["status"] == "queued"
    await set_faults(simulator, rate_429=0)
    job = await wait_job(tenant.client, job_id)
    assert job["status"] == "completed"
    assert len(created_for(simulator, job_id)) == 1
    assert len(submits_for(simulator, job_id)) >= 2
    assert [(e["to"], e["source"]) for e in job["events"]] == [
        ("queued", "api"), ("submitted", "dispatcher"), ("completed", "webhook"),
    ]


async def test_refused_submit_fails_with_wavespeeds_message(
    gateway_factory: GatewayFactory, simulator: Sim
) -> None:
    gateway = await gateway_factory(wavespeed_api_key="not-the-account-key")
    tenant = await gateway.new_tenant()
    response = await tenant.client.post("/v1/jobs", json=PRO)
    job = await wait_job(tenant.client, response.json()["id"])
    assert job["status"] == "failed"
    assert job["error"] == {"code": "upstream_rejected", "message": "Unauthorized"}
    assert [(e["to"], e["source"]) for e in job["events"]] == [
        ("queued", "api"), ("failed", "dispatcher"),
    ]
    assert job["events"][-1]["detail"]["upstream_status"] == 401
    assert job["cost_usd"] == "0.00"
    assert len(submits_for(simulator, job["id"])) == 1
    assert simulator.state.predictions == {}
    assert "not-the-account-key" not in json.dumps(job)


async def test_failed_task_reports_wavespeeds_error(
    gateway: Gateway, tenant: TenantHandle, simulator: Sim
) -> None:
    await set_faults(simulator, failure_rate=1)
    response = await tenant.client.post("/v1/jobs", json=PRO)
    job = await wait_job(tenant.client, response.json()["id"])
    assert job["status"] == "failed"
    assert job["error"] == {"code": "upstream_failed", "message": "simulated failure"}
    assert job["outputs"] == []
    assert job["events"][-1]["source"] == "webhook"
    assert job["cost_usd"] == "0.00"


async def test_webhook_secret_fetched_from_wavespeed(
    gateway_factory: GatewayFactory, simulator: Sim
) -> None:
    gateway = await gateway_factory(wavespeed_webhook_secret=None)
    tenant = await gateway.new_tenant()
    response = await tenant.client.post("/v1/jobs", json=PRO)
    job = await wait_job(tenant.client, response.json()["id"])
    assert job["status"] == "completed"
    assert job["events"][-1]["source"] == "webhook"
    assert any(r.path == "/api/v3/webhook/secret" for r in simulator.state.requests)


@pytest.mark.parametrize("status", ["processing", "created"])
async def test_job_adopted_in_flight_is_polled_when_the_terminal_webhook_is_lost(
    gateway_factory: GatewayFactory, simulator: Sim, status: str
) -> None:
    """A lost submit answer, then a non-terminal webhook adopts the job, then the terminal
    webhook is lost: the reconciler must still find the result (the grace counts from the
    attempt, since no answer came)."""
    gateway = await gateway_factory(**FAST)
    tenant = await gateway.new_tenant()
    await set_faults(simulator, lost_answer_rate=1, paused=True, webhook_lost_rate=1)
    response = await tenant.client.post("/v1/jobs", json=PRO)
    job_id = response.json()["id"]
    await wait_until(lambda: len(created_for(simulator, job_id)) == 1, 5, what="the prediction")
    [prediction] = created_for(simulator, job_id)
    body = prediction_body(prediction.id, status)
    adopted = await deliver(
        gateway, job_id, body, wavespeed_signed(simulator.config.webhook_secret, body, "msg_early")
    )
    assert adopted.json() == {"result": "applied"}
    expected = "processing" if status == "processing" else "submitted"
    job = await wait_job(tenant.client, job_id, (expected,))
    assert job["upstream_id"] == prediction.id
    await set_faults(simulator, paused=False)
    job = await wait_job(tenant.client, job_id, within=5)
    assert job["status"] == "completed"
    assert [(e["to"], e["source"]) for e in job["events"]] == [
        ("queued", "api"), (expected, "webhook"), ("completed", "poll"),
    ]
    assert len(submits_for(simulator, job_id)) == 1


@contextlib.asynccontextmanager
async def held_simulator(
    sock: Any = None, url: str | None = None
) -> AsyncIterator[tuple[Sim, HoldSubmitAnswers]]:
    """A second simulator (same key and secret as the fixture's), its submit answers holdable."""
    if sock is None:
        sock, url = reserve_port()
    assert url is not None
    config = SimulatorConfig(public_url=url)
    app = create_simulator_app(config)
    hold = HoldSubmitAnswers(app)
    served = await serve_on(hold, sock, url)
    try:
        yield Sim(url, config, app.state.simulator, served), hold
    finally:
        hold.release.set()
        await served.stop()


async def test_submit_timeout_is_never_resent_and_the_webhook_adopts_it(
    gateway_factory: GatewayFactory,
) -> None:
    async with held_simulator() as (sim, hold):
        gateway = await gateway_factory(wavespeed_base_url=sim.url, upstream_timeout_seconds=0.3)
        tenant = await gateway.new_tenant()
        hold.holding = True
        response = await tenant.client.post("/v1/jobs", json=PRO)
        job_id = response.json()["id"]
        await wait_until(lambda: hold.held == 1, 5, what="the submit")
        await asyncio.sleep(0.8)  # past the client's timeout, and time for a wrongful retry
        assert len(submits_for(sim, job_id)) == 1
        assert (await tenant.client.get(f"/v1/jobs/{job_id}")).json()["status"] == "queued"
        hold.holding = False
        hold.release.set()
        job = await wait_job(tenant.client, job_id)
        assert job["status"] == "completed"
        assert [(e["to"], e["source"]) for e in job["events"]] == [
            ("queued", "api"), ("completed", "webhook"),
        ]
        assert len(submits_for(sim, job_id)) == 1
        assert len(created_for(sim, job_id)) == 1


async def test_connection_refused_is_retried_until_wavespeed_is_back(
    gateway_factory: GatewayFactory,
) -> None:
    sock, url = reserve_port()
    sock.close()  # nothing listens there: every connection is refused before anything is sent
    gateway = await gateway_factory(wavespeed_base_url=url, submit_retry_seconds=0.1)
    tenant = await gateway.new_tenant()
    response = await tenant.client.post("/v1/jobs", json=PRO)
    job_id = response.json()["id"]
    await asyncio.sleep(0.5)
    job = (await tenant.client.get(f"/v1/jobs/{job_id}")).json()
    assert job["status"] == "queued"
    async with held_simulator(bind("127.0.0.1", int(url.rsplit(":", 1)[1])), url) as (sim, _):
        job = await wait_job(tenant.client, job_id)
        assert job["status"] == "completed"
        assert [e["to"] for e in job["events"]] == ["queued", "submitted", "completed"]
        assert len(submits_for(sim, job_id)) == 1


async def test_connect_timeout_is_retried_until_wavespeed_is_back(
    gateway_factory: GatewayFactory,
) -> None:
    """A connection that never gets established sent nothing: safe to retry, unlike a timeout
    waiting for the answer."""
    listener = bind("127.0.0.1", 0)
    listener.listen(0)
    port = listener.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    fillers = []  # fill the accept queue: further connection attempts hang
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        gateway = await gateway_factory(
            wavespeed_base_url=url, upstream_timeout_seconds=0.3, submit_retry_seconds=0.1
        )
        tenant = await gateway.new_tenant()
        job_id = (await tenant.client.post("/v1/jobs", json=PRO)).json()["id"]
        await asyncio.sleep(0.8)
        assert (await tenant.client.get(f"/v1/jobs/{job_id}")).json()["status"] == "queued"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
    async with held_simulator(bind("127.0.0.1", port), url) as (sim, _):
        job = await wait_job(tenant.client, job_id)
        assert job["status"] == "completed", job
        assert len(submits_for(sim, job_id)) == 1
