"""Metrics, request ids and logs: what an operator sees of the gateway.

Over real sockets where webhooks matter (a job's whole path), in process otherwise.
"""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import Route

from gateway.logs import configure_logging, reset_logging
from tests.conftest import Gateway, Sim, TenantHandle, in_process_gateway
from tests.helpers import wait_job, wait_until


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    """One sample's value; a series that is not exported fails the test (it is not a 0)."""
    found = samples(text).get((name, frozenset(labels.items())))
    assert found is not None, f"no series {name}{labels}"
    return found


def series(text: str, name: str) -> list[dict[str, str]]:
    return [dict(labels) for (sample, labels) in samples(text) if sample == name]


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The gateway's JSON log lines, as production writes them (structlog and stdlib)."""
    buffer = io.StringIO()
    real_stderr, sys.stderr = sys.stderr, buffer
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging("json", "info")
    finally:
        sys.stderr = real_stderr
    try:
        yield buffer
    finally:
        reset_logging()
        structlog.contextvars.clear_contextvars()
        root.handlers, root.level = handlers, level


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


async def test_request_id_is_given_back_kept_or_replaced(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path) as gateway:
        fresh = await gateway.client.get("/healthz")
        assert fresh.headers["x-request-id"].startswith("req_")
        other = await gateway.client.get("/healthz")
        assert other.headers["x-request-id"] != fresh.headers["x-request-id"]

        kept = await gateway.client.get("/healthz", headers={"X-Request-ID": "trace-42/abc"})
        assert kept.headers["x-request-id"] == "trace-42/abc"

        for insane in ("x" * 129, "two words", ""):
            replaced = await gateway.client.get("/healthz", headers={"X-Request-ID": insane})
            assert replaced.headers["x-request-id"].startswith("req_"), insane

        # Answers made outside the router carry it too: a 404, and a 401 from a handler.
        assert (await gateway.client.get("/nowhere")).headers["x-request-id"].startswith("req_")
        unauthorized = await gateway.client.get("/v1/jobs", headers={"X-Request-ID": "r-1"})
        assert unauthorized.status_code == 401
        assert unauthorized.headers["x-request-id"] == "r-1"


async def test_http_metrics_use_route_templates_never_raw_paths(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path) as gateway:
        tenant = await gateway.new_tenant()
        created = await tenant.client.post("/v1/jobs", json={"model": "flux-kontext-pro", "prompt": "a"})
        job_id = created.json()["id"]
        assert (await tenant.client.get(f"/v1/jobs/{job_id}")).status_code == 200
        assert (await tenant.client.get("/v1/jobs/job_doesnotexist")).status_code == 404
        assert (await gateway.client.get(f"/no/such/{job_id}")).status_code == 404
        too_big = await tenant.client.post(
            "/v1/jobs", content=b"x" * (gateway.settings.max_body_bytes + 1),
            headers={"content-type": "application/json"},
        )
        assert too_big.status_code == 413

        text = (await gateway.client.get("/metrics")).text
        assert job_id not in text
        name = "gateway_http_requests_total"
        assert value(text, name, method="POST", route="/v1/jobs", status="202") == 1
        assert value(text, name, method="GET", route="/v1/jobs/{job_id}", status="200") == 1
        assert value(text, name, method="GET", route="/v1/jobs/{job_id}", status="404") == 1
        assert value(text, name, method="GET", route="unmatched", status="404") == 1
        # Refused by the body limit before routing: still counted under its route template.
        assert value(text, name, method="POST", route="/v1/jobs", status="413") == 1
        assert value(
            text, "gateway_http_request_duration_seconds_count",
            method="POST", route="/v1/jobs", status="202",
        ) == 1
        for labels in series(text, name):
            assert labels["route"] == "unmatched" or labels["route"].startswith("/"), labels
        assert value(text, "gateway_jobs_accepted_total", tenant=tenant.id, model="flux-kontext-pro") == 1
        # Known label values exist at zero before anything happens, so alerts see a series.
        assert ("gateway_callbacks_total", frozenset({("result", "dead_lettered")})) in samples(text)
        assert value(text, "gateway_wavespeed_webhooks_total", result="bad_signature") == 0


