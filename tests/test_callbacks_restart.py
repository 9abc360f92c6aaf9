"""A gateway that dies after a job's transition and before its callback is sent: the outcome
was committed with its outbox message, so the restarted gateway delivers it. Once with a real
process killed (SIGKILL) while the attempt is in flight, once with a process that committed
the transition and never started a deliverer at all."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from gateway.callbacks import build_callbacks
from gateway.catalog import Catalog
from gateway.jobs import JobService
from gateway.store.sqlite import SQLiteStore
from gateway.tenancy import Principal, create_tenant, issue_key
from gateway.upstream import WaveSpeedClient
from tests.callback_receiver import Answer, Receiver
from tests.conftest import GatewayFactory, Sim, sim_settings
from tests.helpers import wait_job, wait_until


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def _tenant_key(database: Path) -> str:
    store = SQLiteStore(str(database), readers=1)
    await store.open()
    try:
        await store.migrate()
        tenant = await store.write(create_tenant("restart-team", {}, time.time()))
        issued = await store.write(issue_key(tenant.id, "test", None, time.time()))
        return issued.secret
    finally:
        await store.close()


@asynccontextmanager
async def gateway_process(env: dict[str, str], url: str) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient(base_url=url, timeout=2) as client:

            async def up() -> bool:
                try:
                    return (await client.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(up, 20, interval=0.05, what="the gateway process to start")
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def test_killed_gateway_delivers_the_callback_after_restart(
    simulator: Sim, tmp_path: Path
) -> None:
    database = tmp_path / "gateway.db"
    key = await _tenant_key(database)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "GATEWAY_DATABASE_URL": f"sqlite:///{database}",
        "GATEWAY_PORT": str(port),
        "GATEWAY_PUBLIC_URL": url,
        "GATEWAY_WAVESPEED_BASE_URL": simulator.url,
        "GATEWAY_WAVESPEED_API_KEY": simulator.config.api_key,
        "GATEWAY_WAVESPEED_WEBHOOK_SECRET": simulator.config.webhook_secret,
        "GATEWAY_LOG_LEVEL": "error",
        "GATEWAY_CALLBACK_TIMEOUT_SECONDS": "1",
        "GATEWAY_CALLBACK_RETRY_SCHEDULE": "[0, 0.1]",
        "GATEWAY_CALLBACK_POLL_SECONDS": "0.1",
    }
    receiver = await Receiver().start()
    headers = {"Authorization": f"Bearer {key}"}
    try:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client:
            async with gateway_process(env, url) as first:
                endpoint = (await client.post(
                    "/v1/webhook-endpoints", json={"url": receiver.url}
                )).json()
                receiver.secrets = [endpoint["secret"]]
                receiver.answer(Answer(200, delay=3))  # the first attempt never gets its answer
                job = (await client.post(
                    "/v1/jobs", json={"model": "flux-kontext-pro", "prompt": "a kite"}
                )).json()
                await receiver.wait_for(1)
                first.send_signal(signal.SIGKILL)
                await first.wait()

            async with gateway_process(env, url):
                deliveries = await receiver.wait_for(2, within=15)
                assert {d.webhook_id for d in deliveries} == {deliveries[0].webhook_id}
                receiver.assert_all_verified()
                assert deliveries[1].payload["type"] == "job.completed"
                finished = await wait_job(client, job["id"])
                assert deliveries[1].payload["data"] == finished
                [message] = (await client.get(
                    "/v1/webhook-messages", params={"job_id": job["id"]}
                )).json()["data"]

                async def delivered() -> bool:
                    found = (await client.get(f"/v1/webhook-messages/{message['id']}")).json()
                    return bool(found["status"] == "delivered")

                await wait_until(delivered, 5, what="the message to be marked delivered")
                found = (await client.get(f"/v1/webhook-messages/{message['id']}")).json()
                # The killed process never recorded its attempt; the restarted one's is the one.
                assert [a["status_code"] for a in found["attempts"]] == [200]
    finally:
        await receiver.stop()


async def test_a_transition_committed_before_any_attempt_is_delivered_after_restart(
    simulator: Sim, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    receiver = await Receiver().start()
    database = tmp_path / "gateway.db"  # the file gateway_factory's gateways use
    store = SQLiteStore(str(database), readers=1)
    await store.open()
    try:
        # A process with the job service and the outbox hook, but no deliverer: it commits a
        # cancellation, then is gone.
        await store.migrate()
        async with httpx.AsyncClient() as http:
            jobs = JobService(
                store=store, catalog=Catalog({}),
                upstream=WaveSpeedClient(http, simulator.url, simulator.config.api_key),
            )
            build_callbacks(sim_settings(simulator, database), store, jobs)
            tenant = await store.write(create_tenant("gone-team", {}, time.time()))
            issued = await store.write(issue_key(tenant.id, "test", None, time.time()))
            receiver.secrets = [tenant.webhook_secret]
            job, _ = await jobs.create_job(
                Principal(tenant, issued.key),
                {**{"model": "flux-kontext-pro", "prompt": "a boat"}, "callback_url": receiver.url},
                None,
            )
            await jobs.cancel_job(tenant.id, job.id)
    finally:
        await store.close()
    assert receiver.deliveries == []
    try:
        await gateway_factory(callback_poll_seconds=0.05)
        [delivery] = await receiver.wait_for(1)
        receiver.assert_all_verified()
        assert delivery.payload["type"] == "job.cancelled"
        assert delivery.payload["data"]["id"] == job.id
    finally:
        await receiver.stop()
