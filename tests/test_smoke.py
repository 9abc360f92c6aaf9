"""The shortest whole path: one job, over real sockets, from request to completed."""

from __future__ import annotations

import gc
from pathlib import Path

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
