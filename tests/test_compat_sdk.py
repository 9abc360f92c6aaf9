"""WaveSpeed's official Python SDK (the ``wavespeed`` package), unchanged, pointed at the gateway
with a tenant key: ``run`` for each seed model, sync mode and its timeout, ``get_result``,
``upload``, and the errors it reports. The SDK is synchronous (requests), so it runs in a
thread while the gateway and the simulator keep serving in the test's loop; every connection
it opens is checked to stay on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3.util.connection
from wavespeed import Client

from gateway.simulator.png import render_png
from tests.conftest import Gateway, GatewayFactory, Sim, TenantHandle

MAX_T2I = "wavespeed-ai/flux-kontext-max/text-to-image"
PRO_T2I = "wavespeed-ai/flux-kontext-pro/text-to-image"
MAX_EDIT = "wavespeed-ai/flux-kontext-max"
MAX_MULTI = "wavespeed-ai/flux-kontext-max/multi"


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Refuse any connection the SDK (requests/urllib3) opens to a host other than 127.0.0.1,
    and keep a proxy from the environment out of the way (requests would honour it)."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    opened: list[str] = []
    real = urllib3.util.connection.create_connection

    def guarded(address: tuple[str, int], *args: Any, **kwargs: Any) -> Any:
        host = address[0]
        if host not in ("127.0.0.1", "localhost"):
            raise AssertionError(f"the SDK tried to reach {host}")
        opened.append(host)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", guarded)
    yield opened


def sdk(gateway: Gateway, tenant: TenantHandle) -> Client:
    """The SDK's client with the two lines a service changes: base URL and key."""
    assert gateway.url.startswith("http://127.0.0.1:")
    return Client(api_key=tenant.key, base_url=gateway.url, max_retries=0, retry_interval=0.05)


def png_file(tmp_path: Path, name: str, seed: int) -> Path:
    path = tmp_path / name
    path.write_bytes(render_png(seed, name, 16, 16))
    return path


async def test_run_each_seed_model_with_uploaded_inputs(
    gateway: Gateway, tenant: TenantHandle, simulator: Sim, tmp_path: Path, loopback_only: list[str]
) -> None:
    client = sdk(gateway, tenant)
    first = png_file(tmp_path, "room.png", 1)
    second = png_file(tmp_path, "chair.png", 2)
    first_url = await asyncio.to_thread(client.upload, str(first))
    second_url = await asyncio.to_thread(client.upload, str(second))
    assert first_url.startswith(f"{simulator.url}/media/")
    assert (await tenant.client.get(first_url)).content == first.read_bytes()

    inputs: dict[str, dict[str, Any]] = {
        MAX_T2I: {"prompt": "a lighthouse at dusk", "seed": 42, "aspect_ratio": "16:9"},
        PRO_T2I: {"prompt": "a red fox in snow", "safety_tolerance": "4", "guidance_scale": 5.0},
        MAX_EDIT: {"prompt": "make it night", "image": first_url, "enable_safety_checker": True},
        MAX_MULTI: {"prompt": "put the chair in the room", "images": [first_url, second_url]},
    }
    outputs: dict[str, list[str]] = {}
    for model, body in inputs.items():
        result = await asyncio.to_thread(client.run, model, body, timeout=20, poll_interval=0.05)
        outputs[model] = result["outputs"]
        assert len(result["outputs"]) == 1
        image = await tenant.client.get(result["outputs"][0])
        assert image.headers["content-type"] == "image/png"

    # The SDK's jobs are ordinary gateway jobs of this tenant, with the same records as /v1.
    listed = (await tenant.client.get("/v1/jobs")).json()["data"]
    by_model = {job["wavespeed_model_id"]: job for job in listed}
    assert set(by_model) == set(inputs)
    for model, job in by_model.items():
        assert job["status"] == "completed"
        assert job["outputs"] == outputs[model]
        events = (await tenant.client.get(f"/v1/jobs/{job['id']}")).json()["events"]
        assert (events[0]["to"], events[-1]["to"]) == ("queued", "completed")
    assert by_model[MAX_EDIT]["inputs"]["image"] == first_url
    assert by_model[MAX_MULTI]["inputs"]["images"] == [first_url, second_url]
    assert by_model[PRO_T2I]["cost_usd"] == "0.04"
    # WaveSpeed received each body as the SDK sent it (defaults filled in), under the gateway's key.
    sent = {r.path.removeprefix("/api/v3/"): r.json for r in simulator.submits()}
    assert sent[MAX_T2I] == {**inputs[MAX_T2I], "guidance_scale": 3.5}
    assert sent[MAX_MULTI] == {**inputs[MAX_MULTI], "guidance_scale": 3.5}
    assert loopback_only and set(loopback_only) == {"127.0.0.1"}


