"""Real servers for tests: uvicorn on 127.0.0.1 with an ephemeral port, in the test's loop."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import uvicorn

from gateway.runner import bind


@dataclass
class Served:
    url: str
    app: Any
    server: uvicorn.Server
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.server.should_exit = True
        await asyncio.wait_for(self.task, 15)

    async def kill(self) -> None:
        """Stop without the lifespan's shutdown: what a kill -9 leaves behind, in process."""
        self.server.force_exit = True
        self.server.should_exit = True
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, SystemExit):
            await self.task


def reserve_port() -> tuple[Any, str]:
    sock = bind("127.0.0.1", 0)
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


async def serve_on(app: Any, sock: Any, url: str) -> Served:
    config = uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(500):
        if server.started:
            return Served(url, app, server, task)
        if task.done():
            await task
            raise RuntimeError("server stopped during start-up")
        await asyncio.sleep(0.01)
    raise TimeoutError("server did not start")


async def serve(app: Any) -> Served:
    sock, url = reserve_port()
    return await serve_on(app, sock, url)
