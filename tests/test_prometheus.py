"""The deploy kit against a real Prometheus (Debian's ``prometheus`` package, ``make tools``).

A gateway and the simulator run on sockets; Prometheus scrapes the gateway every second with
the scrape job of deploy/prometheus/prometheus.yml and evaluates deploy/prometheus/alerts.yml.
Traffic covers every path the dashboard and the alerts look at: completed jobs, failed ones
(WaveSpeed's failure, a submit answered 500, a 429 retried), a lost webhook found by polling,
a forged webhook, a quota rejection and a tenant at its budget, a 502 answer (WaveSpeed
refusing the gateway's key).

Then every expression of the dashboard (Grafana's variables replaced by "all" and fixed
windows) and every alert expression is evaluated through the HTTP API, and each must return
at least one series. An alert's expression is evaluated whole with ``bool`` added to its
top-level comparison, so it returns its series (0 or 1) whatever the threshold says; the
alerts that this traffic must trip are checked to be pending or firing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import GatewayFactory, Sim
from tests.helpers import wait_job, wait_until

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "kontext-gateway.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
SCRAPE = DEPLOY / "prometheus" / "prometheus.yml"
# Grafana's variables as a user who picked "All" over the last few minutes would send them.
GRAFANA_VARIABLES = {
    "$__rate_interval": "15s", "$__range": "5m", '"$tenant"': '".*"', '"$model"': '".*"',
}


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"unknown Grafana variable in {target['expr']}"
            found.append(expr)
    return found


def dashboard_variables() -> list[tuple[str, str]]:
    """(metric, label) of each ``label_values(metric, label)`` template variable."""
    out = []
    for variable in json.loads(DASHBOARD.read_text())["templating"]["list"]:
        if variable["type"] == "query":
            inner = variable["query"]["query"].removeprefix("label_values(").removesuffix(")")
            metric, label = (part.strip() for part in inner.split(","))
            out.append((metric, label))
    return out


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")


def with_bool(expr: str) -> str:
    """``expr`` with ``bool`` after its one top-level comparison (outside (), {}, [] and
    strings): the same computation, returning 0 or 1 instead of filtering series out."""
    depth, quote, found = 0, "", []
    i = 0
    while i < len(expr):
        char = expr[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = ""
        elif char in "\"'`":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0:
            op = next((op for op in _COMPARISONS if expr.startswith(op, i)), None)
            if op is not None:
                found.append((i, op))
                i += len(op)
                continue
        i += 1
    assert len(found) == 1, f"expected one top-level comparison in {expr!r}, found {found}"
    at, op = found[0]
    return f"{expr[:at]}{op} bool{expr[at + len(op):]}"


def test_with_bool_finds_the_top_level_comparison() -> None:
    assert with_bool('up{job="a"} == 0') == 'up{job="a"} == bool 0'
    assert with_bool('sum(rate(x{s=~"5.."}[5m])) / sum(rate(x[5m]))\n  > 0.05') == (
        'sum(rate(x{s=~"5.."}[5m])) / sum(rate(x[5m]))\n  > bool 0.05'
    )
    assert with_bool('max by (t) (a{l!="x>y"} / b) >= 0.9') == 'max by (t) (a{l!="x>y"} / b) >= bool 0.9'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def prometheus_for(tmp_path: Path) -> AsyncIterator[Any]:
    """Start Prometheus scraping a gateway URL; yields a function of that URL that returns
    an httpx client on Prometheus's API."""
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus package is missing: run `make tools`"
    started: list[tuple[asyncio.subprocess.Process, httpx.AsyncClient]] = []

    async def start(target_url: str) -> httpx.AsyncClient:
        config = yaml.safe_load(SCRAPE.read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"}
        config["rule_files"] = [str(ALERTS)]
        (job,) = config["scrape_configs"]
        job["scrape_interval"], job["scrape_timeout"] = "1s", "1s"
        job["static_configs"] = [{"targets": [target_url.removeprefix("http://")]}]
        path = tmp_path / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        port = free_port()
        with (tmp_path / "prometheus.log").open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                binary, f"--config.file={path}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
                stdout=log, stderr=log,
            )
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10)
        started.append((process, client))

        async def ready() -> bool:
            assert process.returncode is None, (tmp_path / "prometheus.log").read_text()
            try:
                return (await client.get("/-/ready")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(ready, within=30, interval=0.2, what="Prometheus to be ready")
        return client

    yield start
    for process, client in started:
        await client.aclose()
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await asyncio.wait_for(process.wait(), 5)


async def query(client: httpx.AsyncClient, expr: str) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/query", params={"query": expr})
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def test_every_dashboard_and_alert_expression_returns_series(
    gateway_factory: GatewayFactory, simulator: Sim, prometheus_for: Any
) -> None:
    gateway = await gateway_factory(
        webhook_grace_seconds=0.5, poll_interval_seconds=0.5, submit_deadline_seconds=1.0,
    )
    prometheus: httpx.AsyncClient = await prometheus_for(gateway.url)
    faults = simulator.config.faults

    async def scraped(expr: str) -> None:
        async def found() -> bool:
            return bool(await query(prometheus, expr))

        await wait_until(found, within=15, interval=0.2, what=f"a scrape showing {expr}")

    # Counters are compared with what the scrapes before saw: start from a scrape of nothing.
    await scraped('up{job="kontext-gateway"} == 1')
    team = await gateway.new_tenant("team-a")
    capped = await gateway.new_tenant("team-capped", limits={"images_per_day": 2, "usd_per_day": "1.00"})

    async def job(client: httpx.AsyncClient, model: str = "flux-kontext-pro", **extra: Any) -> dict[str, Any]:
        response = await client.post("/v1/jobs", json={"model": model, "prompt": "p", **extra})
        assert response.status_code == 202, response.text
        created: dict[str, Any] = response.json()
        return created

    # Completed, on both models; a tenant at its image budget, then refused by it.
    done = [await job(team.client), await job(team.client, "flux-kontext-max"), await job(capped.client)]
    done.append(await job(capped.client))
    refused = await capped.client.post("/v1/jobs", json={"model": "flux-kontext-pro", "prompt": "p"})
    assert refused.status_code == 429, refused.text
    for created in done:
        await wait_job(team.client if created in done[:2] else capped.client, created["id"], ("completed",))

    # WaveSpeed's task fails.
    faults.failure_rate = 1.0
    failed = await job(team.client, "flux-kontext-max")
    await wait_job(team.client, failed["id"], ("failed",))
    faults.failure_rate = 0.0
    # The webhook is lost: the reconciler polls it to the end.
    faults.webhook_lost_rate = 1.0
    polled = await job(team.client)
    await wait_job(team.client, polled["id"], ("completed",))
    faults.webhook_lost_rate = 0.0
    # A submit answered 429 is retried; one answered 500 fails at the submit deadline.
    faults.rate_429 = 1.0
    limited = await job(team.client)
    await wait_until(lambda: len(simulator.submits()) >= 7, what="the 429 answer")
    faults.rate_429 = 0.0
    await wait_job(team.client, limited["id"], ("completed",))
    # Twice, a scrape apart: a series born with its first event shows no rate until the next.
    faults.rate_5xx = 1.0
    unknown = [await job(team.client)]
    await scraped('gateway_upstream_calls_total{operation="submit", status="500"}')
    unknown.append(await job(team.client))
    await wait_until(lambda: len(simulator.submits()) >= 10, what="the 500 answers")
    faults.rate_5xx = 0.0
    for created in unknown:
        await wait_job(team.client, created["id"], ("failed",))
    # WaveSpeed no longer takes the gateway's key (it was rotated there): an image upload
    # fails and the gateway answers 502. Last, since nothing reaches WaveSpeed after it.
    simulator.config.api_key = "rotated-at-wavespeed"
    image = "data:image/png;base64," + base64.b64encode(b"0123456789abcdef").decode()
    upload = await team.client.post(
        "/v1/jobs", json={"model": "flux-kontext-max", "prompt": "p", "images": [image]}
    )
    assert upload.status_code == 502, upload.text
    # A forged WaveSpeed webhook.
    forged = await gateway.client.post(
        f"/webhooks/wavespeed/{done[0]['id']}", content=b"{}",
        headers={"webhook-id": "forged", "webhook-timestamp": str(int(time.time())),
                 "webhook-signature": "v3,00"},
    )
    assert forged.status_code == 401

    expressions = [*dashboard_expressions(), *(with_bool(rule["expr"]) for rule in alert_rules())]
    empty: list[str] = []

    async def all_have_series() -> bool:
        empty[:] = [expr for expr in expressions if not await query(prometheus, expr)]
        return not empty

    try:
        await wait_until(all_have_series, within=30, interval=1.0, what="series for every expression")
    except AssertionError:
        pytest.fail("expressions without series:\n" + "\n".join(empty))

    for metric, label in dashboard_variables():
        values = (await prometheus.get(f"/api/v1/label/{label}/values", params={"match[]": metric})).json()
        assert {team.id, capped.id} <= set(values["data"]) or label != "tenant", values
        assert values["data"], (metric, label)

    # The rules load and evaluate without error, and the traffic above trips what it should
    # (alerts with a "for" wait as pending; the budget alert fires at once).
    expected = {
        "KontextGatewayBudgetNearlySpent": "firing",
        "KontextGatewayWebhookSignatureFailures": "pending",
        "KontextGatewayUpstreamErrors": "pending",
        "KontextGatewayJobFailureRateHigh": "pending",
        "KontextGatewayCallbacksDeadLettered": "inactive",
        "KontextGatewayDown": "inactive",
    }
    rules: dict[str, dict[str, Any]] = {}

    async def alerts_as_expected() -> bool:
        groups = (await prometheus.get("/api/v1/rules")).json()["data"]["groups"]
        rules.clear()
        rules.update({r["name"]: r for group in groups for r in group["rules"]})
        return all(rules.get(name, {}).get("state") == state for name, state in expected.items())

    try:
        await wait_until(alerts_as_expected, within=15, interval=0.5, what="the alerts' states")
    except AssertionError:
        pytest.fail(f"alert states: { {name: rules.get(name, {}).get('state') for name in expected} }")
    assert len(rules) == len(alert_rules())
    for name, rule in rules.items():
        assert rule["health"] == "ok", (name, rule.get("lastError"))
    budget = rules["KontextGatewayBudgetNearlySpent"]
    assert {a["labels"]["tenant"] for a in budget["alerts"]} == {capped.id}
    assert {a["labels"]["limit"] for a in budget["alerts"]} == {"images_per_day"}
