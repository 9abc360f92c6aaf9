"""``make bench`` / ``python -m bench [--quick]``: every figure of the issue in one run.

1. HTTP (wrk): the baseline (bare Starlette + pydantic) against the gateway's accept path, at
   64 connections (throughput) and at one (added latency), interleaved run by run.
2. The full job cycle against the simulator (latency 0), once per upstream transport.
3. The store: commit per request against SQLiteStore's group commit.
4. The upstream transports: CPU per call and calls/s, then correctness checks.

Servers under test run on the first CPU, load generators (and this process) on the second.
Each figure is the median of ``--repeat`` runs; ratios are taken within this run. The table
is printed and the JSON written to bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import micro, report
from bench.plan import TRANSPORTS, Plan
from bench.scenarios import ACCEPT_METHOD, HttpResults, accept_vs_baseline, full_cycle
from bench.servers import Cpus
from bench.table import render
from bench.transport_checks import as_dicts

PHASES = ("http", "full", "store", "transport")
ROOT = Path(__file__).resolve().parent.parent
FULL_CYCLE_METHOD = (
    "full cycle: POST /v1/jobs with wait=30 over 64 connections; an answer counts only if 200 "
    "with status completed; simulator (latency 0) in its own process on the load CPU"
)
ADDED_METHOD = (
    "added latency per job = median accept->completed seen by a sequential client (POST with "
    "wait) - the simulator's own CPU time per job (from /proc) - the baseline's median round "
    "trip; accept added latency = gateway accept minus baseline, same client, p50 and p99"
)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one short run per figure")
    parser.add_argument("--repeat", type=int, help="runs per figure (default 3, quick 1)")
    parser.add_argument("--seconds", type=float, help="seconds per saturated HTTP run")
    parser.add_argument("--only", nargs="+", choices=PHASES, default=list(PHASES))
    parser.add_argument("--transports", nargs="+", choices=TRANSPORTS, default=list(TRANSPORTS))
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"],
                        help="the gateway's GATEWAY_LOG_LEVEL (default: info, as in production)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, dbs)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="sample the gateways with py-spy during each HTTP run, into DIR")
    return parser.parse_args(argv)


def _plan(args: argparse.Namespace, cpus: Cpus, workdir: Path) -> Plan:
    plan = Plan.default(cpus, workdir, quick=args.quick, log_level=args.log_level)
    changes: dict[str, Any] = {}
    if args.repeat:
        changes["repeat"] = args.repeat
    if args.seconds:
        changes["seconds"] = args.seconds
    if args.profile:
        changes["profile_dir"] = args.profile.resolve()
    return dataclasses.replace(plan, **changes)


def _filesystem(path: Path) -> str:
    best, kind = "", "unknown"
    with open("/proc/mounts") as mounts:
        for line in mounts:
            parts = line.split()
            if str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, kind = parts[1], parts[2]
    return f"{kind} ({path.parent})"


def _commit() -> str:
    found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                           capture_output=True, text=True, check=False)
    return found.stdout.strip() or "unknown"


def _meta(plan: Plan, cpus: Cpus) -> dict[str, Any]:
    packages = ("starlette", "uvicorn", "uvloop", "httptools", "pydantic", "httpx", "httpcore",
                "aiohttp", "httpx-aiohttp", "aiosqlite")
    load = os.getloadavg()[0]
    notes = [ACCEPT_METHOD, FULL_CYCLE_METHOD, ADDED_METHOD]
    if load > 0.3:
        notes.append(f"load average {load:.2f} at start: other work shares these CPUs, so the "
                     "figures are noisy; compare ratios, and rerun on a quiet machine")
    return {
        "started_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
        "commit": _commit(),
        "cpus": cpus.describe(),
        "repeat": plan.repeat,
        "plan": {k: v for k, v in dataclasses.asdict(plan).items() if k not in ("cpus", "workdir")},
        "loadavg_start": round(load, 2),
        "tmp_filesystem": _filesystem(plan.workdir),
        "python": sys.version.split()[0],
        "versions": {name: metadata.version(name) for name in packages},
        "notes": notes,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    cpus = Cpus.detect()
    if cpus.load is not None:
        os.sched_setaffinity(0, {cpus.load})
    workdir = Path(tempfile.mkdtemp(prefix="kontext-bench-"))
    plan = _plan(args, cpus, workdir)
    transports = tuple(args.transports)
    document: dict[str, Any] = {"meta": _meta(plan, cpus)}
    http = HttpResults()
    store_runs, transport_runs, checks = [], [], {}
    started = time.monotonic()
    try:
        if "http" in args.only:
            _log("[1/4] baseline vs gateway accept path")
            accept_vs_baseline(plan, http, _log)
        if "full" in args.only:
            _log("[2/4] full job cycle against the simulator")
            full_cycle(plan, transports, http, _log)
        if "store" in args.only:
            _log("[3/4] store: commit per request vs group commit")
            store_runs = micro.store_runs(plan, _log)
        if "transport" in args.only:
            _log("[4/4] upstream transports: cost, then correctness")
            transport_runs = micro.transport_runs(plan, transports, _log)
            checks = micro.transport_checks(plan, transports)
    finally:
        if args.keep:
            _log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    figures = report.http_figures(http)
    added = report.added_latency(http, transports)
    transport = report.transport_figures(transport_runs)
    document["meta"]["loadavg_end"] = round(os.getloadavg()[0], 2)
    document["meta"]["seconds"] = round(time.monotonic() - started, 1)
    document.update({
        "http": {key: {"median": fig, "runs": http.runs[key]} for key, fig in figures.items()},
        "added_latency": added,
        "store": report.store_figures(store_runs),
        "store_runs": store_runs,
        "transport": transport,
        "transport_runs": transport_runs,
        "transport_checks": {name: as_dicts(own) for name, own in checks.items()},
        "ratios": report.ratios(figures, added, transports),
        "transport_verdict": report.transport_verdict(transport, figures, checks)
        if transport and checks else {},
    })
    print(render(document, figures, checks, transports))
    report.write_json(args.output, document)
    _log(f"results: {args.output} ({document['meta']['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