async def test_job_metrics_after_completed_and_failed_jobs(
    gateway: Gateway, tenant: TenantHandle, simulator: Sim
) -> None:
    ok = await tenant.client.post("/v1/jobs", json={"model": "flux-kontext-pro", "prompt": "ok", "wait": 10})
    assert ok.json()["status"] == "completed", ok.text
    simulator.config.faults.failure_rate = 1.0
    bad = await tenant.client.post("/v1/jobs", json={"model": "flux-kontext-max", "prompt": "no", "wait": 10})
    assert bad.json()["status"] == "failed", bad.text
    simulator.config.faults.failure_rate = 0.0
    simulator.config.faults.paused = True
    held = await tenant.client.post("/v1/jobs", json={"model": "flux-kontext-pro", "prompt": "held"})
    await wait_job(tenant.client, held.json()["id"], ("submitted", "processing"))

    text = (await gateway.client.get("/metrics")).text
    simulator.config.faults.paused = False
    finished = "gateway_jobs_finished_total"
    assert value(text, finished, tenant=tenant.id, model="flux-kontext-pro", outcome="completed") == 1
    assert value(text, finished, tenant=tenant.id, model="flux-kontext-max", outcome="failed") == 1
    assert value(text, "gateway_job_failures_total", model="flux-kontext-max", reason="upstream_failed") == 1
    assert value(
        text, "gateway_job_transitions_total",
        from_status="submitted", to_status="completed", source="webhook",
    ) == 1
    stage = "gateway_job_stage_duration_seconds_count"
    for name in ("queued", "upstream", "total"):
        assert value(text, stage, model="flux-kontext-pro", stage=name, outcome="completed") == 1
    assert value(text, "gateway_jobs_active", model="flux-kontext-pro", status="submitted") == 1
    assert value(text, "gateway_jobs_active", model="flux-kontext-max", status="queued") == 0
    assert value(text, "gateway_upstream_in_flight") == 1
    assert value(text, "gateway_upstream_calls_total", operation="submit", status="200") == 3
    assert value(text, "gateway_wavespeed_webhooks_total", result="applied") == 2
    assert value(text, "gateway_images_total", tenant=tenant.id, model="flux-kontext-pro") == 1
    spent = value(text, "gateway_spend_usd_total", tenant=tenant.id, model="flux-kontext-pro")
    assert spent == pytest.approx(0.04)


async def test_reconciler_polls_and_backlog_are_counted(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path, webhook_grace_seconds=0, poll_interval_seconds=0.1) as gateway:
        gateway.simulator.config.faults.webhook_lost_rate = 1.0  # type: ignore[attr-defined]
        tenant = await gateway.new_tenant()  # every job is found by polling
        created = await tenant.client.post("/v1/jobs", json={"model": "flux-kontext-pro", "prompt": "p"})
        await wait_job(tenant.client, created.json()["id"], ("completed",))
        text = (await gateway.client.get("/metrics")).text
        assert value(text, "gateway_reconciler_polls_total", result="applied") >= 1
        assert value(text, "gateway_reconciler_backlog") == 0
        assert value(text, "gateway_job_transitions_total", from_status="submitted",
                     to_status="completed", source="poll") == 1


