"""Medians, ratios against the issue's targets, the printed table and the JSON file."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.load import LoadRun
from bench.scenarios import HttpResults
from bench.store_bench import StoreRun
from bench.transport_bench import TransportRun
from bench.transport_checks import Check, passed

ACCEPT_TARGET = 0.35  # accept req/s >= 0.35 x baseline req/s
FULL_CYCLE_TARGET = 0.05  # full-cycle jobs/s >= 0.05 x baseline req/s
ADDED_LATENCY_TARGET_MS = 2.0  # median added latency per job at low load


def median(values: Iterable[float]) -> float:
    items = list(values)
    return statistics.median(items) if items else float("nan")


def spread(values: Iterable[float]) -> float:
    """(max - min) / median: how much the runs of one figure disagree."""
    items = list(values)
    if len(items) < 2:
        return 0.0
    mid = statistics.median(items)
    return (max(items) - min(items)) / mid if mid else 0.0


@dataclass(frozen=True)
class HttpFigure:
    per_second: float  # req/s, or completed jobs/s for the full cycle
    spread: float
    p50_ms: float
    p99_ms: float
    server_cpu_us: float  # CPU of the server under test per request (all its threads)
    server_busy: float  # fraction of one CPU the server under test used
    load_busy: float  # fraction of one CPU wrk used (well below 1: wrk kept up)
    simulator_busy: float | None  # full cycle: the simulator's share of the load CPU
    others_busy: float  # share of the server CPU taken by other processes during the runs
    others_load_busy: float  # the same on the load CPU (where wrk and the simulator run)
    runs: int


def http_figure(runs: list[LoadRun], server_of: Callable[[LoadRun], str]) -> HttpFigure:
    rates = [r.good_per_second for r in runs]
    return HttpFigure(
        per_second=median(rates), spread=spread(rates),
        p50_ms=median(r.p50_ms for r in runs), p99_ms=median(r.p99_ms for r in runs),
        server_cpu_us=median(r.cpu_per_request_us(server_of(r)) for r in runs),
        server_busy=median(r.cpu_busy(server_of(r)) for r in runs),
        load_busy=median(r.load_cpu_seconds / r.seconds for r in runs),
        simulator_busy=median(r.cpu_busy("simulator") for r in runs)
        if key_is_full_cycle(server_of(runs[0])) else None,
        others_busy=median(r.others_on_server_cpu for r in runs),
        others_load_busy=median(r.others_on_load_cpu for r in runs),
        runs=len(runs),
    )


def key_is_full_cycle(server: str) -> bool:
    """A server whose runs drive the simulator (a gateway's full cycle, the floor)."""
    return server == "floor" or (server.startswith("gateway-") and server != "gateway-accept")


def _server_for(key: str) -> str:
    label = key.split("/", 1)[0]
    if label in ("baseline", "floor"):
        return label
    if label == "accept":
        return "gateway-accept"
    return "gateway-" + label.removeprefix("full-")


def http_figures(results: HttpResults) -> dict[str, HttpFigure]:
    return {
        key: http_figure(runs, lambda _r, key=key: _server_for(key))  # type: ignore[misc]
        for key, runs in results.runs.items()
    }


def simulator_ms_per_job(runs: list[LoadRun]) -> float:
    return median(r.cpu_seconds["simulator"] / max(1, r.matched or 0) * 1000 for r in runs)


def added_latency(results: HttpResults, transports: tuple[str, ...]) -> dict[str, Any]:
    """What the gateway adds at low load (one connection, sequential requests)."""
    out: dict[str, Any] = {}
    base = results.runs.get("baseline/1")
    accept = results.runs.get("accept/1")
    if base and accept:
        out["accept"] = {
            "baseline_p50_ms": median(r.p50_ms for r in base),
            "gateway_p50_ms": median(r.p50_ms for r in accept),
            "added_p50_ms": median(r.p50_ms for r in accept) - median(r.p50_ms for r in base),
            "added_p99_ms": median(r.p99_ms for r in accept) - median(r.p99_ms for r in base),
        }
    base_ms = median(r.p50_ms for r in base) if base else 0.0
    floor = results.runs.get("floor/1")
    if floor:
        out["floor"] = _job_latency(floor, base_ms)
    for transport in transports:
        jobs = results.runs.get(f"full-{transport}/1")
        if jobs:
            stored = results.store_job_ms.get(transport, [])
            out[f"job_{transport}"] = {
                **_job_latency(jobs, base_ms),
                **{f"store_{phase}_ms": median(run[phase] for run in stored)
                   for phase in (stored[0] if stored else {})},
            }
    return out


def _job_latency(runs: list[LoadRun], base_ms: float) -> dict[str, float]:
    """A job's median time at one client, less the simulator's CPU and the baseline's round
    trip: the latency the server added."""
    job_ms, sim_ms = median(r.p50_ms for r in runs), simulator_ms_per_job(runs)
    return {
        "job_p50_ms": job_ms,
        "simulator_cpu_ms_per_job": sim_ms,
        "baseline_p50_ms": base_ms,
        "added_p50_ms": job_ms - sim_ms - base_ms,
    }


def store_figures(runs: list[StoreRun]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[StoreRun]] = {}
    for run in runs:
        groups.setdefault(f"{run.mode}/{run.writers}", []).append(run)
    figures: dict[str, dict[str, float]] = {}
    for key, group in groups.items():
        rates = [r.jobs_per_second for r in group]
        figure = {"jobs_per_second": median(rates), "spread": spread(rates)}
        batches = [r.jobs / r.batches for r in group if r.batches]
        if batches:
            figure["jobs_per_commit"] = median(batches)
        figures[key] = figure
    return figures


def transport_figures(runs: list[TransportRun]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[TransportRun]] = {}
    for run in runs:
        groups.setdefault(f"{run.transport}/{run.in_flight}", []).append(run)
    return {
        key: {
            "cpu_per_call_us": median(r.cpu_per_call_us for r in group),
            "calls_per_second": median(r.calls_per_second for r in group),
            "client_busy": median(r.cpu_seconds / r.seconds for r in group),
            "spread": spread(r.cpu_per_call_us for r in group),
        }
        for key, group in groups.items()
    }


def ratios(figures: dict[str, HttpFigure], added: dict[str, Any],
           transports: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    base = figures.get("baseline/64")
    if base is None:
        return out
    accept = figures.get("accept/64")
    if accept is not None:
        out["accept_vs_baseline"] = _target(accept.per_second / base.per_second, ">=", ACCEPT_TARGET)
        # The same ratio from CPU per request: what each would serve with a whole CPU. Less
        # sensitive to other work on the machine than req/s; an estimate, not the target.
        out["accept_vs_baseline_by_cpu"] = _target(
            base.server_cpu_us / accept.server_cpu_us, ">=", ACCEPT_TARGET)
    for transport in transports:
        full = figures.get(f"full-{transport}/64")
        if full is not None:
            out[f"full_cycle_{transport}_vs_baseline"] = _target(
                full.per_second / base.per_second, ">=", FULL_CYCLE_TARGET)
            out[f"full_cycle_{transport}_vs_baseline_by_cpu"] = _target(
                base.server_cpu_us / full.server_cpu_us, ">=", FULL_CYCLE_TARGET)
        job = added.get(f"job_{transport}")
        if job is not None:
            out[f"added_latency_per_job_{transport}_ms"] = _target(
                job["added_p50_ms"], "<", ADDED_LATENCY_TARGET_MS)
    return out


def _target(value: float, op: str, target: float) -> dict[str, Any]:
    met = value >= target if op == ">=" else value < target
    return {"value": value, "target": f"{op} {target:g}", "met": met}


def transport_verdict(
    transports: dict[str, dict[str, float]],
    figures: dict[str, HttpFigure],
    checks: dict[str, list[Check]],
) -> dict[str, Any]:
    """The faster transport (less CPU per call at 64 in flight), if its checks pass."""
    names = sorted({key.split("/")[0] for key in transports})
    if not names:
        return {}
    by_cpu = sorted(names, key=lambda n: transports[f"{n}/64"]["cpu_per_call_us"])
    faster = by_cpu[0]
    correct = {name: passed(checks.get(name, [])) for name in names}
    keep = faster if correct[faster] else next((n for n in by_cpu if correct[n]), None)
    full = {n: figures[f"full-{n}/64"].per_second for n in names if f"full-{n}/64" in figures}
    return {"faster": faster, "correct": correct, "keep": keep, "full_cycle_jobs_per_second": full}


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")
