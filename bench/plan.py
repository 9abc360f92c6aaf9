"""What one ``make bench`` does: durations, repeats and where things run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.servers import Cpus

TRANSPORTS = ("aiohttp", "httpx")


@dataclass(frozen=True)
class Plan:
    repeat: int  # runs per figure; the report gives medians
    seconds: float  # each saturated (64-connection) HTTP run
    low_seconds: float  # each low-load (one connection, sequential) HTTP run
    warmup_seconds: float
    connections: int
    store_seconds: float  # each store micro-benchmark run (also bounded by store_max_rows)
    store_max_rows: int
    transport_seconds: float  # each transport run (also bounded by transport_max_calls)
    transport_max_calls: int
    log_level: str  # the gateway's GATEWAY_LOG_LEVEL
    cpus: Cpus
    workdir: Path
    profile_dir: Path | None = None  # --profile: py-spy samples of the gateways under load

    @classmethod
    def default(cls, cpus: Cpus, workdir: Path, *, quick: bool, log_level: str) -> Plan:
        if quick:
            return cls(
                repeat=1, seconds=2, low_seconds=1, warmup_seconds=1, connections=64,
                store_seconds=1, store_max_rows=5_000, transport_seconds=1,
                transport_max_calls=2_000, log_level=log_level, cpus=cpus, workdir=workdir,
            )
        return cls(
            repeat=3, seconds=5, low_seconds=3, warmup_seconds=1, connections=64,
            store_seconds=2, store_max_rows=20_000, transport_seconds=2,
            transport_max_calls=10_000, log_level=log_level, cpus=cpus, workdir=workdir,
        )
