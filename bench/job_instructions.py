"""Instructions the gateway runs per job at one client: ``python -m bench.job_instructions``.

The added-latency figure of ``make bench`` moves by 20-40% between runs on a noisy VM; what
the gateway does per job does not. Here the real gateway (``bench.serve``, the same settings
as the bench's full cycle) runs under valgrind's cachegrind while one client sends sequential
jobs with ``wait`` through the simulator (its own process, not counted): every instruction of
the gateway's process, all threads (accept, dispatch, submit, webhook, commits, logs,
metrics, answer), divided by the jobs. The figure is the difference between a run of 120 and
a run of 20 jobs, so start-up and shutdown cancel out. About a minute.

Not counted: the kernel's time (sockets, the WAL's writes, fsync), and how fast the counted
instructions run (at one client, after every wait, with cold caches: see the README).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import httpx

from bench.instructions import cachegrind, counted
from bench.payload import job_body
from bench.servers import gateway_env, prepare_gateway_database, start_server

SMALL, LARGE = 20, 120
WARMUP = 10


def _count(jobs: int, transport: str) -> int:
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
                _send_jobs(gateway.url, key, WARMUP + jobs)
            finally:
                gateway.proc.terminate()  # valgrind writes its summary as the process ends
                gateway.proc.wait(timeout=300)
        finally:
            simulator.stop()
        count = counted(summary)
        if count is None:
            raise SystemExit(f"valgrind wrote no instruction count:\n{gateway.log_tail()}")
    return count


def _send_jobs(url: str, key: str, count: int) -> None:
    body = job_body(wait_seconds=60)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
        for _ in range(count):
            answer = client.post("/v1/jobs", content=body)
            if answer.status_code != 200 or answer.json().get("status") != "completed":
                raise SystemExit(f"a job did not complete: {answer.status_code} {answer.text}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.job_instructions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transport", choices=["aiohttp", "httpx"], default="aiohttp")
    args = parser.parse_args()
    per_job = (_count(LARGE, args.transport) - _count(SMALL, args.transport)) / (LARGE - SMALL)
    print(f"gateway instructions per job, one client, {args.transport} transport "
          f"({LARGE} - {SMALL} jobs, cachegrind): {per_job:,.0f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
