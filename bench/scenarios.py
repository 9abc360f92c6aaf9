"""The HTTP scenarios, driven by wrk: the baseline against the gateway's accept path, and the
full job cycle (accept -> dispatch -> simulator -> webhook -> completed) per transport.

Accept only: the gateway runs with GATEWAY_UPSTREAM_MAX_CONCURRENCY=1 against a *paused*
simulator in its own process on the load CPU. The first job is submitted and stays
"processing" upstream; every later job stays queued in the dispatcher's memory. So no submit
and no webhook costs the gateway's CPU during the run: the figure is the accept path alone.
(A live simulator would have put the dispatch and webhook work of earlier jobs on the same
CPU, and the figure would have been a mix of accept and full cycle.)

Full cycle: POST /v1/jobs with ``wait`` (the gateway holds the answer until the job is
terminal), against a simulator with zero latency on the load CPU; an answer counts only if
it is 200 with status "completed". jobs/s = such answers per second. At one connection the
protocol floor (bench.floor_app: the same messages, no gateway work) runs beside it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import profile
from bench.load import Expect, LoadRun, run_wrk
from bench.payload import job_body
from bench.plan import Plan
from bench.servers import (
    ServerProcess,
    gateway_env,
    prepare_gateway_database,
    set_simulator_faults,
    settle,
    start_server,
)

ACCEPTED = Expect(202, '"status":"queued"')
COMPLETED = Expect(200, '"status":"completed"')
WAIT_SECONDS = 30
ACCEPT_METHOD = (
    "accept path measured with GATEWAY_UPSTREAM_MAX_CONCURRENCY=1 against a paused simulator "
    "(own process, load CPU): one job sits at the simulator and every other job stays queued, "
    "so no submit or webhook work lands on the gateway's CPU during the run"
)

Series = dict[str, list[LoadRun]]


@dataclass
class HttpResults:
    runs: Series = field(default_factory=dict)
    # Per full-cycle low-load run: the medians of a job's phases as the gateway's own store
    # timestamps say (see ``store_job_phases_ms``), in ms.
    store_job_ms: dict[str, list[dict[str, float]]] = field(default_factory=dict)

    def add(self, key: str, run: LoadRun) -> None:
        self.runs.setdefault(key, []).append(run)


def _gateway(
    plan: Plan, name: str, *, upstream: str, transport: str, max_concurrency: int
) -> tuple[ServerProcess, str, Path]:
    database = plan.workdir / f"{name}.db"
    key = prepare_gateway_database(database)

    def env(url: str) -> dict[str, str]:
        return gateway_env(
            url, database=database, upstream=upstream, transport=transport,
            max_concurrency=max_concurrency, log_level=plan.log_level,
        )

    server = start_server("gateway", name, cpu=plan.cpus.server, workdir=plan.workdir, env=env)
    return server, key, database


def _simulator(plan: Plan, name: str) -> ServerProcess:
    return start_server(
        "simulator", name, cpu=plan.cpus.load, workdir=plan.workdir, ready_path="/_sim/faults"
    )


def accept_vs_baseline(plan: Plan, results: HttpResults, log: Callable[[str], None]) -> None:
    """Baseline and accept path, interleaved run by run, at 64 connections then at one."""
    servers: list[ServerProcess] = []
    try:
        simulator = _simulator(plan, "simulator-paused")
        servers.append(simulator)
        set_simulator_faults(simulator, paused=True)
        baseline = start_server("baseline", "baseline", cpu=plan.cpus.server, workdir=plan.workdir)
        servers.append(baseline)
        gateway, key, _ = _gateway(
            plan, "gateway-accept", upstream=simulator.url, transport="aiohttp", max_concurrency=1
        )
        servers.append(gateway)
        targets = [("baseline", baseline, None), ("accept", gateway, key)]
        for _, server, auth in targets:
            _run(plan, server, servers, auth=auth, body=job_body(), connections=16,
                 seconds=plan.warmup_seconds, expect=ACCEPTED)
        for index in range(plan.repeat):
            for connections, seconds in ((plan.connections, plan.seconds), (1, plan.low_seconds)):
                for label, server, auth in targets:
                    run = _run(plan, server, servers, auth=auth, body=job_body(),
                               connections=connections, seconds=seconds, expect=ACCEPTED)
                    results.add(f"{label}/{connections}", run)
                    log(f"  run {index + 1}/{plan.repeat} {label:>8} c={connections:<3} "
                        f"{run.good_per_second:9,.0f} req/s  p50 {run.p50_ms:6.2f} ms  "
                        f"p99 {run.p99_ms:6.2f} ms")
    finally:
        for server in reversed(servers):
            server.stop()


def full_cycle(
    plan: Plan, transports: tuple[str, ...], results: HttpResults, log: Callable[[str], None]
) -> None:
    """Gateway + simulator (latency 0), one gateway per transport, interleaved run by run."""
    servers: list[ServerProcess] = []
    try:
        simulator = _simulator(plan, "simulator")
        servers.append(simulator)
        gateways: list[tuple[str, ServerProcess, str, Path]] = []
        for transport in transports:
            gateway, key, database = _gateway(
                plan, f"gateway-{transport}", upstream=simulator.url, transport=transport,
                max_concurrency=100,
            )
            servers.append(gateway)
            gateways.append((transport, gateway, key, database))
        floor = start_server(
            "floor", "floor", cpu=plan.cpus.server, workdir=plan.workdir,
            env=lambda url: {"BENCH_FLOOR_PUBLIC_URL": url, "BENCH_FLOOR_UPSTREAM": simulator.url},
        )
        servers.append(floor)
        body = job_body(wait_seconds=WAIT_SECONDS)
        for _, gateway, key, _ in gateways:
            _run(plan, gateway, servers, auth=key, body=body, connections=16,
                 seconds=plan.warmup_seconds, expect=COMPLETED)
        _run(plan, floor, servers, auth=None, body=body, connections=1,
             seconds=plan.warmup_seconds, expect=COMPLETED)
        for index in range(plan.repeat):
            for transport, gateway, key, _ in gateways:
                run = _run(plan, gateway, servers, auth=key, body=body,
                           connections=plan.connections, seconds=plan.seconds, expect=COMPLETED)
                results.add(f"full-{transport}/{plan.connections}", run)
                log(f"  run {index + 1}/{plan.repeat} full cycle ({transport:>7}) "
                    f"c={plan.connections:<3} {run.good_per_second:9,.0f} jobs/s")
            for transport, gateway, key, database in gateways:
                started = time.time()
                run = _run(plan, gateway, servers, auth=key, body=body, connections=1,
                           seconds=plan.low_seconds, expect=COMPLETED)
                results.add(f"full-{transport}/1", run)
                stored = store_job_phases_ms(database, started, time.time())
                results.store_job_ms.setdefault(transport, []).append(stored)
                log(f"  run {index + 1}/{plan.repeat} full cycle ({transport:>7}) c=1   "
                    f"job p50 {run.p50_ms:6.2f} ms  (store: {stored['created_to_finished']:.2f} ms)")
            run = _run(plan, floor, servers, auth=None, body=body, connections=1,
                       seconds=plan.low_seconds, expect=COMPLETED)
            results.add("floor/1", run)
            log(f"  run {index + 1}/{plan.repeat} protocol floor    c=1   "
                f"job p50 {run.p50_ms:6.2f} ms")
    finally:
        for server in reversed(servers):
            server.stop()


def _run(
    plan: Plan,
    server: ServerProcess,
    servers: list[ServerProcess],
    *,
    auth: str | None,
    body: str,
    connections: int,
    seconds: float,
    expect: Expect,
) -> LoadRun:
    with contextlib.ExitStack() as stack:
        if plan.profile_dir is not None and server.name.startswith("gateway"):
            plan.profile_dir.mkdir(parents=True, exist_ok=True)
            out = plan.profile_dir / f"{server.name}-c{connections}-{time.strftime('%H%M%S')}"
            stack.enter_context(profile.sampled(server.pid, out, seconds, plan.cpus.load))
        run = run_wrk(
            server, body=body, connections=connections, seconds=seconds, cpu=plan.cpus.load,
            watch=servers, auth=auth, expect=expect,
        )
    settle(servers)
    if run.matched is not None and run.matched < run.requests:
        raise RuntimeError(
            f"{server.name}: {run.requests - run.matched} of {run.requests} answers were not "
            f"{expect.status} with {expect.body_contains}:\n{server.log_tail()}"
        )
    return run


def store_job_phases_ms(database: Path, since: float, until: float) -> dict[str, float]:
    """Medians, over the jobs accepted in [since, until] and completed, of their phases as
    the gateway stamped them: ``created_to_submitted`` (the accept's commit, the dispatch, the
    submit's round trip, to its answer), ``submitted_to_finished`` (to the webhook's arrival)
    and ``created_to_finished``. What a client sees beyond ``created_to_finished`` is the
    request's reading and validation before the stamp, and after the last one the terminal
    commit, the wake-up and the answer. A job whose webhook was recorded before its submit's
    answer has no submitted event: it counts in ``created_to_finished`` only."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        rows = conn.execute(
            "SELECT j.created_at, e.at, j.finished_at FROM jobs j LEFT JOIN job_events e "
            "ON e.job_id = j.id AND e.to_status = 'submitted' "
            "WHERE j.status = 'completed' AND j.created_at BETWEEN ? AND ?", (since, until),
        ).fetchall()
    split = [row for row in rows if row[1] is not None]
    spans = {
        "created_to_submitted": [submitted - created for created, submitted, _ in split],
        "submitted_to_finished": [finished - submitted for _, submitted, finished in split],
        "created_to_finished": [finished - created for created, _, finished in rows],
    }
    return {
        phase: statistics.median(values) * 1000 if values else float("nan")
        for phase, values in spans.items()
    }
