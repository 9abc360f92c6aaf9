"""One server under test, in this process: ``python -m bench.serve KIND --fd N --cpu C``.

The parent binds the listening socket and passes its descriptor (no port race); this process
pins itself to one CPU before anything else starts a thread, then runs uvicorn with one
worker, uvloop, httptools and no access log. The gateway reads its settings from the
environment (GATEWAY_*), as ``gateway serve`` does.
"""

from __future__ import annotations

import argparse
import os
import socket
from typing import Any

import uvicorn


def build_app(kind: str, public_url: str | None) -> Any:
    if kind == "baseline":
        from bench.baseline_app import create_baseline_app

        return create_baseline_app()
    if kind == "gateway":
        from gateway.app import create_app
        from gateway.settings import load_settings

        return create_app(load_settings())
    if kind == "simulator":
        from gateway.logs import configure_logging
        from gateway.simulator import SimulatorConfig, create_simulator_app

        assert public_url is not None, "the simulator needs --public-url"
        # The simulator stands in for WaveSpeed: its debug lines would only load the load CPU.
        configure_logging("console", "warning")
        return create_simulator_app(SimulatorConfig(public_url=public_url, latency_seconds=0.0))
    if kind == "floor":
        from bench.floor_app import create_floor_app
        from gateway.simulator.config import DEFAULT_API_KEY

        return create_floor_app(
            os.environ["BENCH_FLOOR_PUBLIC_URL"], os.environ["BENCH_FLOOR_UPSTREAM"], DEFAULT_API_KEY
        )
    raise SystemExit(f"unknown server kind {kind!r}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serve")
    parser.add_argument("kind", choices=["baseline", "gateway", "simulator", "floor"])
    parser.add_argument("--fd", type=int, required=True, help="an inherited listening socket")
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--public-url", default=None)
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    sock = socket.socket(fileno=args.fd)
    config = uvicorn.Config(
        build_app(args.kind, args.public_url),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
