"""The OpenAPI document (openapi/openapi.yaml, served at /openapi.json) against the app:
it is valid OpenAPI 3.1, it names exactly the routes the app serves, and schemathesis finds
no 5xx and no answer that the document does not describe.

The schemathesis run is bounded: ``MAX_EXAMPLES`` generated cases per operation, each one
request to the in-process app (its WaveSpeed the in-process simulator).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from gateway.api.ops import OPENAPI_PATH
from gateway.app import create_app
from gateway.simulator import SimulatorConfig, create_simulator_app
from gateway.store.sqlite import SQLiteStore
from gateway.tenancy import create_tenant, issue_key
from tests.conftest import Sim, in_process_gateway, sim_settings

METHODS = ("get", "post", "put", "patch", "delete")
MAX_EXAMPLES = 15
ADMIN_TOKEN = "admin-token-for-schemathesis"
# Routes answered on purpose without an operation of their own: anything else under /api/v3
# answers 404 in WaveSpeed's envelope (the document names the paths that exist).
UNDOCUMENTED = {"/api/v3/{path:path}"}


def document() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(OPENAPI_PATH.read_text())
    return doc


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield method.upper(), path


def test_document_is_valid_openapi_3_1() -> None:
    doc = document()
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    ids = [doc["paths"][p][m.lower()]["operationId"] for m, p in operations(doc)]
    assert len(ids) == len(set(ids)), "operationIds must be unique"


async def test_served_at_openapi_json(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path) as gateway:
        response = await gateway.client.get("/openapi.json")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == document()


def _example(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def _serving_route(app: Any, method: str, path: str) -> Route | None:
    """The route Starlette would run for ``method path`` (the first full match, in order)."""
    scope = {"type": "http", "method": method, "path": _example(path), "root_path": ""}
    for route in app.routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            assert isinstance(route, Route)
            return route
    return None


def test_every_route_is_documented_and_every_operation_is_served(tmp_path: Path) -> None:
    sim = Sim("http://simulator.test", SimulatorConfig(), None, None)  # type: ignore[arg-type]
    app = create_app(sim_settings(sim, tmp_path / "gateway.db"), configure_logs=False)
    doc = document()
    served_by: dict[tuple[str, str], str] = {}
    for method, path in operations(doc):
        route = _serving_route(app, method, path)
        assert route is not None, f"{method} {path} is documented but no route serves it"
        assert route.path not in UNDOCUMENTED, f"{method} {path} falls through to {route.path}"
        served_by[(method, path)] = route.path
        if ":" not in route.path:
            assert route.path == path, f"{method} {path} is served by {route.path}: name it the same"
    documented_routes = {(m, route) for (m, _), route in served_by.items()}
    for route in app.routes:
        assert isinstance(route, Route)
        if route.path in UNDOCUMENTED:
            continue
        for method in sorted((route.methods or set()) - {"HEAD"}):
            assert (method, route.path) in documented_routes, (
                f"{method} {route.path} is served but not in {OPENAPI_PATH.name}: document it"
            )


# -- schemathesis ----------------------------------------------------------------------------


def _combined(sim_app: Any, gateway_app: Any) -> Any:
    """One ASGI app for schemathesis: the gateway, with the simulator's lifespan around its own."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            async with sim_app.router.lifespan_context(sim_app):
                await gateway_app(scope, receive, send)
        else:
            await gateway_app(scope, receive, send)

    app.routes = gateway_app.routes  # type: ignore[attr-defined]
    return app


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    database = tmp_path_factory.mktemp("schemathesis") / "gateway.db"

    async def seed() -> str:
        store = SQLiteStore(str(database), readers=1)
        await store.open()
        try:
            await store.migrate()
            tenant = await store.write(create_tenant("schemathesis", {}, 0.0))
            issued = await store.write(issue_key(tenant.id, "schemathesis", None, 0.0))
            return issued.secret
        finally:
            await store.close()

    key = asyncio.run(seed())
    sim_config = SimulatorConfig(public_url="http://simulator.test")
    sim_app = create_simulator_app(sim_config)
    sim = Sim("http://simulator.test", sim_config, None, None)  # type: ignore[arg-type]
    settings_ = sim_settings(
        sim, database, admin_token=ADMIN_TOKEN, webhook_grace_seconds=0,
        poll_interval_seconds=0.1, sync_mode_timeout_seconds=2,
    )
    gateway_app = create_app(
        settings_, transport=httpx.ASGITransport(app=sim_app), configure_logs=False
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", _combined(sim_app, gateway_app))

    @schema.hook
    def map_body(context: Any, body: Any) -> Any:
        return _local_urls(body)

    @schema.hook
    def map_query(context: Any, query: Any) -> Any:
        return _local_urls(query)

    schema.tenant_key = key
    try:
        yield schema
    finally:
        with contextlib.suppress(Exception):
            shutdown_lifespans()


_URL_FIELDS = ("callback_url", "url", "webhook")


def _local_urls(values: Any) -> Any:
    """Callback URLs the gateway would call (and resolve) point at a closed local port instead:
    the tests never reach outside 127.0.0.1."""
    if isinstance(values, dict):
        for name in _URL_FIELDS:
            if isinstance(values.get(name), str) and values[name].startswith(("http://", "https://")):
                values[name] = "http://127.0.0.1:9/callback"
    return values


CHECKS = [
    not_a_server_error, status_code_conformance, content_type_conformance,
    response_headers_conformance, response_schema_conformance,
]


@pytest.mark.parametrize(
    ("method", "path"), sorted(operations(document())),
    ids=[f"{m} {p}" for m, p in sorted(operations(document()))],
)
def test_the_app_answers_as_documented(method: str, path: str, api_schema: Any) -> None:
    token = ADMIN_TOKEN if path.startswith("/admin/") else api_schema.tenant_key
    operation = api_schema[path][method]

    @given(case=operation.as_strategy())
    @settings(
        max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
        suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate],
    )
    def answers_as_documented(case: Any) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)

    answers_as_documented()
