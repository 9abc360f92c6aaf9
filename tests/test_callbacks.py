"""Tenant callbacks end to end over real sockets: the gateway, the simulator, and a receiver that
verifies every delivery with the ``standardwebhooks`` library."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway import cli
from tests.callback_receiver import Answer, Receiver
from tests.conftest import Gateway, GatewayFactory, Sim, TenantHandle
from tests.helpers import wait_job, wait_until

ADMIN = "admin-token-for-tests"
FAST: dict[str, Any] = {
    "callback_retry_schedule": [0, 0.1, 0.1, 0.1],
    "callback_retry_jitter": 0,
    "callback_timeout_seconds": 2,
    "callback_poll_seconds": 0.05,
    "admin_token": ADMIN,
}
PROMPT = {"model": "flux-kontext-pro", "prompt": "a lighthouse"}


@pytest.fixture
async def gw(gateway_factory: GatewayFactory) -> Gateway:
    return await gateway_factory(**FAST)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    try:
        yield r
    finally:
        await r.stop()


async def register(tenant: TenantHandle, url: str, **fields: Any) -> dict[str, Any]:
    response = await tenant.client.post("/v1/webhook-endpoints", json={"url": url, **fields})
    assert response.status_code == 201, response.text
    endpoint: dict[str, Any] = response.json()
    assert endpoint["secret"].startswith("whsec_")
    return endpoint


async def run_job(tenant: TenantHandle, **fields: Any) -> dict[str, Any]:
    response = await tenant.client.post("/v1/jobs", json={**PROMPT, **fields})
    assert response.status_code == 202, response.text
    job: dict[str, Any] = await wait_job(tenant.client, response.json()["id"])
    return job


async def messages(tenant: TenantHandle, **params: str) -> list[dict[str, Any]]:
    response = await tenant.client.get("/v1/webhook-messages", params=params)
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def settled(tenant: TenantHandle, message_id: str, within: float = 10.0) -> dict[str, Any]:
    """The message once it is delivered or dead."""
    found: dict[str, Any] = {}

    async def done() -> bool:
        response = await tenant.client.get(f"/v1/webhook-messages/{message_id}")
        found.update(response.json())
        return found["status"] in ("delivered", "dead")

    await wait_until(done, within, what=f"message {message_id} to settle")
    return found


def metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    key = f"{name}{{{wanted}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no sample {key}")


def closed_port() -> tuple[str, int]:
    """A local port with nothing listening (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}", port


async def test_job_callback_url_gets_the_terminal_event_signed_with_the_tenant_secret(
    gw: Gateway, receiver: Receiver
) -> None:
    tenant = await gw.new_tenant()
    secret = (await tenant.client.get("/v1/webhook-secret")).json()["secret"]
    receiver.secrets = [secret]
    job = await run_job(tenant, callback_url=f"{receiver.url}/hooks/job?x=1")
    [delivery] = await receiver.wait_for(1)
    receiver.assert_all_verified()
    assert delivery.path == "/hooks/job"
    body = delivery.payload
    assert body["type"] == "job.completed"
    assert body["data"] == job  # the job exactly as GET /v1/jobs/{id} shows it
    assert body["timestamp"] == job["events"][-1]["at"]
    assert abs(int(delivery.headers["webhook-timestamp"]) - datetime.now(UTC).timestamp()) < 30
    [message] = await messages(tenant, job_id=job["id"])
    assert message["id"] == delivery.webhook_id
    assert message["endpoint_id"] is None and message["url"].startswith(receiver.url)
    settled_message = await settled(tenant, message["id"])
    assert settled_message["status"] == "delivered"
    assert [a["status_code"] for a in settled_message["attempts"]] == [200]
    assert settled_message["attempts"][0]["response"] == "answer 200"
    assert settled_message["payload"] == body
    await asyncio.sleep(0.3)
    assert len(receiver.deliveries) == 1  # delivered once