async def test_one_job_can_be_followed_through_the_logs_and_no_secret_is_logged(
    json_logs: io.StringIO, gateway: Gateway, tenant: TenantHandle, simulator: Sim
) -> None:
    response = await tenant.client.post(
        "/v1/jobs", json={"model": "flux-kontext-pro", "prompt": "follow me", "wait": 10},
        headers={"X-Request-ID": "req-follow-1"},
    )
    job = response.json()
    assert job["status"] == "completed", response.text
    await tenant.client.get("/v1/jobs/job_unknown0000000000000000")
    await gateway.client.post(
        f"/webhooks/wavespeed/{job['id']}", content=b"{}",
        headers={"webhook-id": "x", "webhook-timestamp": "1", "webhook-signature": "v3,00"},
    )
    await wait_until(
        lambda: any(r.get("event") == "webhook_bad_signature" for r in lines(json_logs)),
        what="the bad signature's log line",
    )

    records = lines(json_logs)
    of_job = [r for r in records if r.get("job_id") == job["id"]]
    events = [r["event"] for r in of_job]
    assert "job_accepted" in events and "webhook_received" in events
    moves = [(r["from_status"], r["to_status"]) for r in of_job if r["event"] == "job_transition"]
    assert moves == [("queued", "submitted"), ("submitted", "completed")]
    for record in of_job:
        assert {"timestamp", "level"} <= record.keys()

    in_request = [r for r in records if r.get("request_id") == "req-follow-1"]
    assert {r["event"] for r in in_request} >= {"job_accepted", "http_request"}
    for record in in_request:
        assert record["tenant_id"] == tenant.id, record
    access = next(r for r in in_request if r["event"] == "http_request")
    assert access["route"] == "/v1/jobs" and access["status"] == 200
    # Request context does not leak into the next request or into background work.
    for record in records:
        webhook_route = record.get("route") == "/webhooks/wavespeed/{job_id}"
        if record.get("event") == "http_request" and webhook_route:
            assert record["request_id"] != "req-follow-1" and "tenant_id" not in record

    text = json_logs.getvalue()
    for secret in (tenant.key, simulator.config.webhook_secret, simulator.config.api_key):
        assert secret not in text


def test_redaction_masks_secret_fields_and_values() -> None:
    from gateway.logs import REDACTED, redact

    event = redact(None, "info", {
        "event": "x", "api_key": "abc", "admin_token": "t", "key_id": "key_1",
        "error": "refused Bearer kgw_live_AbC123 and whsec_c2VjcmV0", "nested": {"url": "kgw_test_Zz9"},
    })
    assert event["api_key"] == REDACTED and event["admin_token"] == REDACTED
    assert event["key_id"] == "key_1"
    assert "kgw_live_AbC123" not in event["error"] and "whsec_c2VjcmV0" not in event["error"]
    assert event["nested"] == {"url": REDACTED}


async def test_quota_use_rejections_and_budget_gauges(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path) as gateway:
        limited = await gateway.new_tenant(limits={"images_per_day": 1, "usd_per_month": "1.00"})
        unlimited = await gateway.new_tenant()
        body = {"model": "flux-kontext-pro", "prompt": "p"}
        assert (await limited.client.post("/v1/jobs", json=body)).status_code == 202
        refused = await limited.client.post("/v1/jobs", json=body)
        assert refused.status_code == 429, refused.text
        assert (await unlimited.client.post("/v1/jobs", json=body)).status_code == 202

        text = (await gateway.client.get("/metrics")).text
        rejections = "gateway_quota_rejections_total"
        assert value(text, rejections, tenant=limited.id, limit="images_per_day") == 1
        assert value(text, "gateway_quota_used", tenant=limited.id, limit="images_per_day") == 1
        assert value(text, "gateway_quota_limit", tenant=limited.id, limit="images_per_day") == 1
        assert value(text, "gateway_quota_used", tenant=limited.id, limit="usd_per_month") == 0.04
        assert value(text, "gateway_quota_limit", tenant=limited.id, limit="usd_per_month") == 1
        assert not [s for s in series(text, "gateway_quota_limit") if s["tenant"] == unlimited.id]

        # A limit taken away stops being exported.
        await gateway.services.store.write(
            lambda tx: tx.update_tenant(limited.id, limits={"usd_per_month": "1.00"})
        )
        text = (await gateway.client.get("/metrics")).text
        assert {s["limit"] for s in series(text, "gateway_quota_limit")} == {"usd_per_month"}


