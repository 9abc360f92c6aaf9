"""Where an accepted job's CPU goes: ``python -m bench.accept_stages [--requests N]``.

In one process pinned to one CPU, without sockets: the ASGI app is called directly by 64
concurrent clients, and the CPU per request (every thread) is measured for the baseline app and
for the gateway's ``POST /v1/jobs`` cut after each stage of the real handler:

    0 framework    the gateway's app and middleware, reading the JSON body, a fixed 202
    1 +key         the tenant's key (gateway.api.common.tenant)
    2 +validation  parse_job_request (catalog checks, WaveSpeed body)
    3 +store       JobService.accept: quota reservation, job and first event committed
    4 +answer      the job's view as JSON: the whole of create_job for a new job

Each later stage includes the earlier ones, so a difference is the cost of one stage. The
dispatcher's upstream is a closed port: the first job fails to go out and every other job
stays queued, so no submit work is measured. Medians of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

STAGES = ("framework", "+key", "+validation", "+store", "+answer")
CLIENTS = 64
Asgi = Callable[..., Coroutine[Any, Any, None]]


def _environment(database: Path) -> dict[str, str]:
    closed = "http://127.0.0.1:9"  # discard: nothing listens, every submit fails "not sent"
    return {
        "GATEWAY_PUBLIC_URL": closed, "GATEWAY_DATABASE_URL": f"sqlite:///{database}",
        "GATEWAY_WAVESPEED_BASE_URL": closed, "GATEWAY_WAVESPEED_API_KEY": "bench",
        "GATEWAY_WAVESPEED_WEBHOOK_SECRET": "whsec_bench", "GATEWAY_UPSTREAM_MAX_CONCURRENCY": "1",
        "GATEWAY_LOG_FORMAT": "json", "GATEWAY_LOG_LEVEL": "info",
    }


def _staged(stage: int) -> Callable[[Any], Awaitable[Any]]:
    """The steps of gateway.api.jobs.create_job for a new job, up to ``stage``."""
    from starlette.responses import JSONResponse

    from gateway.api.common import bind_job, job_view, json_response, read_json, services, tenant
    from gateway.jobs import first_event
    from gateway.normalize import parse_job_request

    async def endpoint(request: Any) -> Any:
        body = await read_json(request)
        if stage < 1:
            return JSONResponse({"status": "queued"}, 202)
        principal = await tenant(request)
        if stage < 2:
            return JSONResponse({"status": "queued"}, 202)
        job_request = parse_job_request(body)
        if stage < 3:
            return JSONResponse({"status": "queued"}, 202)
        job, _ = await services(request).jobs.accept(principal, job_request, None)
        bind_job(job.id)
        if stage < 4:
            return JSONResponse({"status": "queued"}, 202)
        return json_response(job_view(job, [first_event(job)]), 202, {"Location": "/v1/jobs/x"})

    return endpoint


async def _drive(app: Asgi, body: bytes, headers: list[tuple[bytes, bytes]], count: int) -> float:
    """CPU seconds per request for ``count`` POSTs over CLIENTS concurrent clients."""
    answered: dict[int, int] = {}

    async def one() -> None:
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:  # the app asks again only to watch for a disconnect
                await asyncio.Event().wait()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answered[message["status"]] = answered.get(message["status"], 0) + 1

        await app({
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": "/v1/jobs", "raw_path": b"/v1/jobs", "root_path": "",
            "query_string": b"", "headers": headers, "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80), "state": {},
        }, receive, send)

    async def client(requests: int) -> None:
        for _ in range(requests):
            await one()

    per_client = max(1, count // CLIENTS)
    started = time.process_time()
    await asyncio.gather(*(client(per_client) for _ in range(CLIENTS)))
    spent = time.process_time() - started
    if set(answered) != {202}:
        raise RuntimeError(f"answers other than 202: {answered}")
    return spent / (per_client * CLIENTS)


async def _lifespan(app: Asgi) -> tuple[asyncio.Queue[dict[str, str]], asyncio.Task[None]]:
    inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    started = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()
        elif message["type"] == "lifespan.startup.failed":
            raise RuntimeError(message.get("message", "start-up failed"))

    await inbox.put({"type": "lifespan.startup"})
    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                   inbox.get, send))
    await asyncio.wait_for(started.wait(), 30)
    return inbox, task


def request_parts() -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The bench's job body and its headers, without authorization."""
    from bench.payload import job_body

    body = job_body().encode()
    return body, [(b"host", b"bench"), (b"content-type", b"application/json"),
                  (b"content-length", str(len(body)).encode())]


