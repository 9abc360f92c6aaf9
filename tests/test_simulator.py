"""The WaveSpeed simulator on its own: contract, validation, fault knobs, uploads, PNGs.

Most tests talk to the simulator in process (httpx.ASGITransport, lifespan entered); webhooks
go over a real socket to a small receiver app, and one test runs the simulator itself under
uvicorn to check what a real client sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import re
import struct
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.simulator import (
    Faults,
    SimulatedDisconnect,
    SimulatorConfig,
    SimulatorState,
    create_simulator_app,
    render_png,
)
from gateway.simulator.png import PNG_MAGIC, dimensions

T2I = "/api/v3/wavespeed-ai/flux-kontext-max/text-to-image"
EDIT = "/api/v3/wavespeed-ai/flux-kontext-max"
MULTI = "/api/v3/wavespeed-ai/flux-kontext-max/multi"
AUTH = {"Authorization": "Bearer sim-key"}
IMAGE_URL = "https://example.com/cat.png"


# --- harness -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[str]:
    """Run ``app`` under uvicorn on a free port; yield its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(5):
            while not server.started:  # uvicorn offers no event to await
                if task.done():
                    task.result()
                await asyncio.sleep(0.005)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 5)


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes

    @property
    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


@dataclass
class Receiver:
    """A tiny app collecting the webhooks the simulator sends it."""

    url: str = ""
    deliveries: list[Delivery] = field(default_factory=list)
    arrived: asyncio.Queue[Delivery] = field(default_factory=asyncio.Queue)

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            delivery = Delivery(dict(request.headers), await request.body())
            self.deliveries.append(delivery)
            self.arrived.put_nowait(delivery)
            return Response(status_code=204)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])

    async def next(self) -> Delivery:
        """The next delivery, waiting at most two seconds."""
        async with asyncio.timeout(2):
            return await self.arrived.get()


@dataclass
class Sim:
    app: Starlette
    client: httpx.AsyncClient
    receiver: Receiver

    @property
    def state(self) -> SimulatorState:
        state: SimulatorState = self.app.state.simulator
        return state

    async def submit(
        self, body: dict[str, Any], *, path: str = T2I, webhook: bool = True
    ) -> httpx.Response:
        params = {"webhook": self.receiver.url} if webhook else {}
        return await self.client.post(path, json=body, params=params, headers=AUTH)

    async def result(self, prediction_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/api/v3/predictions/{prediction_id}/result",
                                         headers=AUTH)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data


@contextlib.asynccontextmanager
async def simulator(config: SimulatorConfig) -> AsyncIterator[Sim]:
    """The simulator in process (lifespan entered) plus a webhook receiver on a socket."""
    receiver = Receiver()
    app = create_simulator_app(config)
    async with serve(receiver.app()) as receiver_url, app.router.lifespan_context(app):
        receiver.url = f"{receiver_url}/hook"
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=config.public_url) as client:
            yield Sim(app, client, receiver)


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    async with simulator(SimulatorConfig(public_url="http://sim.test")) as running:
        yield running


def expected_signature(secret: str, webhook_id: str, timestamp: str, body: bytes) -> str:
    """WaveSpeed's v3 signature, computed here independently of the gateway's code."""
    key = secret.removeprefix("whsec_").encode()
    message = f"{webhook_id}.{timestamp}.".encode() + body
    return "v3," + hmac.new(key, message, hashlib.sha256).hexdigest()


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR, checking the signature and the chunk's CRC."""
    assert data.startswith(PNG_MAGIC)
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR"
    chunk = data[12 : 16 + length]
    (crc,) = struct.unpack(">I", data[16 + length : 20 + length])
    assert zlib.crc32(chunk) == crc
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# --- the normal path ---------------------------------------------------------------------


async def test_submit_answers_created_then_completes(sim: Sim) -> None:
    response = await sim.submit({"prompt": "a red fox", "seed": 42}, webhook=False)

    assert response.status_code == 200
    envelope = response.json()
    assert (envelope["code"], envelope["message"]) == (200, "success")
    data = envelope["data"]
    assert re.fullmatch(r"[0-9a-f]{32}", data["id"])
    assert data["model"] == "wavespeed-ai/flux-kontext-max/text-to-image"
    assert data["status"] == "created"
    assert data["outputs"] == [] and data["has_nsfw_contents"] == [] and data["error"] == ""
    assert data["urls"]["get"] == f"http://sim.test/api/v3/predictions/{data['id']}/result"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", data["created_at"])
    assert data["timings"] == {"inference": 0}

    await sim.state.wait_idle()
    for path in (f"/api/v3/predictions/{data['id']}/result", f"/api/v3/predictions/{data['id']}"):
        result = (await sim.client.get(path, headers=AUTH)).json()["data"]
        assert result["status"] == "completed"
        assert result["outputs"] == [f"http://sim.test/outputs/{data['id']}/0.png"]
        assert result["has_nsfw_contents"] == [False]
        assert result["created_at"] == data["created_at"]