async def test_an_unexpected_error_is_a_500_with_request_id_counted_and_logged(
    tmp_path: Path, json_logs: io.StringIO
) -> None:
    async def boom(request: Any) -> Any:
        raise RuntimeError("a bug")

    async with in_process_gateway(tmp_path) as gateway:
        gateway.app.router.routes.append(Route("/boom/{thing}", boom, methods=["GET"]))
        transport = httpx.ASGITransport(app=gateway.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            response = await client.get("/boom/1", headers={"X-Request-ID": "req-boom"})
            metrics = (await client.get("/metrics")).text
    assert response.status_code == 500
    assert response.json() == {
        "error": {"code": "internal_error", "message": "internal error", "details": []}
    }
    assert response.headers["x-request-id"] == "req-boom"
    counted = value(metrics, "gateway_http_requests_total", method="GET", route="/boom/{thing}", status="500")
    assert counted == 1
    logged = [r for r in lines(json_logs) if r.get("event") == "unhandled_error"]
    assert logged and logged[0]["request_id"] == "req-boom" and "a bug" in logged[0]["exception"]


def test_log_timestamps_are_utc_to_the_microsecond() -> None:
    from datetime import UTC, datetime

    from gateway.logs import prepare

    before = datetime.now(UTC)
    stamped = prepare(None, "info", {})["timestamp"]
    after = datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamped), stamped
    assert before.replace(microsecond=0) <= datetime.fromisoformat(stamped) <= after


def test_every_line_gets_its_context_level_and_redaction_in_one_step() -> None:
    from gateway.logs import REDACTED, fresh_context, prepare

    with fresh_context(request_id="req-1", job_id="job_bound"):
        line = prepare(None, "warn", {"event": "x", "job_id": "job_given", "token": "t"})
        assert line["request_id"] == "req-1" and line["job_id"] == "job_given"
        assert line["level"] == "warning" and line["token"] == REDACTED
        assert prepare(None, "exception", {"event": "y"})["level"] == "error"
        assert prepare(None, "info", {"event": "z"})["level"] == "info"


def test_what_is_bound_is_redacted_on_every_line_that_carries_it() -> None:
    # A client may send its key as its X-Request-ID; a caller may bind a secret by mistake.
    from gateway.logs import REDACTED, bind, fresh_context, prepare

    with fresh_context(request_id="Bearer kgw_live_AbC123"):
        bind(tenant_id="ten_1", webhook_secret="whsec_c2VjcmV0", note="sent kgw_test_Zz9")
        for _ in range(2):
            line = prepare(None, "info", {"event": "x"})
            assert line["request_id"] == REDACTED and line["webhook_secret"] == REDACTED
            assert line["note"] == f"sent {REDACTED}" and line["tenant_id"] == "ten_1"

@pytest.mark.parametrize("fmt", ["json", "console"])
def test_the_configured_level_format_and_exceptions_apply_to_every_line(fmt: str) -> None:
    from gateway.logs import configure_logging, get_logger, reset_logging

    buffer = io.StringIO()
    real_stderr, sys.stderr = sys.stderr, buffer
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging(fmt, "warning")  # type: ignore[arg-type]
        log = get_logger()
        log.info("quiet", n=1)
        log.warning("loud", n=2)
        log.warning("%s-style", "percent")
        try:
            raise ValueError("the cause")
        except ValueError:
            log.exception("failed", n=3)
        logging.getLogger("gateway.tests.stdlib").warning("from the standard library")
    finally:
        sys.stderr = real_stderr
        reset_logging()
        root.handlers, root.level = handlers, level
    text = buffer.getvalue()
    assert "quiet" not in text
    assert "percent-style" in text and "from the standard library" in text
    assert "ValueError: the cause" in text and "Traceback" in text
    if fmt == "json":
        records = lines(buffer)
        assert [r["event"] for r in records] == [
            "loud", "percent-style", "failed", "from the standard library",
        ]
        assert [r["level"] for r in records] == ["warning", "warning", "error", "warning"]
        assert records[2]["n"] == 3 and "exc_info" not in records[2]
