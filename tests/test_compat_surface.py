"""The WaveSpeed-compatible surface (/api/v3) over plain HTTP: WaveSpeed's envelope and error
shape, the status mapping, sync mode and its 5004 timeout, uploads passed through, and the
same tenant keys and job records as /v1."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.compat import STATUS
from gateway.simulator.png import render_png
from gateway.states import STATUSES
from tests.conftest import Gateway, GatewayFactory, Sim, TenantHandle, in_process_gateway
from tests.servers import serve

PRO_T2I = "/api/v3/wavespeed-ai/flux-kontext-pro/text-to-image"
MAX_EDIT = "/api/v3/wavespeed-ai/flux-kontext-max"


async def poll_result(
    client: httpx.AsyncClient, prediction_id: str, within: float = 10.0
) -> dict[str, Any]:
    """GET /api/v3/predictions/{id}/result until the prediction is terminal; return its data."""
    deadline = time.monotonic() + within
    while True:
        response = await client.get(f"/api/v3/predictions/{prediction_id}/result")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        if data["status"] in ("completed", "failed", "cancelled"):
            return data
        assert time.monotonic() < deadline, f"prediction {prediction_id} still {data['status']}"
        await asyncio.sleep(0.05)


def assert_wavespeed_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message"}
    assert body["code"] == status
    message: str = body["message"]
    return message


async def test_every_gateway_status_has_a_wavespeed_status() -> None:
    assert set(STATUS) == set(STATUSES)
    assert {STATUS["queued"], STATUS["submitted"]} == {"created"}
    assert STATUS["processing"] == "processing"
    assert all(STATUS[s] == s for s in ("completed", "failed", "cancelled"))


async def test_submit_answers_in_wavespeed_envelope_and_records_the_job(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path) as gateway:
        tenant = await gateway.new_tenant()
        response = await tenant.client.post(
            PRO_T2I, json={"prompt": "a red fox in snow", "seed": 7, "safety_tolerance": "3"},
            headers={"X-Client-Name": "wavespeed-python", "X-Client-Version": "2.0.5"},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["code"] == 200 and body["message"] == "success"
        data = body["data"]
        assert data["id"].startswith("job_")
        assert data["status"] == "created"
        assert data["model"] == "wavespeed-ai/flux-kontext-pro/text-to-image"
        assert data["outputs"] == [] and data["error"] == ""
        assert data["urls"]["get"] == f"http://gateway.test/api/v3/predictions/{data['id']}/result"
        assert data["created_at"].endswith("Z")

        job = (await tenant.client.get(f"/v1/jobs/{data['id']}")).json()
        assert job["wavespeed_model_id"] == "wavespeed-ai/flux-kontext-pro/text-to-image"
        assert job["inputs"] == {
            "prompt": "a red fox in snow", "seed": 7, "safety_tolerance": "3",
            "guidance_scale": 3.5, "aspect_ratio": "1:1",
        }
        assert job["price_usd"] == "0.04"
        listed = (await tenant.client.get("/v1/jobs")).json()["data"]
        assert [j["id"] for j in listed] == [data["id"]]


async def test_errors_answered_outside_the_surfaces_handlers_keep_wavespeeds_shape(
    tmp_path: Path,
) -> None:
    """The body limit answers before any handler runs, and an unexpected error reaches the
    app's last handler: on /api/v3 both still answer ``{code, message}``."""
    async def boom(request: Request) -> Response:
        raise RuntimeError("a bug")

    async with in_process_gateway(tmp_path, max_body_bytes=1024) as gateway:
        tenant = await gateway.new_tenant()
        too_large = await tenant.client.post(PRO_T2I, json={"prompt": "x" * 2000})
        assert "1024 bytes" in assert_wavespeed_error(too_large, 413)
        gateway.app.router.routes.insert(0, Route("/api/v3/boom", boom, methods=["GET"]))
        transport = httpx.ASGITransport(app=gateway.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as raw:
            assert assert_wavespeed_error(await raw.get("/api/v3/boom"), 500) == "internal error"
        # Elsewhere the gateway's shape.
        assert (await tenant.client.post("/v1/jobs", json={"prompt": "x" * 2000})).json()[
            "error"]["code"] == "payload_too_large"


async def test_invalid_input_is_400_naming_every_field(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path) as gateway:
        tenant = await gateway.new_tenant()
        bad = await tenant.client.post(PRO_T2I, json={"seed": -5, "aspect_ratio": "5:4"})
        message = assert_wavespeed_error(bad, 400)
        for field in ("prompt", "seed", "aspect_ratio"):
            assert f"{field}:" in message
        edit = await tenant.client.post(
            MAX_EDIT, json={"prompt": "x", "image": "ftp://nope", "enable_sync_mode": "yes"}
        )
        message = assert_wavespeed_error(edit, 400)
        assert "image:" in message and "enable_sync_mode:" in message
        not_json = await tenant.client.post(PRO_T2I, content=b"{nope")
        assert_wavespeed_error(not_json, 400)
        base64_out = await tenant.client.post(
            PRO_T2I, json={"prompt": "x", "enable_base64_output": True}
        )
        assert "enable_base64_output" in assert_wavespeed_error(base64_out, 400)
        webhook = await tenant.client.post(PRO_T2I, params={"webhook": "ftp://x"}, json={"prompt": "x"})
        assert "webhook:" in assert_wavespeed_error(webhook, 400)
        # The same network rules as a /v1 callback_url: cloud metadata is refused in any spelling.
        metadata = await tenant.client.post(
            PRO_T2I, params={"webhook": "http://2852039166/latest"}, json={"prompt": "x"}
        )
        assert assert_wavespeed_error(metadata, 400).startswith("webhook: ")
        assert (await tenant.client.get("/v1/jobs")).json()["data"] == []


async def test_unknown_model_auth_and_missing_predictions_answer_in_wavespeed_shape(
    tmp_path: Path,
) -> None:
    async with in_process_gateway(tmp_path) as gateway:
        owner = await gateway.new_tenant()
        other = await gateway.new_tenant()
        unknown = await owner.client.post("/api/v3/wavespeed-ai/flux-dev", json={"prompt": "x"})
        assert "wavespeed-ai/flux-dev" in assert_wavespeed_error(unknown, 404)

        anonymous = await gateway.client.post(PRO_T2I, json={"prompt": "x"})
        assert_wavespeed_error(anonymous, 401)
        wrong_key = await gateway.client.get(
            "/api/v3/webhook/secret", headers={"Authorization": "Bearer kgw_live_wrong"}
        )
        message = assert_wavespeed_error(wrong_key, 401)
        assert "kgw_live_wrong" not in message

        created = (await owner.client.post(PRO_T2I, json={"prompt": "x"})).json()["data"]
        theirs = await other.client.get(f"/api/v3/predictions/{created['id']}/result")
        assert_wavespeed_error(theirs, 404)
        missing = await owner.client.get("/api/v3/predictions/job_missing")
        assert_wavespeed_error(missing, 404)
        nowhere = await owner.client.get("/api/v3/no/such/route")
        assert_wavespeed_error(nowhere, 404)


async def test_quotas_are_shared_with_v1_and_refused_in_wavespeed_shape(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path) as gateway:
        tenant = await gateway.new_tenant(limits={"images_per_day": 2})
        v1 = await tenant.client.post("/v1/jobs", json={"model": "flux-kontext-pro", "prompt": "one"})
        assert v1.status_code == 202, v1.text
        compat = await tenant.client.post(PRO_T2I, json={"prompt": "two"})
        assert compat.status_code == 200, compat.text
        refused = await tenant.client.post(PRO_T2I, json={"prompt": "three"})
        message = assert_wavespeed_error(refused, 429)
        assert "images_per_day" in message
        assert int(refused.headers["Retry-After"]) >= 1
        assert len((await tenant.client.get("/v1/jobs")).json()["data"]) == 2
        usage = (await tenant.client.get("/v1/usage")).json()  # both count, ended or not
        assert Decimal(usage["reserved_usd"]) + Decimal(usage["cost_usd"]) == Decimal("0.08")
        assert usage["remaining"] == {"images_per_day": 0}


async def test_result_paths_follow_the_job_to_completion(gateway: Gateway, tenant: TenantHandle) -> None:
    submitted = await tenant.client.post(
        PRO_T2I, json={"prompt": "a lighthouse", "seed": 3, "aspect_ratio": "16:9"}
    )
    prediction_id = submitted.json()["data"]["id"]
    data = await poll_result(tenant.client, prediction_id)
    assert data["status"] == "completed"
    assert data["error"] == ""
    assert data["has_nsfw_contents"] == [False]
    assert isinstance(data["timings"]["inference"], int)
    job = (await tenant.client.get(f"/v1/jobs/{prediction_id}")).json()
    assert data["outputs"] == job["outputs"] and len(data["outputs"]) == 1
    other_path = (await tenant.client.get(f"/api/v3/predictions/{prediction_id}")).json()["data"]
    assert other_path == data
    assert job["cost_usd"] == "0.04"


async def test_failed_job_is_http_200_with_status_failed(
    gateway: Gateway, tenant: TenantHandle, simulator: Sim
) -> None:
    simulator.config.faults.failure_rate = 1.0
    submitted = await tenant.client.post(PRO_T2I, json={"prompt": "doomed"})
    data = await poll_result(tenant.client, submitted.json()["data"]["id"])
    assert data["status"] == "failed"
    assert data["error"] == "simulated failure"
    assert data["outputs"] == []


async def test_sync_mode_waits_on_the_gateway_job_and_is_not_forwarded(
    gateway: Gateway, tenant: TenantHandle, simulator: Sim
) -> None:
    response = await tenant.client.post(
        PRO_T2I, json={"prompt": "a cat", "enable_sync_mode": True}
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["status"] == "completed"
    assert len(data["outputs"]) == 1
    [sent] = simulator.submits()
    assert "enable_sync_mode" not in sent.json
    assert sent.query["webhook"].endswith(f"/webhooks/wavespeed/{data['id']}")


async def test_sync_mode_timeout_answers_5004_and_the_task_goes_on(
    gateway_factory: GatewayFactory, simulator: Sim
) -> None:
    gateway = await gateway_factory(sync_mode_timeout_seconds=0.3)
    tenant = await gateway.new_tenant()
    simulator.config.faults.paused = True
    response = await tenant.client.post(
        PRO_T2I, json={"prompt": "slow", "enable_sync_mode": True}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["code"] == 200
    data = body["data"]
    assert data["status"] == "processing"
    assert data["code"] == 5004
    assert data["error"].startswith("Sync mode timed out")
    assert data["urls"]["get"] in data["error"]
    simulator.config.faults.paused = False
    finished = await poll_result(tenant.client, data["id"])
    assert finished["status"] == "completed"


async def test_data_uri_image_is_uploaded_before_the_edit(
    gateway: Gateway, tenant: TenantHandle, simulator: Sim
) -> None:
    png = render_png(1, "input", 8, 8)
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    response = await tenant.client.post(
        MAX_EDIT, json={"prompt": "make it blue", "image": uri, "enable_sync_mode": True}
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["status"] == "completed"
    [sent] = simulator.submits()
    assert sent.json["image"].startswith(f"{simulator.url}/media/")
    assert (await tenant.client.get(sent.json["image"])).content == png


async def test_binary_upload_is_passed_through(
    gateway: Gateway, tenant: TenantHandle, simulator: Sim
) -> None:
    png = render_png(2, "upload", 8, 8)
    boundary = "gateway-test-boundary"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cat.png\"\r\n"
        f"Content-Type: image/png\r\n\r\n"
    ).encode() + png + f"\r\n--{boundary}--\r\n".encode()
    content_type = f"multipart/form-data; boundary={boundary}"
    response = await tenant.client.post(
        "/api/v3/media/upload/binary", content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["filename"] == "cat.png" and data["size"] == len(png) and data["type"] == "image"
    assert (await tenant.client.get(data["download_url"])).content == png
    # Forwarded unchanged: the same bytes under the same content type (boundary included).
    [forwarded] = [r for r in simulator.state.requests if r.path == "/api/v3/media/upload/binary"]
    assert forwarded.headers["content-type"] == content_type
    assert forwarded.body_size == len(body)

    not_multipart = await tenant.client.post("/api/v3/media/upload/binary", content=png)
    assert_wavespeed_error(not_multipart, 400)
    no_file = await tenant.client.post(
        "/api/v3/media/upload/binary", files={"other": ("x.png", png, "image/png")}
    )
    assert "file" in assert_wavespeed_error(no_file, 400)


async def test_upload_ticket_is_passed_through_with_the_sdk_put_instruction(
    gateway: Gateway, tenant: TenantHandle
) -> None:
    png = render_png(3, "ticket", 8, 8)
    response = await tenant.client.post(
        "/api/v3/media/uploads",
        json={"filename": "dog.png", "size": len(png), "content_type": "image/png"},
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    instruction = data["upload"]
    assert instruction["method"] == "PUT"
    put = await tenant.client.put(instruction["url"], content=png, headers=instruction["headers"])
    assert put.status_code == 200
    assert (await tenant.client.get(data["download_url"])).content == png

    bad = await tenant.client.post("/api/v3/media/uploads", json={"size": -1})
    message = assert_wavespeed_error(bad, 400)
    assert "filename:" in message and "size:" in message


async def test_webhook_secret_is_the_tenants_own(gateway: Gateway, tenant: TenantHandle) -> None:
    response = await tenant.client.get("/api/v3/webhook/secret")
    assert response.status_code == 200, response.text
    secret = response.json()["data"]["secret"]
    stored = await gateway.services.store.get_tenant(tenant.id)
    assert stored is not None and secret == stored.webhook_secret
    assert secret == (await tenant.client.get("/v1/webhook-secret")).json()["secret"]
    assert secret.startswith("whsec_")
    other = await gateway.new_tenant()
    other_secret = (await other.client.get("/api/v3/webhook/secret")).json()["data"]["secret"]
    assert other_secret != secret


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes


def verify_v3(secret: str, delivery: Delivery) -> bool:
    """WaveSpeed's documented check, written out here rather than taken from the gateway: HMAC-
    SHA256 hex over ``{id}.{timestamp}.{body}``, key = the secret without ``whsec_``, as text."""
    headers = delivery.headers
    message = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + delivery.body
    expected = "v3," + hmac.new(secret.removeprefix("whsec_").encode(), message, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, s) for s in headers["webhook-signature"].split())


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[tuple[str, list[Delivery]]]:
    """A tenant's webhook endpoint on 127.0.0.1 that keeps every delivery it gets."""
    received: list[Delivery] = []

    async def hook(request: Request) -> Response:
        received.append(Delivery(dict(request.headers), await request.body()))
        return Response(status_code=200)

    served = await serve(Starlette(routes=[Route("/hook", hook, methods=["POST"])]))
    try:
        yield f"{served.url}/hook", received
    finally:
        await served.stop()


async def wait_deliveries(received: list[Delivery], count: int, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while len(received) < count:
        assert time.monotonic() < deadline, f"{len(received)} of {count} deliveries arrived"
        await asyncio.sleep(0.05)


async def test_webhook_query_calls_the_tenant_back_like_wavespeed(
    gateway: Gateway, tenant: TenantHandle, simulator: Sim
) -> None:
    secret = (await tenant.client.get("/api/v3/webhook/secret")).json()["data"]["secret"]
    other = await gateway.new_tenant()
    other_secret = (await other.client.get("/api/v3/webhook/secret")).json()["data"]["secret"]
    async with receiver() as (url, received):
        submitted = await tenant.client.post(
            PRO_T2I, params={"webhook": url}, json={"prompt": "a fox", "seed": 5}
        )
        assert submitted.status_code == 200, submitted.text
        prediction_id = submitted.json()["data"]["id"]
        await wait_deliveries(received, 1)
        [delivery] = received
    assert verify_v3(secret, delivery)
    assert not verify_v3(other_secret, delivery)
    assert not verify_v3(simulator.config.webhook_secret, delivery)
    assert delivery.headers["webhook-signature"].startswith("v3,")
    assert abs(int(delivery.headers["webhook-timestamp"]) - time.time()) < 300
    assert delivery.headers["content-type"] == "application/json"
    payload = json.loads(delivery.body)
    result = (await tenant.client.get(f"/api/v3/predictions/{prediction_id}/result")).json()["data"]
    # The bare prediction, no envelope: what GET .../result shows, plus the input.
    assert "code" not in payload and "data" not in payload
    assert payload["input"] == {"prompt": "a fox", "seed": 5, "guidance_scale": 3.5,
                                "aspect_ratio": "1:1", "safety_tolerance": "2"}
    assert {k: v for k, v in payload.items() if k != "input"} == result
    assert payload["id"] == prediction_id and payload["status"] == "completed"


async def test_webhook_reports_a_failed_job_too(
    gateway: Gateway, tenant: TenantHandle, simulator: Sim
) -> None:
    simulator.config.faults.failure_rate = 1.0
    secret = (await tenant.client.get("/api/v3/webhook/secret")).json()["data"]["secret"]
    async with receiver() as (url, received):
        await tenant.client.post(PRO_T2I, params={"webhook": url}, json={"prompt": "doomed"})
        await wait_deliveries(received, 1)
    [delivery] = received
    assert verify_v3(secret, delivery)
    payload = json.loads(delivery.body)
    assert payload["status"] == "failed" and payload["error"] == "simulated failure"