async def test_a_jobs_callback_url_is_told_its_end_not_processing(
    gateway_factory: GatewayFactory, simulator: Sim, receiver: Receiver
) -> None:
    gw = await gateway_factory(**FAST, webhook_grace_seconds=0, poll_interval_seconds=0.1)
    tenant = await gw.new_tenant()
    simulator.config.faults.paused = True  # the reconciler's poll sees "processing"
    created = await tenant.client.post(
        "/v1/jobs", json={**PROMPT, "callback_url": f"{receiver.url}/hooks/job"}
    )
    job_id = created.json()["id"]
    await wait_job(tenant.client, job_id, ("processing",))
    simulator.config.faults.paused = False
    job = await wait_job(tenant.client, job_id)
    assert [e["to"] for e in job["events"]] == ["queued", "submitted", "processing", "completed"]
    await receiver.wait_for(1)
    await asyncio.sleep(0.3)
    assert [d.payload["type"] for d in receiver.deliveries] == ["job.completed"]
    assert len(await messages(tenant, job_id=job_id)) == 1


async def test_a_failed_job_is_told_to_its_callback_url_as_job_failed(
    gw: Gateway, simulator: Sim, receiver: Receiver
) -> None:
    tenant = await gw.new_tenant()
    receiver.secrets = [(await tenant.client.get("/v1/webhook-secret")).json()["secret"]]
    simulator.config.faults.failure_rate = 1.0
    job = await run_job(tenant, callback_url=f"{receiver.url}/hooks/job")
    assert job["status"] == "failed" and job["error"]["code"] == "upstream_failed"
    [delivery] = await receiver.wait_for(1)
    receiver.assert_all_verified()
    assert delivery.payload["type"] == "job.failed"
    assert delivery.payload["data"] == job


async def test_the_commit_that_queues_a_callback_wakes_the_deliverer(
    gateway_factory: GatewayFactory, receiver: Receiver
) -> None:
    """With an hour between the deliverer's own looks at the store, a callback still goes out
    at once: the terminal commit that queued it wakes the deliverer."""
    gw = await gateway_factory(**{**FAST, "callback_poll_seconds": 3600})
    tenant = await gw.new_tenant()
    job = await run_job(tenant, callback_url=f"{receiver.url}/hooks/job")
    [delivery] = await receiver.wait_for(1)
    assert delivery.payload["type"] == "job.completed"
    assert delivery.payload["data"]["id"] == job["id"]


async def test_endpoints_receive_the_events_their_filter_names(
    gateway_factory: GatewayFactory, simulator: Sim, receiver: Receiver
) -> None:
    gw = await gateway_factory(**FAST, webhook_grace_seconds=0, poll_interval_seconds=0.1)
    tenant = await gw.new_tenant()
    in_flight = await register(
        tenant, f"{receiver.url}/a", event_types=["job.processing", "job.cancelled"]
    )
    done = await register(tenant, f"{receiver.url}/b", event_types=["job.completed"])
    receiver.secrets = [in_flight["secret"], done["secret"]]

    simulator.config.faults.paused = True  # the reconciler's poll sees "processing"
    created = await tenant.client.post("/v1/jobs", json=PROMPT)
    paused_id = created.json()["id"]
    await wait_job(tenant.client, paused_id, ("processing",))
    assert (await tenant.client.post(f"/v1/jobs/{paused_id}/cancel")).status_code == 200
    simulator.config.faults.paused = False
    completed = await run_job(tenant)
    await receiver.wait_for(3)
    await asyncio.sleep(0.3)
    receiver.assert_all_verified()
    seen = sorted((d.path, d.payload["type"], d.payload["data"]["id"]) for d in receiver.deliveries)
    assert seen == [
        ("/a", "job.cancelled", paused_id),
        ("/a", "job.processing", paused_id),
        ("/b", "job.completed", completed["id"]),
    ]
    by_path = {d.path: d for d in receiver.deliveries if d.payload["type"] != "job.processing"}
    assert by_path["/a"].verified_with == [in_flight["secret"]]
    assert by_path["/b"].verified_with == [done["secret"]]
    processing = receiver.of_type("job.processing")[0].payload["data"]
    assert processing["status"] == "processing"  # the snapshot of that transition