async def test_latency_keeps_the_task_processing(sim: Sim) -> None:
    sim.state.config.latency_seconds = 1.0  # far beyond the submit and the read on a slow run
    prediction_id = (await sim.submit({"prompt": "slow"}, webhook=False)).json()["data"]["id"]
    await asyncio.sleep(0.05)
    assert (await sim.result(prediction_id))["status"] == "processing"
    await sim.state.wait_idle()
    result = await sim.result(prediction_id)
    assert result["status"] == "completed"
    assert result["timings"]["inference"] >= 190  # asyncio may wake a hair early


async def test_webhook_is_the_bare_signed_prediction(sim: Sim) -> None:
    body = {"prompt": "a red fox", "seed": 7, "aspect_ratio": "16:9"}
    prediction_id = (await sim.submit(body)).json()["data"]["id"]

    delivery = await sim.receiver.next()
    headers = delivery.headers
    assert re.fullmatch(r"msg_[0-9a-f]+", headers["webhook-id"])
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert headers["content-type"] == "application/json"
    assert headers["webhook-signature"] == expected_signature(
        sim.state.config.webhook_secret, headers["webhook-id"], headers["webhook-timestamp"],
        delivery.body,
    )
    payload = delivery.payload
    assert "code" not in payload and "data" not in payload
    assert payload["id"] == prediction_id
    assert payload["input"] == body
    assert payload["status"] == "completed"
    assert payload["outputs"] == [f"http://sim.test/outputs/{prediction_id}/0.png"]
    await sim.state.wait_idle()
    [record] = sim.state.webhooks
    assert (record.webhook_id, record.response_status, record.error) == (
        headers["webhook-id"], 204, None,
    )


async def test_unknown_prediction_is_404(sim: Sim) -> None:
    response = await sim.client.get("/api/v3/predictions/" + "0" * 32 + "/result", headers=AUTH)
    assert response.status_code == 404
    assert response.json()["code"] == 404


async def test_account_endpoints(sim: Sim) -> None:
    secret = (await sim.client.get("/api/v3/webhook/secret", headers=AUTH)).json()["data"]
    assert secret == {"secret": sim.state.config.webhook_secret}
    assert secret["secret"].startswith("whsec_")
    balance = (await sim.client.get("/api/v3/balance", headers=AUTH)).json()["data"]
    assert balance == {"balance": 100.0}


# --- authentication, validation, request log ---------------------------------------------


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "sim-key"}]
)
async def test_bad_key_is_401(sim: Sim, headers: dict[str, str]) -> None:
    response = await sim.client.post(T2I, json={"prompt": "x"}, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"code": 401, "message": "Unauthorized"}
    assert sim.state.predictions == {}


async def test_unknown_headers_are_accepted(sim: Sim) -> None:
    headers = {**AUTH, "X-Client-Name": "wavespeed-python", "X-Client-Version": "2.0"}
    response = await sim.client.post(T2I, json={"prompt": "x"}, headers=headers)
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (T2I, {"prompt": "x", "seed": 2147483648}, "seed"),
        (T2I, {"prompt": "x", "seed": "7"}, "seed"),
        (T2I, {"prompt": "x", "style": "noir"}, "style"),
        (T2I, {"seed": 1}, "prompt"),
        (EDIT, {"prompt": "x", "image": "data:image/png;base64,iVBORw0KGgo="}, "image"),
        (MULTI, {"prompt": "x", "images": [IMAGE_URL, "data:image/png;base64,AA=="]}, "images"),
        (T2I, {"prompt": "x", "enable_sync_mode": "yes"}, "enable_sync_mode"),
    ],
)
async def test_invalid_input_is_400_naming_the_field(
    sim: Sim, path: str, body: dict[str, Any], field: str
) -> None:
    response = await sim.submit(body, path=path)
    assert response.status_code == 400
    envelope = response.json()
    assert envelope["code"] == 400
    assert envelope["message"].startswith(f"{field}: ")
    assert sim.state.predictions == {}


