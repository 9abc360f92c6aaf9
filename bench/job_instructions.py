"""Instructions the gateway runs per job: ``python -m bench.job_instructions [--clients N]``.

The added-latency figure of ``make bench`` moves by 20-40% between runs on a noisy VM; what
the gateway does per job does not. Here the real gateway (``bench.serve``, the same settings
as the bench's full cycle) runs under valgrind's cachegrind while one client sends sequential
jobs with ``wait`` through the simulator (its own process, not counted): every instruction of
the gateway's process, all threads (accept, dispatch, submit, webhook, commits, logs,
metrics, answer), divided by the jobs. The figure is the difference between a run of 120 and
a run of 20 jobs, so start-up and shutdown cancel out. About a minute.

``--clients N``: N clients at once (each sending its jobs one after another), the difference
of a run of 10 N jobs and one of N, so that the gateway's batches (group commit, log
writes, loop iterations) are as large as they get under that load. About two minutes at 64.
A figure close to one client's says the gateway does the same work per job at either load,
and that what differs in its CPU time per job (``make bench``'s CPU/req) is how fast that
work runs, not how much of it there is.

Not counted: the kernel's time (sockets, the WAL's writes, fsync), and how fast the counted
instructions run (at one client, after every wait, with cold caches: see the README).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import httpx

from bench.instructions import cachegrind, counted
from bench.payload import job_body
from bench.servers import gateway_env, prepare_gateway_database, start_server

SMALL, LARGE = 20, 120
WARMUP = 10


def _count(jobs: int, transport: str, clients: int) -> int:
    """Instructions of one gateway process that served ``WARMUP + jobs`` jobs."""
    with tempfile.TemporaryDirectory(prefix="job-instructions-") as name:
        workdir = Path(name)
        summary = workdir / "valgrind.log"
        simulator = start_server("simulator", "simulator", cpu=None, workdir=workdir,
                                 ready_path="/_sim/faults")
        try:
            database = workdir / "gateway.db"
            key = prepare_gateway_database(database)
            gateway = start_server(
                "gateway", "gateway", cpu=None, workdir=workdir,
                env=lambda url: gateway_env(url, database=database, upstream=simulator.url,
                                            transport=transport, max_concurrency=100,
                                            log_level="info"),
                prefix=cachegrind(summary),
                ready_timeout=300,
            )
            try:
                asyncio.run(_send_jobs(gateway.url, key, WARMUP + jobs, clients))
            finally:
                gateway.proc.terminate()  # valgrind writes its summary as the process ends
                gateway.proc.wait(timeout=300)
        finally:
            simulator.stop()
        count = counted(summary)
        if count is None:
            raise SystemExit(f"valgrind wrote no instruction count:\n{gateway.log_tail()}")
    return count


async def _send_jobs(url: str, key: str, count: int, clients: int) -> None:
    """``count`` jobs from ``clients`` clients, each sending its share one after another."""
    body = job_body(wait_seconds=60)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600,
                                 limits=limits) as client:

        async def one_client(jobs: int) -> None:
            for _ in range(jobs):
                answer = await client.post("/v1/jobs", content=body)
                if answer.status_code != 200 or answer.json().get("status") != "completed":
                    raise SystemExit(f"a job did not complete: {answer.status_code} {answer.text}")

        shares = [count // clients + (index < count % clients) for index in range(clients)]
        await asyncio.gather(*(one_client(share) for share in shares))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.job_instructions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transport", choices=["aiohttp", "httpx"], default="aiohttp")
    parser.add_argument("--clients", type=int, default=1, help="clients at once (default 1)")
    args = parser.parse_args()
    if args.clients < 1:
        parser.error("--clients must be at least 1")
    small, large = (SMALL, LARGE) if args.clients == 1 else (args.clients, 10 * args.clients)
    counts = [_count(jobs, args.transport, args.clients) for jobs in (large, small)]
    per_job = (counts[0] - counts[1]) / (large - small)
    who = "one client" if args.clients == 1 else f"{args.clients} clients at once"
    print(f"gateway instructions per job, {who}, {args.transport} transport "
          f"({large} - {small} jobs, cachegrind): {per_job:,.0f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
