"""The micro-benchmarks (store, upstream transport) in their own pinned processes, and the
transport correctness checks."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bench.plan import Plan
from bench.servers import start_server
from bench.store_bench import StoreRun
from bench.transport_bench import TransportRun
from bench.transport_checks import Check, run_checks

ROOT = Path(__file__).resolve().parent.parent


def _child(module: str, args: list[str], timeout: float) -> list[dict[str, object]]:
    finished = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=ROOT,
        timeout=timeout, check=False,
    )
    if finished.returncode != 0:
        raise RuntimeError(f"{module} failed:\n{finished.stderr[-3000:]}")
    data: list[dict[str, object]] = json.loads(finished.stdout.strip().splitlines()[-1])
    return data


def store_runs(plan: Plan, log: Callable[[str], None]) -> list[StoreRun]:
    """Both commit strategies at 1 and 64 writers, ``plan.repeat`` times, on the server CPU."""
    args = ["--dir", str(plan.workdir), "--seconds", str(plan.store_seconds),
            "--max-jobs", str(plan.store_max_rows), "--repeat", str(plan.repeat)]
    if plan.cpus.server is not None:
        args += ["--cpu", str(plan.cpus.server)]
    timeout = 60 + plan.repeat * 4 * (plan.store_seconds + 5)
    runs = [StoreRun(**row) for row in _child("bench.store_bench", args, timeout)]  # type: ignore[arg-type]
    for run in runs:
        log(f"  {run.mode:>18} writers={run.writers:<3} {run.jobs_per_second:9,.0f} jobs/s")
    return runs


def transport_runs(
    plan: Plan, transports: tuple[str, ...], log: Callable[[str], None]
) -> list[TransportRun]:
    """Client on the server CPU, a fresh simulator on the load CPU for each repeat (its memory
    grows with every prediction); transports interleaved."""
    runs: list[TransportRun] = []
    for index in range(plan.repeat):
        simulator = start_server("simulator", f"simulator-transport-{index}",
                                 cpu=plan.cpus.load, workdir=plan.workdir, ready_path="/_sim/faults")
        try:
            for transport in transports:
                args = ["--base-url", simulator.url, "--transport", transport,
                        "--seconds", str(plan.transport_seconds),
                        "--max-calls", str(plan.transport_max_calls)]
                if plan.cpus.server is not None:
                    args += ["--cpu", str(plan.cpus.server)]
                timeout = 60 + 3 * plan.transport_seconds
                for row in _child("bench.transport_bench", args, timeout):
                    run = TransportRun(**row)  # type: ignore[arg-type]
                    runs.append(run)
                    log(f"  run {index + 1}/{plan.repeat} {transport:>7} in flight "
                        f"{run.in_flight:<3} {run.cpu_per_call_us:7,.0f} us CPU/call "
                        f"{run.calls_per_second:7,.0f} calls/s")
        finally:
            simulator.stop()
    return runs


def transport_checks(plan: Plan, transports: tuple[str, ...]) -> dict[str, list[Check]]:
    simulator = start_server("simulator", "simulator-checks", cpu=plan.cpus.load,
                             workdir=plan.workdir, ready_path="/_sim/faults")
    try:
        return asyncio.run(run_checks(transports, simulator.url))
    finally:
        simulator.stop()