async def test_edit_with_url_images_is_accepted(sim: Sim) -> None:
    assert (await sim.submit({"prompt": "x", "image": IMAGE_URL}, path=EDIT)).status_code == 200
    multi = {"prompt": "x", "images": [IMAGE_URL, IMAGE_URL]}
    assert (await sim.submit(multi, path=MULTI)).status_code == 200


async def test_body_must_be_a_json_object(sim: Sim) -> None:
    response = await sim.client.post(T2I, content=b"[1]", headers=AUTH)
    assert response.status_code == 400
    assert response.json()["message"].startswith("body: ")


async def test_unknown_model_is_404(sim: Sim) -> None:
    response = await sim.submit({"prompt": "x"}, path="/api/v3/wavespeed-ai/flux-dev")
    assert response.status_code == 404
    assert response.json() == {"code": 404, "message": "model not found"}


async def test_requests_are_logged_with_authorization_redacted(sim: Sim) -> None:
    await sim.submit({"prompt": "logged"})
    [logged] = sim.state.requests
    assert (logged.method, logged.path) == ("POST", T2I)
    assert logged.query == {"webhook": sim.receiver.url}
    assert logged.headers["authorization"] == "Bearer ***"
    assert logged.json == {"prompt": "logged"}

    over_http = (await sim.client.get("/_sim/requests")).json()["data"]
    assert [r["path"] for r in over_http] == [T2I]
    assert "sim-key" not in json.dumps(over_http)

    await sim.client.post("/_sim/reset")
    assert sim.state.requests == [] and sim.state.webhooks == []


# --- fault knobs -------------------------------------------------------------------------


async def test_rate_429_creates_nothing(sim: Sim) -> None:
    sim.state.faults.rate_429 = 1
    response = await sim.submit({"prompt": "x"})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.json()["code"] == 429
    assert sim.state.predictions == {}


async def test_rate_5xx_creates_nothing(sim: Sim) -> None:
    sim.state.faults.rate_5xx = 1
    response = await sim.submit({"prompt": "x"})
    assert response.status_code == 500
    assert sim.state.predictions == {}


async def test_lost_answer_still_runs_the_task_and_sends_the_webhook(sim: Sim) -> None:
    sim.state.faults.lost_answer_rate = 1
    response = await sim.submit({"prompt": "x"})
    assert response.status_code == 500
    assert "id" not in response.text
    [prediction_id] = sim.state.predictions
    delivery = await sim.receiver.next()
    assert delivery.payload["id"] == prediction_id
    assert delivery.payload["status"] == "completed"


async def test_disconnect_in_process_raises_a_protocol_error(sim: Sim) -> None:
    sim.state.faults.disconnect_rate = 1
    with pytest.raises(httpx.RemoteProtocolError) as raised:
        await sim.submit({"prompt": "x"})
    assert isinstance(raised.value, SimulatedDisconnect)
    [prediction_id] = sim.state.predictions
    assert (await sim.receiver.next()).payload["id"] == prediction_id


async def test_webhook_lost_sends_nothing(sim: Sim) -> None:
    sim.state.faults.webhook_lost_rate = 1
    await sim.submit({"prompt": "x"})
    await sim.state.wait_idle()
    assert sim.receiver.deliveries == []
    [record] = sim.state.webhooks
    assert record.sent is False


async def test_webhook_duplicate_sends_the_same_delivery_twice(sim: Sim) -> None:
    sim.state.faults.webhook_duplicate_rate = 1
    await sim.submit({"prompt": "x"})
    await sim.state.wait_idle()
    first, second = sim.receiver.deliveries
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body


async def test_webhook_reorder_sends_a_stale_processing_after_the_terminal(sim: Sim) -> None:
    sim.state.faults.webhook_reorder_rate = 1
    await sim.submit({"prompt": "x"})
    await sim.state.wait_idle()
    terminal, stale = sim.receiver.deliveries
    assert terminal.payload["status"] == "completed"
    assert stale.payload["status"] == "processing" and stale.payload["outputs"] == []
    assert stale.payload["id"] == terminal.payload["id"]
    assert stale.headers["webhook-id"] != terminal.headers["webhook-id"]
    assert stale.headers["webhook-signature"] == expected_signature(
        sim.state.config.webhook_secret, stale.headers["webhook-id"],
        stale.headers["webhook-timestamp"], stale.body,
    )


async def test_webhook_delay_sends_it_late(sim: Sim) -> None:
    sim.state.faults.webhook_delay_seconds = 1.0  # far beyond the submit and the read
    started = time.monotonic()
    prediction_id = (await sim.submit({"prompt": "x"})).json()["data"]["id"]
    await asyncio.sleep(0.05)
    assert (await sim.result(prediction_id))["status"] == "completed"
    assert sim.receiver.deliveries == []
    await sim.receiver.next()
    assert time.monotonic() - started >= 0.99


