"""The shortest whole path: one job, over real sockets, from request to completed."""

from __future__ import annotations

import asyncio
import gc
import os
import shlex
import sys
from pathlib import Path

import httpx

from gateway import collector
from tests.conftest import Gateway, TenantHandle, in_process_gateway


async def test_text_to_image_completes_over_sockets(gateway: Gateway, tenant: TenantHandle) -> None:
    response = await tenant.client.post(
        "/v1/jobs", json={"model": "flux-kontext-pro", "prompt": "a fox", "wait": 10}
    )
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "completed"
    assert [e["to"] for e in job["events"]] == ["queued", "submitted", "completed"]
    assert job["outputs"] and job["outputs"][0].endswith(".png")


async def test_in_process_accepts_and_validates(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path) as gateway:
        tenant = await gateway.new_tenant()
        bad = await tenant.client.post("/v1/jobs", json={"model": "flux-kontext-max", "seed": -5})
        assert bad.status_code == 422
        fields = {d["field"] for d in bad.json()["error"]["details"]}
        assert fields == {"prompt", "seed"}
        ok = await tenant.client.post("/v1/jobs", json={"model": "flux-kontext-max", "prompt": "x"})
        assert ok.status_code == 202
        assert ok.json()["status"] == "queued"


async def test_the_collector_is_tuned_while_serving_and_restored_after(tmp_path: Path) -> None:
    defaults = gc.get_threshold()
    assert defaults[0] != collector.GEN0_THRESHOLD
    async with in_process_gateway(tmp_path) as gateway:
        assert gc.get_threshold() == (collector.GEN0_THRESHOLD, defaults[1], defaults[2])
        assert gc.get_freeze_count() > 0  # what start-up built is out of the collections' way
        tenant = await gateway.new_tenant()
        created = await tenant.client.post("/v1/jobs", json={"model": "flux-kontext-pro", "prompt": "p"})
        assert created.status_code == 202, created.text
    assert gc.get_threshold() == defaults
    assert gc.get_freeze_count() == 0


async def test_gateway_dev_prints_a_curl_line_that_completes_a_job(tmp_path: Path) -> None:
    """What `make run` starts: the curl line it prints, read as a shell reads it, completes a
    job, against the built-in simulator even when a WaveSpeed key is in the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({
        "GATEWAY_PORT": "0", "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path}/dev.db",
        "GATEWAY_WAVESPEED_API_KEY": "a-real-key-that-must-not-be-used",
    })
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "dev", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        printed: list[str] = []
        while not printed or not printed[-1].lstrip().startswith("curl "):
            line = await asyncio.wait_for(process.stdout.readline(), 60)
            assert line, f"gateway dev ended: {printed}"
            printed.append(line.decode())
        words = shlex.split(printed[-1])
        assert words[:2] == ["curl", "-s"]
        headers = dict(
            words[i + 1].split(": ", 1) for i, word in enumerate(words) if word == "-H"
        )
        body = words[words.index("-d") + 1]
        async with httpx.AsyncClient(timeout=60) as client:
            response = await client.post(words[2], headers=headers, content=body)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "completed"
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)
    assert process.stderr is not None
    errors = (await process.stderr.read()).decode()
    assert "ignores GATEWAY_WAVESPEED_API_KEY" in errors and "simulator (built in)" in errors
