"""Small test helpers shared by the job-path tests: bounded waits, reading what the simulator
received, and signing WaveSpeed deliveries independently of the gateway's own code."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.conftest import Sim

TERMINAL = ("completed", "failed", "cancelled")


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], within: float = 10.0, interval: float = 0.02,
    what: str = "condition",
) -> None:
    """Poll ``condition`` until it is true; fail the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(interval)


async def wait_job(
    client: httpx.AsyncClient, job_id: str, statuses: tuple[str, ...] = TERMINAL,
    within: float = 10.0,
) -> dict[str, Any]:
    """GET the job until its status is one of ``statuses``; return it."""
    seen: dict[str, Any] = {}

    async def reached() -> bool:
        response = await client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        seen.update(response.json())
        return seen["status"] in statuses

    await wait_until(reached, within, 0.05, f"job {job_id} to be {'|'.join(statuses)}")
    return seen


def submits_for(sim: Sim, job_id: str) -> list[Any]:
    """The submits the simulator received whose webhook URL names ``job_id``."""
    return [
        r for r in sim.submits()
        if r.query.get("webhook", "").endswith(f"/webhooks/wavespeed/{job_id}")
    ]


def created_for(sim: Sim, job_id: str) -> list[Any]:
    """The predictions the simulator created for ``job_id`` (submits it accepted)."""
    return [
        p for p in sim.state.predictions.values()
        if (p.webhook_url or "").endswith(f"/webhooks/wavespeed/{job_id}")
    ]


def wavespeed_signed(
    secret: str, body: bytes, webhook_id: str, timestamp: int | None = None
) -> dict[str, str]:
    """WaveSpeed's v3 headers, computed here from the contract (not with gateway code):
    HMAC-SHA256 hex over ``{id}.{timestamp}.{body}``, key = the secret without ``whsec_``."""
    ts = int(time.time()) if timestamp is None else timestamp
    key = secret.removeprefix("whsec_").encode()
    digest = hmac.new(key, f"{webhook_id}.{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": f"v3,{digest}",
        "content-type": "application/json",
    }


def prediction_body(prediction_id: str, status: str = "completed", **extra: Any) -> bytes:
    """A bare prediction as WaveSpeed POSTs it to a webhook."""
    payload: dict[str, Any] = {
        "id": prediction_id,
        "model": "wavespeed-ai/flux-kontext-pro/text-to-image",
        "input": {"prompt": "x"},
        "outputs": ["https://cdn.example/out.png"] if status == "completed" else [],
        "urls": {"get": f"https://api.example/api/v3/predictions/{prediction_id}/result"},
        "has_nsfw_contents": [False] if status == "completed" else [],
        "status": status,
        "created_at": "2025-01-01T00:00:00.000Z",
        "error": "",
        **extra,
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        sample, _, value = line.rpartition(" ")
        metric, _, raw_labels = sample.partition("{")
        if metric != name:
            continue
        parsed = ",".join(sorted(part for part in raw_labels.rstrip("}").split(",") if part))
        if parsed == wanted:
            return float(value)
    return 0.0


class HoldSubmitAnswers:
    """Around the simulator: while ``holding``, a submit is created upstream but its answer is
    held back until ``release`` is set (a submit caught in flight by the crash)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.holding = False
        self.held = 0
        self.release = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (
            self.holding and scope["type"] == "http" and scope["method"] == "POST"
            and scope["path"].startswith("/api/v3/") and "/media/" not in scope["path"]
        ):
            await self.app(scope, receive, send)
            return

        async def held_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.held += 1
                await self.release.wait()
            await send(message)

        await self.app(scope, receive, held_send)