async def test_failure_rate_ends_failed(sim: Sim) -> None:
    sim.state.faults.failure_rate = 1
    prediction_id = (await sim.submit({"prompt": "x"})).json()["data"]["id"]
    payload = (await sim.receiver.next()).payload
    assert payload["status"] == "failed"
    assert payload["error"] == "simulated failure"
    assert payload["outputs"] == []
    result = await sim.result(prediction_id)
    assert (result["status"], result["error"]) == ("failed", "simulated failure")
    response = await sim.client.get(f"/outputs/{prediction_id}/0.png")
    assert response.status_code == 404


async def test_get_5xx_rate_answers_503(sim: Sim) -> None:
    prediction_id = (await sim.submit({"prompt": "x"}, webhook=False)).json()["data"]["id"]
    sim.state.faults.get_5xx_rate = 1
    response = await sim.client.get(f"/api/v3/predictions/{prediction_id}/result", headers=AUTH)
    assert response.status_code == 503


async def test_paused_tasks_finish_when_unpaused(sim: Sim) -> None:
    sim.state.faults.paused = True
    prediction_id = (await sim.submit({"prompt": "x"})).json()["data"]["id"]
    await asyncio.sleep(0.05)
    assert (await sim.result(prediction_id))["status"] == "processing"
    assert sim.receiver.deliveries == []
    sim.state.faults.paused = False
    assert (await sim.receiver.next()).payload["status"] == "completed"


async def test_faults_are_settable_over_http(sim: Sim) -> None:
    response = await sim.client.post("/_sim/faults", json={"failure_rate": 0.5, "paused": True})
    assert response.status_code == 200
    assert response.json()["data"] == Faults(failure_rate=0.5, paused=True).as_dict()
    assert sim.state.faults.failure_rate == 0.5 and sim.state.faults.paused is True

    for bad in ({"nonsense": 1}, {"rate_429": 2}, {"paused": "yes"}, {"failure_rate": 0, "x": 1}):
        response = await sim.client.post("/_sim/faults", json=bad)
        assert response.status_code == 400, bad
        assert response.json()["code"] == 400
    assert sim.state.faults.failure_rate == 0.5  # a refused update changes nothing


async def test_fault_decisions_are_reproducible_with_a_seed() -> None:
    async def statuses(seed: int) -> list[str]:
        config = SimulatorConfig(public_url="http://sim.test", seed=seed,
                                 faults=Faults(failure_rate=0.5))
        async with simulator(config) as running:
            for _ in range(12):
                await running.submit({"prompt": "x"}, webhook=False)
                await running.state.wait_idle()
            return [p.status for p in running.state.predictions.values()]

    first = await statuses(7)
    assert first == await statuses(7)
    assert {"completed", "failed"} == set(first)


# --- sync mode ---------------------------------------------------------------------------


async def test_sync_mode_answers_the_finished_prediction(sim: Sim) -> None:
    response = await sim.submit({"prompt": "x", "enable_sync_mode": True})
    data = response.json()["data"]
    assert data["status"] == "completed"
    assert data["outputs"] == [f"http://sim.test/outputs/{data['id']}/0.png"]


async def test_sync_mode_times_out_with_code_5004() -> None:
    config = SimulatorConfig(public_url="http://sim.test", sync_timeout_seconds=0.05,
                             faults=Faults(paused=True))
    async with simulator(config) as sim:
        response = await sim.submit({"prompt": "x", "enable_sync_mode": True})
        assert response.status_code == 200
        data = response.json()["data"]
        assert data["status"] == "processing"
        assert data["code"] == 5004
        assert data["error"].startswith("Sync mode timed out")
        sim.state.faults.paused = False
        await sim.state.wait_idle()
        assert (await sim.result(data["id"]))["status"] == "completed"


# --- media -------------------------------------------------------------------------------


async def test_binary_upload_serves_the_same_bytes(sim: Sim) -> None:
    content = bytes(range(256)) + b"\r\n--boundary-like\r\n"
    files = {"file": ("photo one.png", content, "image/png")}
    response = await sim.client.post("/api/v3/media/upload/binary", files=files, headers=AUTH)
    data = response.json()["data"]
    assert data["type"] == "image"
    assert data["filename"] == "photo one.png"
    assert data["size"] == len(content)
    assert data["download_url"].startswith("http://sim.test/media/")
    download = await sim.client.get(data["download_url"])
    assert download.content == content
    assert download.headers["content-type"] == "image/png"


