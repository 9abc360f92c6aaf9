"""Each seed model end to end over real sockets: the tenant's request, the exact body WaveSpeed
(the simulator) received, its signed webhook back, and the completed job with its events."""

from __future__ import annotations

import base64
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Gateway, Sim, TenantHandle, in_process_gateway
from tests.helpers import submits_for, wait_job

IMAGE_A = "https://images.example/a.png"
IMAGE_B = "https://images.example/b.webp"
IMAGE_C = "https://images.example/c.jpg"

# (tenant request, WaveSpeed model id, the exact body WaveSpeed must receive, price per image)
CASES: list[tuple[str, dict[str, Any], str, dict[str, Any], str]] = [
    (
        "max-text-to-image",
        {"model": "flux-kontext-max", "prompt": "a lighthouse at dusk", "seed": 42},
        "wavespeed-ai/flux-kontext-max/text-to-image",
        {"prompt": "a lighthouse at dusk", "seed": 42, "guidance_scale": 3.5, "aspect_ratio": "1:1"},
        "0.08",
    ),
    (
        "pro-text-to-image",
        {"model": "flux-kontext-pro", "prompt": "a red fox in snow", "safety_tolerance": "4",
         "aspect_ratio": "16:9", "guidance_scale": 7},
        "wavespeed-ai/flux-kontext-pro/text-to-image",
        {"prompt": "a red fox in snow", "safety_tolerance": "4", "aspect_ratio": "16:9",
         "guidance_scale": 7.0},
        "0.04",
    ),
    (
        "max-edit",
        {"model": "flux-kontext-max", "prompt": "to ghibli style", "images": [IMAGE_A],
         "seed": -1, "enable_safety_checker": False, "metadata": {"order": 7},
         "callback_url": "http://127.0.0.1:9/never", "wait": 0},
        "wavespeed-ai/flux-kontext-max",
        {"prompt": "to ghibli style", "image": IMAGE_A, "seed": -1, "guidance_scale": 3.5,
         "enable_safety_checker": False},
        "0.08",
    ),
    (
        "max-multi",
        {"model": "flux-kontext-max", "task": "edit", "prompt": "put them in one room",
         "images": [IMAGE_A, IMAGE_B, IMAGE_C], "aspect_ratio": "3:2"},
        "wavespeed-ai/flux-kontext-max/multi",
        {"prompt": "put them in one room", "images": [IMAGE_A, IMAGE_B, IMAGE_C],
         "guidance_scale": 3.5, "aspect_ratio": "3:2"},
        "0.08",
    ),
]


