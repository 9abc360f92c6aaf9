"""The protocol floor: the full cycle's messages with none of the gateway's work.

``POST /v1/jobs`` reads the body, sends the simulator the bench's submit with
``?webhook=<this app>/webhooks/wavespeed/<n>`` (aiohttp, the gateway's faster transport), waits
for that webhook and answers 200. No authentication, validation, store, fsync, signature check
or log line. Its added latency, counted like the gateway's, is what the machine charges for
the five messages of a job (client -> here -> simulator -> here, webhook -> here -> client)
before the gateway does anything: the part of the target no code of ours can remove.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.payload import SUBMIT, WAVESPEED_ID

_SUBMIT = json.dumps(SUBMIT).encode()
_COMPLETED = b'{"status":"completed"}'


def create_floor_app(public_url: str, upstream: str, api_key: str) -> Starlette:
    waiting: dict[str, asyncio.Future[None]] = {}
    numbers = itertools.count()
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    sessions: list[aiohttp.ClientSession] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sessions.append(aiohttp.ClientSession())
        try:
            yield
        finally:
            await sessions[0].close()

    async def create_job(request: Request) -> Response:
        await request.body()
        job_id = f"job{next(numbers)}"
        ended = waiting[job_id] = asyncio.get_running_loop().create_future()
        webhook = quote(f"{public_url}/webhooks/wavespeed/{job_id}", safe="")
        try:
            url = f"{upstream}/api/v3/{WAVESPEED_ID}?webhook={webhook}"
            async with sessions[0].post(url, data=_SUBMIT, headers=headers) as answer:
                await answer.read()
            await asyncio.wait_for(ended, 30)
        finally:
            del waiting[job_id]
        return Response(_COMPLETED, media_type="application/json")

    async def webhook(request: Request) -> Response:
        await request.body()
        ended = waiting.get(request.path_params["job_id"])
        if ended is not None and not ended.done():
            ended.set_result(None)
        return Response(b'{"result":"applied"}', media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response(b"ok")

    return Starlette(
        routes=[
            Route("/v1/jobs", create_job, methods=["POST"]),
            Route("/webhooks/wavespeed/{job_id}", webhook, methods=["POST"]),
            Route("/healthz", healthz),
        ],
        lifespan=lifespan,
    )
