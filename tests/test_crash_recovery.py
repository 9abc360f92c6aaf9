"""Crash and restart for real: ``gateway serve`` as a subprocess against a simulator in the test,
killed with SIGKILL (or stopped with SIGTERM) while jobs are queued, at WaveSpeed, or halfway
through a submit, then restarted on the same database. Every accepted job must complete, and
each must have been sent to WaveSpeed exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.simulator import SimulatorConfig, create_simulator_app
from tests.conftest import Sim
from tests.helpers import HoldSubmitAnswers, created_for, submits_for, wait_job, wait_until
from tests.servers import reserve_port, serve_on

ROOT = Path(__file__).resolve().parent.parent
BODIES: list[dict[str, Any]] = [
    {"model": "flux-kontext-pro", "prompt": "a fox"},
    {"model": "flux-kontext-max", "prompt": "a lighthouse", "seed": 7},
    {"model": "flux-kontext-max", "prompt": "bluer", "images": ["https://images.example/a.png"]},
    {"model": "flux-kontext-max", "prompt": "together",
     "images": ["https://images.example/a.png", "https://images.example/b.png"]},
]


@dataclass
class Upstream:
    sim: Sim
    hold: HoldSubmitAnswers


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    sock, url = reserve_port()
    config = SimulatorConfig(public_url=url)
    app = create_simulator_app(config)
    hold = HoldSubmitAnswers(app)
    served = await serve_on(hold, sock, url)
    try:
        yield Upstream(Sim(url, config, app.state.simulator, served), hold)
    finally:
        hold.release.set()
        await served.stop()


@dataclass
class GatewayProcess:
    """``gateway serve`` in a subprocess; the same database and port across restarts."""

    tmp: Path
    sim: Sim
    overrides: dict[str, str] = field(default_factory=dict)
    port: int = 0
    process: asyncio.subprocess.Process | None = None
    starts: int = 0
    all_processes: list[asyncio.subprocess.Process] = field(default_factory=list)

    def __post_init__(self) -> None:
        sock, _ = reserve_port()
        self.port = sock.getsockname()[1]
        sock.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env.update({
            "GATEWAY_DATABASE_URL": f"sqlite:///{self.tmp / 'gateway.db'}",
            "GATEWAY_WAVESPEED_BASE_URL": self.sim.url,
            "GATEWAY_WAVESPEED_API_KEY": self.sim.config.api_key,
            "GATEWAY_WAVESPEED_WEBHOOK_SECRET": self.sim.config.webhook_secret,
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(self.port),
            "GATEWAY_PUBLIC_URL": self.url,
            "GATEWAY_LOG_FORMAT": "json",
            "GATEWAY_LOG_LEVEL": "info",
            "GATEWAY_UPSTREAM_MAX_CONCURRENCY": "2",
            "GATEWAY_WEBHOOK_GRACE_SECONDS": "1",
            "GATEWAY_POLL_INTERVAL_SECONDS": "0.5",
            "GATEWAY_SUBMIT_RETRY_SECONDS": "0.2",
            "GATEWAY_SHUTDOWN_GRACE_SECONDS": "3",
            **self.overrides,
        })
        return env

    async def cli(self, *args: str) -> str:
        """Run a ``gateway`` CLI verb with the same settings; return its last stdout line."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", *args, cwd=ROOT, env=self.env(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        self.all_processes.append(proc)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        return out.decode().strip().splitlines()[-1]

    def log_path(self, start: int) -> Path:
        return self.tmp / f"gateway-{start}.log"

    def log(self) -> str:
        return self.log_path(self.starts).read_text(errors="replace")

    async def start(self) -> None:
        self.starts += 1
        with self.log_path(self.starts).open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway", "serve", cwd=ROOT, env=self.env(),
                stdout=log, stderr=asyncio.subprocess.STDOUT,
            )
        self.all_processes.append(self.process)
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as client:

            async def ready() -> bool:
                assert self.process is not None
                if self.process.returncode is not None:
                    raise AssertionError(f"gateway exited at start-up:\n{self.log()}")
                try:
                    return (await client.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(ready, 30, 0.05, "the gateway to be ready")

    async def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        code = await asyncio.wait_for(self.process.wait(), 10)
        assert code == -signal.SIGKILL

    async def terminate(self, within: float) -> int:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), within)

    def cleanup(self) -> None:
        for proc in self.all_processes:
            if proc.returncode is None:
                os.kill(proc.pid, signal.SIGKILL)


@pytest.fixture
async def gateway_process(tmp_path: Path, upstream: Upstream) -> AsyncIterator[GatewayProcess]:
    gp = GatewayProcess(tmp_path, upstream.sim)
    try:
        yield gp
    finally:
        gp.cleanup()
        for proc in gp.all_processes:
            if proc.returncode is None:
                await asyncio.wait_for(proc.wait(), 10)