@pytest.mark.parametrize(
    ("request_body", "wavespeed_id", "upstream_body", "price"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_model_end_to_end(
    gateway: Gateway, tenant: TenantHandle, simulator: Sim,
    request_body: dict[str, Any], wavespeed_id: str, upstream_body: dict[str, Any], price: str,
) -> None:
    response = await tenant.client.post("/v1/jobs", json=request_body)
    assert response.status_code == 202, response.text
    accepted = response.json()
    job_id = accepted["id"]
    assert accepted["status"] == "queued"
    assert accepted["wavespeed_model_id"] == wavespeed_id
    assert response.headers["location"] == f"/v1/jobs/{job_id}"

    job = await wait_job(tenant.client, job_id)

    [submit] = submits_for(simulator, job_id)
    assert submit.path == f"/api/v3/{wavespeed_id}"
    assert submit.query == {"webhook": f"{gateway.url}/webhooks/wavespeed/{job_id}"}
    assert submit.json == upstream_body  # defaults filled, nothing of the gateway's own
    assert submit.headers["authorization"] == "Bearer ***"  # the simulator masks it in its log
    [prediction] = [p for p in simulator.state.predictions.values() if p.id == job["upstream_id"]]
    assert prediction.input == upstream_body

    assert job["status"] == "completed", job
    assert job["model"] == request_body["model"]
    assert job["wavespeed_model_id"] == wavespeed_id
    assert job["inputs"] == upstream_body
    assert job["outputs"] == prediction.outputs
    assert job["outputs"] == [f"{simulator.url}/outputs/{prediction.id}/0.png"]
    assert job["has_nsfw_contents"] == [False]
    assert job["error"] is None
    assert job["cost_usd"] == price
    assert job["price_usd"] == price
    assert job["metadata"] == request_body.get("metadata")
    assert [(e["from"], e["to"], e["source"]) for e in job["events"]] == [
        (None, "queued", "api"),
        ("queued", "submitted", "dispatcher"),
        ("submitted", "completed", "webhook"),
    ]
    assert [e["seq"] for e in job["events"]] == [1, 2, 3]
    assert job["timings"]["finished_at"] is not None

    [delivery] = [w for w in simulator.state.webhooks if w.prediction_id == prediction.id]
    assert delivery.url == submit.query["webhook"]
    assert delivery.response_status == 200

    # The output URL is WaveSpeed's, passed through unchanged, and serves a PNG.
    async with httpx.AsyncClient() as plain:
        image = await plain.get(job["outputs"][0])
    assert image.status_code == 200
    assert image.content.startswith(b"\x89PNG\r\n\x1a\n")


async def test_data_uri_is_uploaded_and_submitted_as_a_url(
    gateway: Gateway, tenant: TenantHandle, simulator: Sim
) -> None:
    picture = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    data_uri = "data:image/png;base64," + base64.b64encode(picture).decode()
    response = await tenant.client.post(
        "/v1/jobs",
        json={"model": "flux-kontext-max", "prompt": "make it blue", "images": [data_uri]},
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    job = await wait_job(tenant.client, job_id)
    assert job["status"] == "completed", job

    uploads = [r for r in simulator.state.requests if r.path == "/api/v3/media/upload/binary"]
    assert len(uploads) == 1
    assert uploads[0].method == "POST"
    assert uploads[0].headers["content-type"].startswith("multipart/form-data")
    [stored] = simulator.state.media.files.values()
    assert stored.data == picture
    assert stored.content_type == "image/png"
    download_url = f"{simulator.url}/media/{stored.name}"

    [submit] = submits_for(simulator, job_id)
    assert submit.path == "/api/v3/wavespeed-ai/flux-kontext-max"
    assert submit.json == {
        "prompt": "make it blue", "image": download_url, "guidance_scale": 3.5,
        "enable_safety_checker": True,
    }
    assert job["inputs"]["image"] == download_url
    async with httpx.AsyncClient() as plain:
        fetched = await plain.get(download_url)
    assert fetched.content == picture


async def test_multi_with_data_uris_and_urls_mixed(
    gateway: Gateway, tenant: TenantHandle, simulator: Sim
) -> None:
    first = b"GIF89a-first"
    data_uri = "data:image/gif;base64," + base64.b64encode(first).decode()
    response = await tenant.client.post(
        "/v1/jobs",
        json={"model": "flux-kontext-max", "prompt": "combine", "images": [IMAGE_A, data_uri]},
    )
    assert response.status_code == 202, response.text
    job = await wait_job(tenant.client, response.json()["id"])
    assert job["status"] == "completed", job
    [stored] = simulator.state.media.files.values()
    assert stored.data == first
    [submit] = submits_for(simulator, job["id"])
    assert submit.json["images"] == [IMAGE_A, f"{simulator.url}/media/{stored.name}"]
    assert "image" not in submit.json


async def test_models_lists_the_four_endpoints_with_prices(tenant: TenantHandle) -> None:
    response = await tenant.client.get("/v1/models")
    assert response.status_code == 200, response.text
    models = {m["wavespeed_id"]: m for m in response.json()["data"]}
    assert {k: (m["model"], m["task"], m["price_usd"]) for k, m in models.items()} == {
        "wavespeed-ai/flux-kontext-max/text-to-image": ("flux-kontext-max", "text-to-image", "0.08"),
        "wavespeed-ai/flux-kontext-pro/text-to-image": ("flux-kontext-pro", "text-to-image", "0.04"),
        "wavespeed-ai/flux-kontext-max": ("flux-kontext-max", "edit", "0.08"),
        "wavespeed-ai/flux-kontext-max/multi": ("flux-kontext-max", "edit", "0.08"),
    }
    for model in models.values():
        assert Decimal(model["price_usd"]) > 0
        assert model["parameters"]["prompt"]["required"] is True
    pro = models["wavespeed-ai/flux-kontext-pro/text-to-image"]["parameters"]
    assert pro["safety_tolerance"]["enum"] == ["1", "2", "3", "4", "5"]
    assert pro["seed"]["minimum"] == -1 and pro["seed"]["maximum"] == 2147483647
    assert pro["guidance_scale"] == {
        "type": "number", "required": False, "default": 3.5, "minimum": 1.0, "maximum": 20.0,
    }
    assert "seed" not in models["wavespeed-ai/flux-kontext-max/multi"]["parameters"]
    assert models["wavespeed-ai/flux-kontext-max"]["parameters"]["image"]["required"] is True
    assert models["wavespeed-ai/flux-kontext-max/multi"]["parameters"]["images"]["type"] == "array"

    anonymous = await tenant.client.get("/v1/models", headers={"Authorization": ""})
    assert anonymous.status_code == 401


async def test_full_wavespeed_id_selects_the_same_endpoint(
    gateway: Gateway, tenant: TenantHandle, simulator: Sim
) -> None:
    response = await tenant.client.post(
        "/v1/jobs",
        json={"model": "wavespeed-ai/flux-kontext-pro/text-to-image", "prompt": "p", "wait": 10},
    )
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "completed"
    assert job["model"] == "flux-kontext-pro"
    [submit] = submits_for(simulator, job["id"])
    assert submit.path == "/api/v3/wavespeed-ai/flux-kontext-pro/text-to-image"
    assert submit.json == {
        "prompt": "p", "guidance_scale": 3.5, "aspect_ratio": "1:1", "safety_tolerance": "2",
    }


async def test_an_image_wavespeed_refuses_to_take_is_a_422_on_that_image(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path) as gateway:
        sim: Sim = gateway.simulator  # type: ignore[attr-defined]
        sim.config.max_upload_bytes = 1000  # the whole multipart body
        tenant = await gateway.new_tenant()
        small = "data:image/png;base64," + base64.b64encode(b"s" * 50).decode()
        large = "data:image/png;base64," + base64.b64encode(b"L" * 2000).decode()
        response = await tenant.client.post(
            "/v1/jobs",
            json={"model": "flux-kontext-max", "prompt": "x", "images": [IMAGE_A, small, large]},
        )
        assert response.status_code == 422, response.text
        [detail] = response.json()["error"]["details"]
        assert detail["field"] == "images[2]"
        assert "file too large" in detail["message"]
        assert (await tenant.client.get("/v1/jobs")).json()["data"] == []
        assert sim.submits() == []


async def test_an_upload_wavespeed_fails_to_take_is_a_502(tmp_path: Path) -> None:
    """Not the image's fault (here WaveSpeed refuses the gateway's own key): 502, no job."""
    async with in_process_gateway(tmp_path, wavespeed_api_key="not-the-account-key") as gateway:
        tenant = await gateway.new_tenant()
        picture = "data:image/png;base64," + base64.b64encode(b"p" * 50).decode()
        response = await tenant.client.post(
            "/v1/jobs", json={"model": "flux-kontext-max", "prompt": "x", "images": [picture]}
        )
        assert response.status_code == 502, response.text
        assert response.json()["error"]["code"] == "upload_failed"
        assert "not-the-account-key" not in response.text
        assert (await tenant.client.get("/v1/jobs")).json()["data"] == []
