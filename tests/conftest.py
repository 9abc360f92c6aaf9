"""Shared fixtures: the simulator and the gateway on real sockets (127.0.0.1, ephemeral
ports), and the gateway in process through httpx.ASGITransport."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import Services, create_app
from gateway.settings import Settings
from gateway.simulator import SimulatorConfig, create_simulator_app
from gateway.simulator.state import SimulatorState
from gateway.tenancy import create_tenant, issue_key
from tests.servers import Served, reserve_port, serve_on

_names = itertools.count(1)


@dataclass
class Sim:
    url: str
    config: SimulatorConfig
    state: SimulatorState
    served: Served

    def submits(self) -> list[Any]:
        """Every submit the simulator received (POST /api/v3/<model>)."""
        return [
            r for r in self.state.requests
            if r.method == "POST" and "/media/" not in r.path
        ]


@dataclass
class TenantHandle:
    id: str
    name: str
    key: str
    client: httpx.AsyncClient


@dataclass
class Gateway:
    url: str
    settings: Settings
    served: Served | None
    app: Any
    client: httpx.AsyncClient
    tenants: list[TenantHandle] = field(default_factory=list)

    @property
    def services(self) -> Services:
        svc: Services = self.app.state.services
        return svc

    async def new_tenant(
        self, name: str | None = None, limits: dict[str, Any] | None = None
    ) -> TenantHandle:
        svc = self.services
        tenant = await svc.store.write(
            create_tenant(name or f"team-{next(_names)}", limits or {}, svc.clock())
        )
        issued = await svc.store.write(issue_key(tenant.id, "test", None, svc.clock()))
        client = httpx.AsyncClient(
            base_url=self.url, transport=self.client._transport,
            headers={"Authorization": f"Bearer {issued.secret}"}, timeout=30,
        )
        handle = TenantHandle(tenant.id, tenant.name, issued.secret, client)
        self.tenants.append(handle)
        return handle

    async def close_clients(self) -> None:
        for handle in self.tenants:
            await handle.client.aclose()
        await self.client.aclose()


def sim_settings(sim: Sim, database: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{database}",
        "wavespeed_base_url": sim.url,
        "wavespeed_api_key": sim.config.api_key,
        "wavespeed_webhook_secret": sim.config.webhook_secret,
        "log_format": "console",
        "log_level": "warning",
        "submit_retry_seconds": 0.1,
        "shutdown_grace_seconds": 2.0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def simulator() -> AsyncIterator[Sim]:
    sock, url = reserve_port()
    config = SimulatorConfig(public_url=url)
    app = create_simulator_app(config)
    served = await serve_on(app, sock, url)
    try:
        yield Sim(url, config, app.state.simulator, served)
    finally:
        await served.stop()


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def gateway_factory(tmp_path: Path, simulator: Sim) -> AsyncIterator[GatewayFactory]:
    """Start gateways on real sockets; each call may override settings. Same database file
    unless ``database_url`` is overridden, so a second call is a restart (or, with the first
    still running, a second worker process on the same database)."""
    started: list[Gateway] = []

    async def start(clock: Callable[[], float] | None = None, **overrides: Any) -> Gateway:
        sock, url = reserve_port()
        overrides.setdefault("public_url", url)
        settings = sim_settings(simulator, tmp_path / "gateway.db", **overrides)
        app = create_app(settings, configure_logs=False, clock=clock or time.time)
        served = await serve_on(app, sock, url)
        gateway = Gateway(url, settings, served, app, httpx.AsyncClient(base_url=url, timeout=30))
        started.append(gateway)
        return gateway

    yield start
    for gateway in reversed(started):
        await gateway.close_clients()
        if gateway.served is not None and not gateway.served.task.done():
            await gateway.served.stop()


@pytest.fixture
async def gateway(gateway_factory: GatewayFactory) -> Gateway:
    return await gateway_factory()


@pytest.fixture
async def tenant(gateway: Gateway) -> TenantHandle:
    return await gateway.new_tenant()


@contextlib.asynccontextmanager
async def in_process_gateway(
    tmp_path: Path, clock: Callable[[], float] | None = None, **overrides: Any
) -> AsyncIterator[Gateway]:
    """The gateway in process (ASGITransport), its upstream the simulator in process too;
    the simulator's webhooks reach the gateway through an ASGITransport as well."""
    sim_config = SimulatorConfig(public_url="http://simulator.test")
    sim_app = create_simulator_app(sim_config)
    sim = Sim("http://simulator.test", sim_config, sim_app.state.simulator, None)  # type: ignore[arg-type]
    overrides.setdefault("public_url", "http://gateway.test")
    settings = sim_settings(sim, tmp_path / "gateway.db", **overrides)
    app = create_app(
        settings, transport=httpx.ASGITransport(app=sim_app), configure_logs=False,
        clock=clock or time.time,
    )
    # Before the simulator starts: its webhook sender takes the transport when it starts.
    sim_config.webhook_transport = httpx.ASGITransport(app=app)
    async with sim_app.router.lifespan_context(sim_app), app.router.lifespan_context(app):
        client = httpx.AsyncClient(
            base_url="http://gateway.test", transport=httpx.ASGITransport(app=app), timeout=30
        )
        gateway = Gateway("http://gateway.test", settings, None, app, client)
        gateway.simulator = sim  # type: ignore[attr-defined]
        try:
            yield gateway
        finally:
            await gateway.close_clients()