async def test_failing_endpoint_is_retried_with_one_event_id_until_it_succeeds(
    gw: Gateway, receiver: Receiver
) -> None:
    tenant = await gw.new_tenant()
    endpoint = await register(tenant, receiver.url)
    receiver.secrets = [endpoint["secret"]]
    receiver.answer(500, Answer(503, {"Retry-After": "0"}), 404)
    job = await run_job(tenant)
    deliveries = await receiver.wait_for(4)
    receiver.assert_all_verified()
    assert len({d.webhook_id for d in deliveries}) == 1
    assert len({d.body for d in deliveries}) == 1  # retries send the same bytes
    [message] = await messages(tenant, job_id=job["id"])
    final = await settled(tenant, message["id"])
    assert final["status"] == "delivered" and final["attempt_count"] == 4
    assert [a["status_code"] for a in final["attempts"]] == [500, 503, 404, 200]
    assert final["attempts"][0]["response"] == "answer 500"
    listed = (await tenant.client.get(f"/v1/webhook-endpoints/{endpoint['id']}/messages")).json()
    assert [m["id"] for m in listed["data"]] == [message["id"]]
    text = (await gw.client.get("/metrics")).text
    assert metric(text, "gateway_callbacks_total", result="failed_attempt") == 3
    assert metric(text, "gateway_callbacks_total", result="delivered") == 1
    assert metric(text, "gateway_callback_lag_seconds_count") == 1
    await asyncio.sleep(0.3)
    assert len(receiver.deliveries) == 4


async def test_retry_after_is_honoured(gw: Gateway, receiver: Receiver) -> None:
    tenant = await gw.new_tenant()
    endpoint = await register(tenant, receiver.url)
    receiver.secrets = [endpoint["secret"]]
    receiver.answer(Answer(429, {"Retry-After": "1"}))
    await run_job(tenant)
    await receiver.wait_for(1)
    await asyncio.sleep(0.2)  # the first attempt's result is recorded; the retry waits
    text = (await gw.client.get("/metrics")).text
    assert metric(text, "gateway_callbacks_pending") == 1
    first, second = await receiver.wait_for(2)
    assert second.at - first.at >= 0.9  # the schedule alone says 0.1 s
    receiver.assert_all_verified()


async def test_endpoint_down_past_the_schedule_is_dead_lettered_then_redelivered(
    gw: Gateway,
) -> None:
    tenant = await gw.new_tenant()
    url, port = closed_port()
    endpoint = await register(tenant, url + "/hook")
    job = await run_job(tenant)
    [message] = await messages(tenant, job_id=job["id"])
    dead = await settled(tenant, message["id"])
    assert dead["status"] == "dead" and dead["attempt_count"] == 4
    assert all(a["status_code"] is None and "connection" in a["error"] for a in dead["attempts"])
    letters = await gw.client.get("/admin/dead-letters", headers={"Authorization": f"Bearer {ADMIN}"})
    assert [m["id"] for m in letters.json()["data"]] == [message["id"]]

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(16)
    sock.setblocking(False)
    receiver = await Receiver([endpoint["secret"]]).start(sock, url)
    try:
        since = datetime.fromtimestamp(0, UTC).isoformat()
        answer = await tenant.client.post(
            f"/v1/webhook-endpoints/{endpoint['id']}/redeliver-dead", params={"since": since}
        )
        assert answer.status_code == 202 and answer.json() == {"redelivering": 1}
        [delivery] = await receiver.wait_for(1)
        assert delivery.webhook_id == message["id"]
        final = await settled(tenant, message["id"])
        assert final["status"] == "delivered"
        assert [a["status_code"] for a in final["attempts"]] == [None] * 4 + [200]

        again = await tenant.client.post(f"/v1/webhook-messages/{message['id']}/redeliver")
        assert again.status_code == 202
        await receiver.wait_for(2)
        assert receiver.deliveries[1].webhook_id == message["id"]
        receiver.assert_all_verified()
        assert (await gw.client.get("/admin/dead-letters", headers={
            "Authorization": f"Bearer {ADMIN}"})).json()["data"] == []
    finally:
        await receiver.stop()


