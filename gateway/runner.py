"""Serving: the gateway on uvicorn, with the built-in WaveSpeed simulator beside it in the same
process when no WaveSpeed key is configured.

On SIGTERM or SIGINT the gateway shuts down first (it stops taking work, lets submits in
flight finish, and closes the store), then the simulator.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import uvicorn
from starlette.applications import Starlette

from gateway.app import Services, create_app
from gateway.settings import Settings
from gateway.simulator import SimulatorConfig, create_simulator_app


def bind(host: str, port: int) -> socket.socket:
    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only when the
    # socket says it is TCP; without it every keep-alive answer after the first waited ~40 ms
    # (Nagle against the client's delayed ACK).
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _server(app: object, settings: Settings) -> uvicorn.Server:
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        log_level="warning",
        access_log=False,
        # uvicorn's own lines go through the root logger, which gateway.logs renders like the
        # gateway's (JSON in production) instead of uvicorn's plain text handlers.
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_seconds)),
    )
    return uvicorn.Server(config)


async def _release_waiters_at_exit(server: uvicorn.Server, app: Starlette) -> None:
    """uvicorn lets open requests finish before the lifespan shutdown; one holding on ``wait``
    would sit out the whole grace and then be cut off with a 500. Answer them at once instead
    (202 with the job as it is: it is durable), and report not ready while draining."""
    while not server.should_exit:  # noqa: ASYNC110 (uvicorn has no event)
        await asyncio.sleep(0.05)
    services: Services | None = getattr(app.state, "services", None)
    if services is not None:
        services.shutting_down = True
        services.jobs.watch.close()


async def serve(
    settings: Settings,
    *,
    simulator_latency: float = 0.0,
    on_ready: Callable[[Settings, str | None], None] | None = None,
) -> None:
    """Run the gateway (and the simulator if ``settings`` names no WaveSpeed key)."""
    gateway_socket = bind(settings.host, settings.port)
    port = gateway_socket.getsockname()[1]
    if settings.public_url == "http://127.0.0.1:8000" and port != 8000:
        settings = settings.model_copy(update={"public_url": f"http://127.0.0.1:{port}"})
    simulator: uvicorn.Server | None = None
    simulator_task: asyncio.Task[None] | None = None
    simulator_url = None
    if settings.uses_simulator:
        sim_socket = bind("127.0.0.1", 0)
        simulator_url = f"http://127.0.0.1:{sim_socket.getsockname()[1]}"
        sim_config = SimulatorConfig(public_url=simulator_url, latency_seconds=simulator_latency)
        simulator = _server(create_simulator_app(sim_config), settings)
        simulator_task = asyncio.create_task(simulator.serve(sockets=[sim_socket]))
        while not simulator.started:
            if simulator_task.done():
                await simulator_task
                return
            await asyncio.sleep(0.02)
        settings = settings.model_copy(update={
            "wavespeed_base_url": simulator_url,
            "wavespeed_api_key": sim_config.api_key,
            "wavespeed_webhook_secret": sim_config.webhook_secret,
        })
    app = create_app(settings)
    gateway = _server(app, settings)
    gateway_task = asyncio.create_task(gateway.serve(sockets=[gateway_socket]))
    while not gateway.started and not gateway_task.done():  # noqa: ASYNC110 (uvicorn has no event)
        await asyncio.sleep(0.02)
    if gateway.started and on_ready is not None:
        on_ready(settings, simulator_url)
    draining = asyncio.create_task(_release_waiters_at_exit(gateway, app))
    try:
        await gateway_task
    finally:
        draining.cancel()
        if simulator is not None and simulator_task is not None:
            simulator.should_exit = True
            await simulator_task