async def tenant_client(gp: GatewayProcess, name: str) -> httpx.AsyncClient:
    tenant_id = await gp.cli("tenants", "create", name)
    assert tenant_id.startswith("ten_")
    key = await gp.cli("keys", "create", name)
    assert key.startswith("kgw_live_")
    return httpx.AsyncClient(
        base_url=gp.url, headers={"Authorization": f"Bearer {key}"}, timeout=10
    )


async def set_faults(sim: Sim, **faults: Any) -> None:
    async with httpx.AsyncClient(base_url=sim.url) as client:
        response = await client.post("/_sim/faults", json=faults)
    assert response.status_code == 200, response.text


async def statuses(client: httpx.AsyncClient, ids: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for job_id in ids:
        response = await client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, f"accepted job {job_id} is lost: {response.text}"
        found[job_id] = response.json()["status"]
    return found


async def all_completed(client: httpx.AsyncClient, ids: list[str], within: float) -> list[dict[str, Any]]:
    async def done() -> bool:
        return set((await statuses(client, ids)).values()) == {"completed"}

    await wait_until(done, within, 0.1, "every accepted job to complete")
    return [(await client.get(f"/v1/jobs/{job_id}")).json() for job_id in ids]


def assert_sent_once(sim: Sim, ids: list[str]) -> None:
    for job_id in ids:
        assert len(submits_for(sim, job_id)) == 1, job_id
        assert len(created_for(sim, job_id)) == 1, job_id
    assert len(sim.state.predictions) == len(ids)


async def create_jobs(client: httpx.AsyncClient, count: int) -> list[str]:
    ids = []
    for index in range(count):
        response = await client.post("/v1/jobs", json=BODIES[index % len(BODIES)])
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    return ids


async def test_kill_9_with_jobs_queued_and_at_wavespeed(
    gateway_process: GatewayProcess, upstream: Upstream
) -> None:
    gp, sim = gateway_process, upstream.sim
    await gp.start()
    client = await tenant_client(gp, "crash-team")
    async with client:
        await set_faults(sim, paused=True)
        ids = await create_jobs(client, 7)
        await wait_until(lambda: len(sim.submits()) == 2, 10, what="two submits (the limit)")

        async def settled() -> bool:
            found = sorted((await statuses(client, ids)).values())
            # At WaveSpeed: "submitted", or "processing" once a poll has seen it running.
            return found[:5] == ["queued"] * 5 and set(found[5:]) <= {"processing", "submitted"}

        await wait_until(settled, 10, 0.05, "2 submitted and 5 queued")
        # One more accepted right before the kill: acknowledged means durable.
        ids += await create_jobs(client, 1)
        await gp.kill()

        await gp.start()
        found = sorted((await statuses(client, ids)).values())
        assert found.count("queued") == 6 and len(found) == 8, found
        await asyncio.sleep(0.5)
        assert len(sim.submits()) == 2, "the restart must count the 2 jobs still at WaveSpeed"

        await set_faults(sim, paused=False)
        jobs = await all_completed(client, ids, 30)
    assert_sent_once(sim, ids)
    for job in jobs:
        path = [e["to"] for e in job["events"]]
        assert path in (["queued", "submitted", "completed"],
                        ["queued", "submitted", "processing", "completed"]), path
        price = "0.04" if job["model"] == "flux-kontext-pro" else "0.08"
        assert job["cost_usd"] == job["price_usd"] == price, job


async def test_kill_9_while_wavespeed_finishes_jobs_is_recovered_by_polling(
    gateway_process: GatewayProcess, upstream: Upstream
) -> None:
    gp, sim = gateway_process, upstream.sim
    await gp.start()
    client = await tenant_client(gp, "crash-team")
    async with client:
        await set_faults(sim, paused=True)
        ids = await create_jobs(client, 4)
        await wait_until(lambda: len(sim.submits()) == 2, 10, what="two submits")
        in_flight = [r.query["webhook"].rsplit("/", 1)[1] for r in sim.submits()]
        await gp.kill()

        # WaveSpeed finishes while the gateway is down: its webhooks find nobody.
        await set_faults(sim, paused=False)
        await asyncio.wait_for(sim.state.wait_idle(), 10)
        assert all(w.response_status is None and w.error for w in sim.state.webhooks)

        await gp.start()
        jobs = {job["id"]: job for job in await all_completed(client, ids, 30)}
    assert_sent_once(sim, ids)
    for job_id in in_flight:
        assert jobs[job_id]["events"][-1]["source"] == "poll"
    for job_id in set(ids) - set(in_flight):
        assert jobs[job_id]["events"][-1]["source"] == "webhook"


async def test_kill_9_halfway_through_a_submit_is_never_resent(
    gateway_process: GatewayProcess, upstream: Upstream
) -> None:
    """Killed after the submit reached WaveSpeed and before its answer came back: after the
    restart the job is not sent again; the webhook adopts it."""
    gp, sim = gateway_process, upstream.sim
    await gp.start()
    client = await tenant_client(gp, "crash-team")
    async with client:
        upstream.hold.holding = True
        ids = await create_jobs(client, 2)
        await wait_until(lambda: upstream.hold.held == 2, 10, what="two submits in flight")
        assert len(sim.state.predictions) == 2
        await gp.kill()
        upstream.hold.holding = False

        await gp.start()
        assert set((await statuses(client, ids)).values()) == {"queued"}
        await asyncio.sleep(0.5)
        assert len(sim.submits()) == 2, "a submit whose outcome is unknown must not be re-sent"
        upstream.hold.release.set()  # the answers go to the dead process; the tasks run
        ids += await create_jobs(client, 1)
        jobs = await all_completed(client, ids, 30)
    assert_sent_once(sim, ids)
    for job in jobs[:2]:
        assert [(e["to"], e["source"]) for e in job["events"]] == [
            ("queued", "api"), ("completed", "webhook"),
        ]
        assert job["upstream_id"] == job["events"][-1]["detail"]["adopted_upstream_id"]


async def test_sigterm_stops_cleanly_and_the_restart_finishes_the_work(
    gateway_process: GatewayProcess, upstream: Upstream
) -> None:
    gp, sim = gateway_process, upstream.sim
    await gp.start()
    client = await tenant_client(gp, "graceful-team")
    async with client:
        await set_faults(sim, paused=True)
        ids = await create_jobs(client, 5)
        await wait_until(lambda: len(sim.submits()) == 2, 10, what="two submits")
        started = time.monotonic()
        code = await gp.terminate(within=10)
        elapsed = time.monotonic() - started
        log = gp.log()
        assert code in (0, -signal.SIGTERM), log
        assert elapsed < 3 + 2, f"took {elapsed:.1f} s to stop"
        assert '"gateway_stopped"' in log, log
        assert "Traceback" not in log, log

        await gp.start()
        await set_faults(sim, paused=False)
        await all_completed(client, ids, 30)
    assert_sent_once(sim, ids)


async def test_sigterm_lets_a_submit_in_flight_finish(
    gateway_process: GatewayProcess, upstream: Upstream
) -> None:
    """A submit whose answer arrives within the shutdown grace is recorded as submitted, so
    the restart knows its upstream id instead of treating it as an unknown outcome."""
    gp, sim = gateway_process, upstream.sim
    await gp.start()
    client = await tenant_client(gp, "graceful-team")
    async with client:
        await set_faults(sim, paused=True)
        upstream.hold.holding = True
        [job_id] = await create_jobs(client, 1)
        await wait_until(lambda: upstream.hold.held == 1, 10, what="the submit in flight")
        assert gp.process is not None
        os.kill(gp.process.pid, signal.SIGTERM)
        await asyncio.sleep(0.5)
        upstream.hold.release.set()
        code = await asyncio.wait_for(gp.process.wait(), 10)
        assert code in (0, -signal.SIGTERM), gp.log()

        await gp.start()
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
        assert job["status"] == "submitted", job
        assert job["upstream_id"] == next(iter(sim.state.predictions))
        await set_faults(sim, paused=False)
        [done] = await all_completed(client, [job_id], 30)
    assert [e["to"] for e in done["events"]][:2] == ["queued", "submitted"]
    assert_sent_once(sim, [job_id])


async def test_sigterm_answers_requests_waiting_on_a_job_at_once(
    gateway_process: GatewayProcess, upstream: Upstream
) -> None:
    """A client holding ``wait`` gets 202 with the job as it is (durable, to be polled after
    the restart) instead of sitting out the shutdown grace and being cut off."""
    gp, sim = gateway_process, upstream.sim
    await gp.start()
    client = await tenant_client(gp, "waiting-team")
    async with client:
        await set_faults(sim, paused=True)
        waiting = asyncio.create_task(client.post("/v1/jobs", json={**BODIES[0], "wait": 30}))
        await wait_until(lambda: len(sim.submits()) == 1, 10, what="the submit")
        # The simulator has the submit, but its answer may still be on the way back: wait for
        # the job to be recorded as submitted, so that what the answer says is known.
        webhook = sim.submits()[0].query["webhook"]
        await wait_job(client, webhook.rsplit("/", 1)[1], ("submitted", "processing"))
        started = time.monotonic()
        code = await gp.terminate(within=10)
        response = await asyncio.wait_for(waiting, 10)
        assert response.status_code == 202, response.text
        assert response.json()["status"] in ("submitted", "processing")
        assert time.monotonic() - started < 2.5
        assert code in (0, -signal.SIGTERM)
        assert "Traceback" not in gp.log(), gp.log()
        job_id = response.json()["id"]

        await gp.start()
        await set_faults(sim, paused=False)
        await all_completed(client, [job_id], 30)
    assert_sent_once(sim, [job_id])