async def test_get_result_returns_the_envelope_of_a_finished_job(
    gateway: Gateway, tenant: TenantHandle
) -> None:
    client = sdk(gateway, tenant)
    await asyncio.to_thread(client.run, PRO_T2I, {"prompt": "a teapot"}, timeout=20, poll_interval=0.05)
    [job] = (await tenant.client.get("/v1/jobs")).json()["data"]
    result = await asyncio.to_thread(client.get_result, job["id"])
    assert result["code"] == 200 and result["message"] == "success"
    data = result["data"]
    assert data["id"] == job["id"]
    assert data["status"] == "completed"
    assert data["outputs"] == job["outputs"]
    assert data["model"] == PRO_T2I


async def test_sync_mode_returns_the_result_in_one_request(
    gateway: Gateway, tenant: TenantHandle, simulator: Sim
) -> None:
    client = sdk(gateway, tenant)
    result = await asyncio.to_thread(
        client.run, MAX_T2I, {"prompt": "a cat on a windowsill"}, enable_sync_mode=True, timeout=20
    )
    assert len(result["outputs"]) == 1
    [job] = (await tenant.client.get("/v1/jobs")).json()["data"]
    assert job["status"] == "completed" and job["outputs"] == result["outputs"]
    # The gateway waited on its own job: WaveSpeed got an ordinary submit with a webhook.
    [submitted] = simulator.submits()
    assert "enable_sync_mode" not in submitted.json
    assert submitted.query["webhook"].endswith(f"/webhooks/wavespeed/{job['id']}")


async def test_sync_mode_timeout_is_recoverable_with_get_result(
    gateway_factory: GatewayFactory, simulator: Sim
) -> None:
    gateway = await gateway_factory(sync_mode_timeout_seconds=0.3)
    tenant = await gateway.new_tenant()
    client = sdk(gateway, tenant)
    simulator.config.faults.paused = True
    outcome = await asyncio.to_thread(
        client.run_no_throw, PRO_T2I, {"prompt": "slow"}, enable_sync_mode=True, timeout=20
    )
    assert outcome["status"] == "processing"
    assert outcome["outputs"] is None
    assert "Sync mode timed out" in outcome["error"]
    task_id = outcome["task_id"]
    assert task_id.startswith("job_")
    with pytest.raises(RuntimeError, match="Sync mode timed out"):
        await asyncio.to_thread(
            client.run, PRO_T2I, {"prompt": "slow too"}, enable_sync_mode=True, timeout=20
        )
    simulator.config.faults.paused = False
    deadline = time.monotonic() + 10
    while True:
        result = await asyncio.to_thread(client.get_result, task_id)
        if result["data"]["status"] == "completed":
            break
        assert time.monotonic() < deadline, result
        await asyncio.sleep(0.05)
    assert len(result["data"]["outputs"]) == 1


async def test_failures_reach_the_sdk_as_its_own_errors(
    gateway: Gateway, tenant: TenantHandle, simulator: Sim
) -> None:
    client = sdk(gateway, tenant)
    with pytest.raises(RuntimeError, match=r"HTTP 400: .*seed:"):
        await asyncio.to_thread(client.run, PRO_T2I, {"prompt": "x", "seed": -7})
    with pytest.raises(RuntimeError, match="HTTP 404"):
        await asyncio.to_thread(client.run, "wavespeed-ai/flux-dev", {"prompt": "x"})
    wrong_key = Client(api_key="kgw_live_not_a_key", base_url=gateway.url, max_retries=0)
    with pytest.raises(RuntimeError, match="HTTP 401"):
        await asyncio.to_thread(wrong_key.run, PRO_T2I, {"prompt": "x"})
    simulator.config.faults.failure_rate = 1.0
    with pytest.raises(RuntimeError, match=r"Prediction failed \(task_id: job_\w+\): simulated failure"):
        await asyncio.to_thread(client.run, PRO_T2I, {"prompt": "doomed"}, timeout=20, poll_interval=0.05)
    # Only the last one became a job: refused requests leave no record.
    [job] = (await tenant.client.get("/v1/jobs")).json()["data"]
    assert job["status"] == "failed"


SCRIPT = """
import sys
import wavespeed

wavespeed.config.api.base_url = sys.argv[1]
output = wavespeed.run(
    "wavespeed-ai/flux-kontext-pro/text-to-image", {"prompt": "a cat"}, poll_interval=0.05, timeout=20
)
print(output["outputs"][0])
"""


async def test_module_level_sdk_with_env_key_and_base_url(
    gateway: Gateway, tenant: TenantHandle, tmp_path: Path
) -> None:
    """The README's migration as a service would write it: WAVESPEED_API_KEY in the
    environment, ``wavespeed.config.api.base_url`` set once, ``wavespeed.run`` unchanged."""
    script = tmp_path / "service.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "WAVESPEED_API_KEY": tenant.key}
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(script), gateway.url, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()
    [job] = (await tenant.client.get("/v1/jobs")).json()["data"]
    assert stdout.decode().strip() == job["outputs"][0]