async def test_binary_upload_without_file_is_400(sim: Sim) -> None:
    files = {"other": ("a.png", b"x", "image/png")}
    response = await sim.client.post("/api/v3/media/upload/binary", files=files, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["message"].startswith("file: ")


async def test_presigned_upload_round_trip(sim: Sim) -> None:
    content = b"\x89PNG fake image"
    request = {"filename": "cat.png", "size": len(content), "content_type": "image/png"}
    response = await sim.client.post("/api/v3/media/uploads", json=request, headers=AUTH)
    data = response.json()["data"]
    assert (await sim.client.get(data["download_url"])).status_code == 404
    put = await sim.client.put(data["upload_url"], content=content,
                               headers={"Content-Type": "image/png"})
    assert put.status_code == 200
    download = await sim.client.get(data["download_url"])
    assert download.content == content
    assert download.headers["content-type"] == "image/png"
    unknown = await sim.client.put("/media/put/nope", content=b"x")
    assert unknown.status_code == 404


# --- PNG outputs -------------------------------------------------------------------------


def test_render_png_is_deterministic_and_small() -> None:
    first = render_png(1, "a cat", 64, 64)
    assert first == render_png(1, "a cat", 64, 64)
    assert first != render_png(2, "a cat", 64, 64)
    assert first != render_png(1, "a dog", 64, 64)
    for ratio in ("21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21"):
        width, height = dimensions(ratio)
        data = render_png(3, "x" * 50, width, height)
        assert png_size(data) == (width, height)
        assert len(data) < 20_000
    assert dimensions("16:9") == (64, 36)
    assert dimensions("9:16") == (36, 64)


async def test_output_png_follows_seed_prompt_and_aspect_ratio(sim: Sim) -> None:
    async def output(body: dict[str, Any]) -> bytes:
        data = (await sim.submit(body, webhook=False)).json()["data"]
        await sim.state.wait_idle()
        [url] = (await sim.result(data["id"]))["outputs"]
        response = await sim.client.get(url)
        assert response.headers["content-type"] == "image/png"
        return response.content

    body = {"prompt": "a lighthouse", "seed": 5, "aspect_ratio": "16:9"}
    first = await output(body)
    assert png_size(first) == (64, 36)
    assert first == await output(body)
    assert first != await output({**body, "seed": 6})
    assert first == render_png(5, "a lighthouse", 64, 36)


# --- over real sockets -------------------------------------------------------------------


async def test_over_real_sockets_webhook_signature_and_png() -> None:
    receiver = Receiver()
    config = SimulatorConfig()
    sim_app = create_simulator_app(config)
    async with serve(receiver.app()) as receiver_url, serve(sim_app) as sim_url:
        config.public_url = sim_url  # known only once the socket is bound
        async with httpx.AsyncClient(base_url=sim_url, timeout=5) as client:
            response = await client.post(
                T2I, json={"prompt": "a red fox", "seed": 11},
                params={"webhook": f"{receiver_url}/hook"}, headers=AUTH,
            )
            assert response.status_code == 200
            prediction_id = response.json()["data"]["id"]

            delivery = await receiver.next()
            headers = delivery.headers
            secret = config.webhook_secret.removeprefix("whsec_")
            digest = hmac.new(
                secret.encode(),
                f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + delivery.body,
                hashlib.sha256,
            ).hexdigest()
            assert headers["webhook-signature"] == f"v3,{digest}"
            payload = delivery.payload
            assert "data" not in payload
            assert (payload["id"], payload["status"]) == (prediction_id, "completed")
            [output_url] = payload["outputs"]
            assert output_url == f"{sim_url}/outputs/{prediction_id}/0.png"

            png = await client.get(output_url)
            assert png.status_code == 200
            assert png.content.startswith(b"\x89PNG\r\n\x1a\n")


async def test_disconnect_over_a_real_socket_sends_no_answer() -> None:
    receiver = Receiver()
    config = SimulatorConfig(faults=Faults(disconnect_rate=1))
    sim_app = create_simulator_app(config)
    state: SimulatorState = sim_app.state.simulator
    async with serve(receiver.app()) as receiver_url, serve(sim_app) as sim_url:
        async with httpx.AsyncClient(base_url=sim_url, timeout=5) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.post(T2I, json={"prompt": "x"},
                                  params={"webhook": f"{receiver_url}/hook"}, headers=AUTH)
        [prediction_id] = state.predictions
        assert (await receiver.next()).payload["id"] == prediction_id