@contextlib.asynccontextmanager
async def started_gateway(database: Path, stage: int | None) -> AsyncIterator[tuple[Asgi, str]]:
    """The gateway on a fresh ``database``, started (lifespan), with ``POST /v1/jobs`` cut
    after ``stage`` (None: the real handler); yields the app and the bench tenant's key."""
    from starlette.routing import Route, request_response

    from bench.servers import prepare_gateway_database
    from gateway.app import create_app
    from gateway.settings import load_settings

    key = await asyncio.to_thread(prepare_gateway_database, database)
    os.environ.update(_environment(database))
    app = create_app(load_settings())
    if stage is not None:
        route = next(r for r in app.router.routes if isinstance(r, Route)
                     and r.path == "/v1/jobs" and "POST" in (r.methods or ()))
        route.app = request_response(_staged(stage))
    inbox, task = await _lifespan(app)
    try:
        yield app, key
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await task


async def measure(requests: int, repeat: int, workdir: Path) -> dict[str, float]:
    from bench.baseline_app import create_baseline_app

    body, base = request_parts()
    results: dict[str, list[float]] = {}
    baseline = create_baseline_app()
    for stage, name in enumerate(STAGES):
        async with started_gateway(workdir / f"stage-{stage}.db", stage) as (app, key):
            headers = [*base, (b"authorization", f"Bearer {key}".encode())]
            await _drive(app, body, headers, requests // 4)  # warm-up
            for _ in range(repeat):
                results.setdefault("baseline", []).append(
                    await _drive(baseline, body, base, requests))
                results.setdefault(name, []).append(await _drive(app, body, headers, requests))
    return {name: statistics.median(values) * 1e6 for name, values in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.accept_stages", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4000, help="per run (default 4000)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cpu", type=int, default=0, help="the CPU to pin to (default 0)")
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    out = os.fdopen(os.dup(1), "w")
    with tempfile.TemporaryDirectory(prefix="accept-stages-") as workdir:
        # The gateway's log lines go to a file, as in the HTTP bench (stdout is the table).
        log = os.open(Path(workdir) / "gateway.log", os.O_WRONLY | os.O_CREAT)
        os.dup2(log, 1)
        os.dup2(log, 2)
        import uvloop

        try:
            figures = uvloop.run(measure(args.requests, args.repeat, Path(workdir)))
        except BaseException:
            # stdout and stderr are the log file, about to be deleted: show what went wrong.
            print(traceback.format_exc(), file=out)
            tail = (Path(workdir) / "gateway.log").read_text(errors="replace").splitlines()[-20:]
            print("\n".join(["gateway log, last lines:", *tail]), file=out)
            raise SystemExit(1) from None
    print(f"CPU per request, in process, {CLIENTS} clients, medians of {args.repeat} runs",
          file=out)
    print(f"{'baseline (bare Starlette + pydantic)':40} {figures['baseline']:7.0f} us", file=out)
    previous = 0.0
    for name in STAGES:
        step = f"(+{figures[name] - previous:.0f})" if previous else ""
        print(f"{'gateway ' + name:40} {figures[name]:7.0f} us  {step}", file=out)
        previous = figures[name]
    out.flush()


if __name__ == "__main__":
    main()
