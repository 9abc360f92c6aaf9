"""Several worker processes (uvicorn --workers, prometheus-client's multiprocess mode): a
scrape, whichever worker answers it, counts what every worker did."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import httpx
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from gateway.store.sqlite import SQLiteStore
from gateway.tenancy import create_tenant, issue_key
from tests.conftest import Sim
from tests.helpers import wait_until
from tests.test_prometheus import free_port

WORKERS = 2


def total(text: str, name: str, **labels: str) -> float:
    found = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                found += sample.value
    return found


async def seed(database: Path) -> str:
    store = SQLiteStore(str(database), readers=1)
    await store.open()
    try:
        await store.migrate()  # `gateway migrate`, once, before the workers start
        tenant = await store.write(create_tenant("multi", {}, 0.0))
        return (await store.write(issue_key(tenant.id, "multi", None, 0.0))).secret
    finally:
        await store.close()


async def test_a_scrape_counts_every_workers_requests(tmp_path: Path, simulator: Sim) -> None:
    key = await seed(tmp_path / "gateway.db")
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.db'}",
        "GATEWAY_WAVESPEED_BASE_URL": simulator.url,
        "GATEWAY_WAVESPEED_API_KEY": simulator.config.api_key,
        "GATEWAY_WAVESPEED_WEBHOOK_SECRET": simulator.config.webhook_secret,
        "GATEWAY_PUBLIC_URL": url,
        "GATEWAY_LOG_LEVEL": "warning",
    }
    with (tmp_path / "workers.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "uvicorn", "--factory", "gateway.asgi:app_from_environment",
            "--workers", str(WORKERS), "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning", env=env, stdout=log, stderr=log,
        )
    # A new connection per request, so that the kernel hands requests to every worker.
    client = httpx.AsyncClient(base_url=url, timeout=10, limits=httpx.Limits(max_keepalive_connections=0))
    try:
        async def up() -> bool:
            assert process.returncode is None, (tmp_path / "workers.log").read_text()
            try:
                return (await client.get("/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(up, within=30, interval=0.2, what="the workers to start")
        sent = 0

        def healthz_by_worker() -> dict[str, float]:
            """Each worker's own count of /healthz answers, from its file alone (a worker
            writes its file when it starts, so the file's presence says nothing)."""
            counts: dict[str, float] = {}
            for f in metrics_dir.iterdir():
                if m := re.fullmatch(r"counter_(\d+)\.db", f.name):
                    merged = MultiProcessCollector.merge([str(f)], accumulate=True)
                    counts[m.group(1)] = sum(
                        s.value for metric in merged for s in metric.samples
                        if s.name == "gateway_http_requests_total" and s.labels.get("route") == "/healthz"
                    )
            return counts

        async def both_served() -> bool:
            nonlocal sent
            answers = await asyncio.gather(*(client.get("/healthz") for _ in range(20)))
            assert all(a.status_code == 200 for a in answers)
            sent += len(answers)
            return sum(count > 0 for count in healthz_by_worker().values()) >= WORKERS

        await wait_until(both_served, within=20, interval=0.1, what="requests on every worker")

        headers = {"Authorization": f"Bearer {key}"}
        for _ in range(4):
            body = {"model": "flux-kontext-pro", "prompt": "p"}
            created = await client.post("/v1/jobs", json=body, headers=headers)
            assert created.status_code == 202, created.text

        for _ in range(4):  # whichever worker answers the scrape
            text = (await client.get("/metrics")).text
            healthz = total(text, "gateway_http_requests_total", route="/healthz", status="200")
            assert healthz == sent == sum(healthz_by_worker().values())
            assert total(text, "gateway_jobs_accepted_total") == 4
            assert total(text, "gateway_build_info") == 1
    finally:
        await client.aclose()
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            process.kill()
            await process.wait()
