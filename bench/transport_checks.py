"""Is each upstream transport correct? The same WaveSpeedClient calls through httpx's default
transport and through ``httpx-aiohttp`` must give the same results and the same errors:

- submit, then GET the result: the same prediction, and every transport reads it alike;
- a 400 is UpstreamRejected(400), a 429 is UpstreamRateLimited with Retry-After;
- a refused connection is "nothing sent" (safe to retry): UpstreamNotSent;
- a server that reads the whole request and closes the connection without answering is an
  unknown outcome (never re-sent): UpstreamOutcomeUnknown, not UpstreamNotSent, and the
  transport must not have sent the request a second time on its own;
- (informational) a connect timeout, also "nothing sent".

The classification is ``gateway.upstream._nothing_sent`` on the transport's exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx

from bench.payload import SUBMIT, WAVESPEED_ID
from gateway.simulator.config import DEFAULT_API_KEY
from gateway.upstream import (
    Prediction,
    UpstreamNotSent,
    UpstreamOutcomeUnknown,
    UpstreamRateLimited,
    UpstreamRejected,
    WaveSpeedClient,
    _nothing_sent,
    make_http_client,
)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = True


@contextlib.asynccontextmanager
async def _client(transport: str, base_url: str, connect_timeout: float = 5.0
                  ) -> AsyncIterator[WaveSpeedClient]:
    http = make_http_client(transport, 10.0)  # type: ignore[arg-type]
    http.timeout = httpx.Timeout(10.0, connect=connect_timeout)
    try:
        yield WaveSpeedClient(http, base_url, DEFAULT_API_KEY, get_attempts=1)
    finally:
        await http.aclose()


def _describe(exc: BaseException) -> str:
    chain = [type(exc).__name__]
    cause = exc.__cause__
    while cause is not None:
        chain.append(type(cause).__name__)
        cause = cause.__cause__
    return " <- ".join(chain)


async def _failure(call: Callable[[], Awaitable[object]]) -> BaseException | None:
    try:
        await call()
    except Exception as exc:
        return exc
    return None


async def _completed(client: WaveSpeedClient, prediction_id: str) -> Prediction:
    for _ in range(200):
        result = await client.get_result(prediction_id)
        if result.status in ("completed", "failed"):
            return result
        await asyncio.sleep(0.01)
    raise TimeoutError(f"prediction {prediction_id} did not finish")


async def submit_get_equal(transports: tuple[str, ...], sim_url: str) -> dict[str, Check]:
    """Submit through each transport; GET the result through every transport: all equal."""
    checks: dict[str, Check] = {}
    for transport in transports:
        async with _client(transport, sim_url) as client:
            submitted = await client.submit(WAVESPEED_ID, SUBMIT, None)
            first = await _completed(client, submitted.id)
        readings = [first]
        for other in transports:
            async with _client(other, sim_url) as client:
                readings.append(await client.get_result(submitted.id))
        same_task = (first.id, first.model, first.created_at) == (
            submitted.id, submitted.model, submitted.created_at)
        alike = all(reading == first for reading in readings)
        ok = same_task and alike and first.status == "completed" and len(first.outputs) == 1
        checks[transport] = Check(
            "submit_get_equal", ok,
            f"submit id {submitted.id[:8]}..; GET through {', '.join(transports)}: "
            f"{'identical' if alike else 'DIFFERENT'}; status {first.status}",
        )
    return checks


async def rejected(transport: str, sim_url: str) -> Check:
    async with _client(transport, sim_url) as client:
        exc = await _failure(
            lambda: client.submit(WAVESPEED_ID, {**SUBMIT, "guidance_scale": 99}, None))
    ok = isinstance(exc, UpstreamRejected) and exc.upstream_status == 400
    return Check("rejected_400", ok, _describe(exc) if exc else "no error raised")


async def rate_limited(transport: str, sim_url: str) -> Check:
    async with httpx.AsyncClient() as plain:
        (await plain.post(sim_url + "/_sim/faults", json={"rate_429": 1.0})).raise_for_status()
        try:
            async with _client(transport, sim_url) as client:
                exc = await _failure(lambda: client.submit(WAVESPEED_ID, SUBMIT, None))
        finally:
            await plain.post(sim_url + "/_sim/faults", json={"rate_429": 0.0})
    ok = isinstance(exc, UpstreamRateLimited) and exc.retry_after == 1.0
    return Check("rate_limited_429", ok, _describe(exc) if exc else "no error raised")


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _classified(exc: BaseException | None, want_not_sent: bool) -> tuple[bool, str]:
    if exc is None:
        return False, "no error raised"
    cause = exc.__cause__
    nothing_sent = cause is not None and _nothing_sent(cause)
    if want_not_sent:
        ok = isinstance(exc, UpstreamNotSent) and nothing_sent
    else:
        ok = isinstance(exc, UpstreamOutcomeUnknown) and not nothing_sent
    return ok, f"{_describe(exc)}; _nothing_sent={nothing_sent}"


async def refused(transport: str) -> Check:
    url = f"http://127.0.0.1:{_unused_port()}"
    async with _client(transport, url) as client:
        exc = await _failure(lambda: client.submit(WAVESPEED_ID, SUBMIT, None))
    ok, detail = _classified(exc, want_not_sent=True)
    return Check("refused_not_sent", ok, detail)


async def closed_after_request(transport: str) -> Check:
    """A raw server that reads the whole request, then closes without a byte of answer."""
    received = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        with contextlib.suppress(Exception):
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            received += 1
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with _client(transport, f"http://127.0.0.1:{port}") as client:
            exc = await _failure(lambda: client.submit(WAVESPEED_ID, SUBMIT, None))
    finally:
        server.close()
        await server.wait_closed()
    ok, detail = _classified(exc, want_not_sent=False)
    ok = ok and received == 1
    return Check("closed_after_request_unknown", ok, f"{detail}; requests received: {received}")


async def connect_timeout(transport: str) -> Check:
    """A listener whose accept queue is full: the SYN goes unanswered, nothing is sent."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers: list[socket.socket] = []
    try:
        for _ in range(4):  # fill the accept queue (backlog 0 holds one connection)
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        await asyncio.sleep(0.05)
        async with _client(transport, f"http://127.0.0.1:{port}", connect_timeout=0.5) as client:
            exc = await _failure(lambda: client.submit(WAVESPEED_ID, SUBMIT, None))
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
    ok, detail = _classified(exc, want_not_sent=True)
    return Check("connect_timeout_not_sent", ok, detail, required=False)


async def run_checks(transports: tuple[str, ...], sim_url: str) -> dict[str, list[Check]]:
    results: dict[str, list[Check]] = {t: [] for t in transports}
    for transport, check in (await submit_get_equal(transports, sim_url)).items():
        results[transport].append(check)
    for transport in transports:
        results[transport] += [
            await rejected(transport, sim_url),
            await rate_limited(transport, sim_url),
            await refused(transport),
            await closed_after_request(transport),
            await connect_timeout(transport),
        ]
    return results


def passed(checks: list[Check]) -> bool:
    return all(c.ok for c in checks if c.required)


def as_dicts(checks: list[Check]) -> list[dict[str, object]]:
    return [{"name": c.name, "ok": c.ok, "required": c.required, "detail": c.detail}
            for c in checks]