async def test_cli_redelivers_dead_letters(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tenant = await gw.new_tenant()
    url, port = closed_port()
    endpoint = await register(tenant, url)
    job = await run_job(tenant)
    [message] = await messages(tenant, job_id=job["id"])
    assert (await settled(tenant, message["id"]))["status"] == "dead"
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(16)
    sock.setblocking(False)
    receiver = await Receiver([endpoint["secret"]]).start(sock, url)
    monkeypatch.setenv("GATEWAY_DATABASE_URL", gw.settings.database_url)
    try:
        code = await asyncio.to_thread(
            cli.main, ["callbacks", "redeliver-dead", "--tenant", tenant.name,
                       "--since", "2000-01-01T00:00:00Z"],
        )
        assert code == 0
        assert capsys.readouterr().out.strip().splitlines()[-1] == "1"
        await receiver.wait_for(1)  # the running gateway picks it up (it polls the store)
        code = await asyncio.to_thread(cli.main, ["callbacks", "redeliver", message["id"]])
        assert code == 0
        await receiver.wait_for(2)
        assert {d.webhook_id for d in receiver.deliveries} == {message["id"]}
        receiver.assert_all_verified()
        assert await asyncio.to_thread(cli.main, ["callbacks", "redeliver", "msg_nope"]) == 1
    finally:
        await receiver.stop()


async def test_410_disables_the_endpoint(gw: Gateway, receiver: Receiver) -> None:
    tenant = await gw.new_tenant()
    endpoint = await register(tenant, receiver.url)
    receiver.secrets = [endpoint["secret"]]
    receiver.answer(410)
    job = await run_job(tenant)
    [message] = await messages(tenant, job_id=job["id"])
    final = await settled(tenant, message["id"])
    assert final["status"] == "dead" and final["attempt_count"] == 1
    current = (await tenant.client.get(f"/v1/webhook-endpoints/{endpoint['id']}")).json()
    assert current["enabled"] is False and "410" in current["disabled_reason"]
    second = await run_job(tenant)
    assert await messages(tenant, job_id=second["id"]) == []  # a disabled endpoint gets nothing
    refused = await tenant.client.post(f"/v1/webhook-messages/{message['id']}/redeliver")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "webhook_endpoint_disabled"
    text = (await gw.client.get("/metrics")).text
    assert metric(text, "gateway_callbacks_total", result="disabled") == 1
    assert metric(text, "gateway_callbacks_total", result="dead_lettered") == 1
    enabled = await tenant.client.patch(
        f"/v1/webhook-endpoints/{endpoint['id']}", json={"enabled": True}
    )
    assert enabled.json()["enabled"] is True and enabled.json()["disabled_reason"] is None
    assert (await tenant.client.post(f"/v1/webhook-messages/{message['id']}/redeliver")).status_code == 202
    await receiver.wait_for(2)
    assert (await settled(tenant, message["id"]))["status"] == "delivered"
    receiver.assert_all_verified()


async def test_secret_rotation_signs_with_both_secrets_during_the_overlap(
    gw: Gateway, receiver: Receiver
) -> None:
    tenant = await gw.new_tenant()
    endpoint = await register(tenant, receiver.url)
    old = endpoint["secret"]
    rotated = await tenant.client.post(
        f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", json={"overlap_seconds": 3600}
    )
    assert rotated.status_code == 200
    new = rotated.json()["secret"]
    assert new != old and new.startswith("whsec_")
    assert rotated.json()["previous_secret_expires_at"] is not None
    receiver.secrets = [old, new]
    await run_job(tenant)
    [during] = await receiver.wait_for(1)
    assert sorted(during.verified_with) == sorted([old, new])
    assert len(during.signatures) == 2

    ended = await tenant.client.post(
        f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", json={"overlap_seconds": 0}
    )
    newest = ended.json()["secret"]
    receiver.secrets = [old, new, newest]
    await run_job(tenant)
    _, after = await receiver.wait_for(2)
    assert after.verified_with == [newest]
    assert len(after.signatures) == 1
    no_body = await tenant.client.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret")
    assert no_body.status_code == 200  # the body is optional (24 h overlap)


async def test_slow_endpoint_does_not_hold_up_the_others(
    gateway_factory: GatewayFactory, simulator: Sim
) -> None:
    gw = await gateway_factory(**{**FAST, "callback_max_concurrency_per_endpoint": 1})
    slow = await Receiver(default_status=200).start()
    fast = await Receiver().start()
    try:
        tenant = await gw.new_tenant()
        await register(tenant, slow.url)
        await register(tenant, fast.url)
        slow.answer(*(Answer(200, delay=0.6) for _ in range(3)))
        # The three jobs end together, so their callbacks are all due at once.
        simulator.config.faults.paused = True
        ids = [(await tenant.client.post("/v1/jobs", json=PROMPT)).json()["id"] for _ in range(3)]
        simulator.config.faults.paused = False
        for job_id in ids:
            await wait_job(tenant.client, job_id)
        await fast.wait_for(3, within=5)
        await slow.wait_for(3, within=10)
        # One at a time to the slow endpoint (each waited for the previous answer), while the
        # fast one had all three before the slow one's last.
        arrivals = [d.at for d in slow.deliveries]
        assert all(b - a >= 0.55 for a, b in itertools.pairwise(arrivals))
        assert max(d.at for d in fast.deliveries) < arrivals[-1]
        assert {d.webhook_id for d in slow.deliveries}.isdisjoint(d.webhook_id for d in fast.deliveries)
    finally:
        await slow.stop()
        await fast.stop()


async def test_another_tenants_endpoints_and_messages_are_not_found(
    gw: Gateway, receiver: Receiver
) -> None:
    owner = await gw.new_tenant()
    other = await gw.new_tenant()
    endpoint = await register(owner, receiver.url)
    job = await run_job(owner)
    [message] = await messages(owner, job_id=job["id"])
    base = f"/v1/webhook-endpoints/{endpoint['id']}"
    for method, path in [
        ("GET", base), ("PATCH", base), ("DELETE", base), ("POST", base + "/rotate-secret"),
        ("GET", base + "/messages"), ("POST", base + "/redeliver-dead?since=2000-01-01T00:00:00Z"),
        ("GET", f"/v1/webhook-messages/{message['id']}"),
        ("POST", f"/v1/webhook-messages/{message['id']}/redeliver"),
    ]:
        response = await other.client.request(method, path, json={} if method == "PATCH" else None)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"].endswith("_not_found")
    assert (await other.client.get("/v1/webhook-endpoints")).json()["data"] == []
    assert await messages(other) == []
    deleted = await owner.client.delete(base)
    assert deleted.status_code == 204
    assert (await owner.client.get(base)).status_code == 404
    assert await messages(owner, job_id=job["id"]) == []


async def test_admin_manages_any_tenants_endpoints(gw: Gateway, receiver: Receiver) -> None:
    tenant = await gw.new_tenant()
    admin = {"Authorization": f"Bearer {ADMIN}"}
    base = f"/admin/tenants/{tenant.id}/webhook-endpoints"
    created = await gw.client.post(
        base, json={"url": receiver.url, "event_types": ["job.completed"]}, headers=admin
    )
    assert created.status_code == 201, created.text
    endpoint = created.json()
    receiver.secrets = [endpoint["secret"]]
    tenant_view = (await tenant.client.get(f"/v1/webhook-endpoints/{endpoint['id']}")).json()
    assert "secret" not in tenant_view and tenant_view["event_types"] == ["job.completed"]
    job = await run_job(tenant)
    await receiver.wait_for(1)
    receiver.assert_all_verified()
    listed = await gw.client.get(f"{base}/{endpoint['id']}/messages", headers=admin)
    [message] = listed.json()["data"]
    assert message["job_id"] == job["id"] and message["attempts"][0]["status_code"] == 200
    redelivered = await gw.client.post(
        f"/admin/webhook-messages/{message['id']}/redeliver", headers=admin
    )
    assert redelivered.status_code == 202
    await receiver.wait_for(2)
    patched = await gw.client.patch(f"{base}/{endpoint['id']}", json={"enabled": False}, headers=admin)
    assert patched.json()["enabled"] is False
    audit = (await gw.client.get("/admin/audit", headers=admin)).json()["data"]
    actions = {entry["action"] for entry in audit}
    assert {"webhook_endpoint.create", "webhook_endpoint.update",
            "webhook_message.redeliver"} <= actions
    assert "whsec_" not in json.dumps(audit)
    assert (await gw.client.get(base, headers={"Authorization": f"Bearer {tenant.key}"})).status_code == 401
    assert (await gw.client.delete(f"{base}/{endpoint['id']}", headers=admin)).status_code == 204


async def test_admin_webhook_routes_are_off_without_a_token(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory()
    tenant = await gw.new_tenant()
    response = await gw.client.get(f"/admin/tenants/{tenant.id}/webhook-endpoints")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "admin_disabled"
    assert (await gw.client.get("/admin/dead-letters")).status_code == 403
