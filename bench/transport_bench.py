"""Upstream transport micro-benchmark: the gateway's ``WaveSpeedClient`` submitting to the
simulator through httpx's default transport or through ``httpx-aiohttp``, at 1 and 64 calls
in flight. The figure that matters is CPU seconds per call in this (the client's) process,
from ``time.process_time()`` (every thread); calls/s is bounded by whichever side saturates.

Run as its own process, pinned: ``python -m bench.transport_bench --base-url URL
--transport aiohttp --cpu 0`` prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from dataclasses import asdict, dataclass

from bench.payload import SUBMIT, WAVESPEED_ID
from gateway.simulator.config import DEFAULT_API_KEY
from gateway.upstream import WaveSpeedClient, make_http_client

IN_FLIGHT = (1, 64)


@dataclass(frozen=True)
class TransportRun:
    transport: str
    in_flight: int
    calls: int
    seconds: float
    cpu_seconds: float

    @property
    def cpu_per_call_us(self) -> float:
        return self.cpu_seconds / self.calls * 1e6

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.seconds


async def _calls(client: WaveSpeedClient, in_flight: int, seconds: float, max_calls: int) -> int:
    done = 0
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal done
        while done < max_calls and time.perf_counter() < deadline:
            await client.submit(WAVESPEED_ID, SUBMIT, None)
            done += 1

    await asyncio.gather(*(caller() for _ in range(in_flight)))
    return done


async def measure(
    base_url: str, transport: str, seconds: float, max_calls: int
) -> list[TransportRun]:
    http = make_http_client(transport, 30.0)  # type: ignore[arg-type]
    client = WaveSpeedClient(http, base_url, DEFAULT_API_KEY)
    runs: list[TransportRun] = []
    try:
        for in_flight in IN_FLIGHT:
            await _calls(client, in_flight, seconds / 4, max_calls // 10)  # warm the pool up
            cpu, wall = time.process_time(), time.perf_counter()
            calls = await _calls(client, in_flight, seconds, max_calls)
            runs.append(TransportRun(
                transport, in_flight, calls, time.perf_counter() - wall, time.process_time() - cpu
            ))
    finally:
        await http.aclose()
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.transport_bench")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--transport", choices=["aiohttp", "httpx"], required=True)
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--max-calls", type=int, default=10_000)
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    import uvloop

    runs = uvloop.run(measure(args.base_url, args.transport, args.seconds, args.max_calls))
    print(json.dumps([asdict(run) for run in runs]))


if __name__ == "__main__":
    main()
