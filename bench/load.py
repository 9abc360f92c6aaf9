"""The load generator: wrk (C, one thread, pinned to the load CPU) with ``post.lua``, and the
CPU each server spent while it ran."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bench.servers import ServerProcess, cpu_busy_seconds

LUA = Path(__file__).with_name("post.lua")


class LoadError(RuntimeError):
    pass


@dataclass(frozen=True)
class Expect:
    """What every answer must be; without it, wrk only counts non-2xx answers as errors."""

    status: int
    body_contains: str


@dataclass(frozen=True)
class LoadRun:
    connections: int
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int
    matched: int | None
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    load_cpu_seconds: float = 0.0  # wrk's own CPU: far below ``seconds`` means it kept up
    # Share of the server CPU used by processes other than the watched servers (other
    # people's work, the kernel's): high values mean the figure is noisy.
    others_on_server_cpu: float = 0.0
    others_on_load_cpu: float = 0.0  # the same on the load CPU (wrk and watched servers excluded)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def good_per_second(self) -> float:
        """Answers that met the expectation (or every answer, when none was set) per second."""
        count = self.matched if self.matched is not None else self.requests - self.errors
        return count / self.seconds

    def cpu_per_request_us(self, server: str) -> float:
        return self.cpu_seconds[server] / max(1, self.requests) * 1e6

    def cpu_busy(self, server: str) -> float:
        """The fraction of one CPU the server used during the run."""
        return self.cpu_seconds[server] / self.seconds


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise LoadError("wrk is not installed (make bench installs it: apt-get install wrk)")
    return found


def run_wrk(
    target: ServerProcess,
    *,
    body: str,
    connections: int,
    seconds: float,
    cpu: int | None,
    watch: list[ServerProcess],
    auth: str | None = None,
    expect: Expect | None = None,
    timeout_seconds: float = 10.0,
) -> LoadRun:
    """POST ``body`` to ``target`` for ``seconds`` over ``connections`` keep-alive connections;
    ``watch`` are the servers whose CPU is recorded (the target among them)."""
    command = [
        wrk_path(), "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
        f"--timeout={timeout_seconds:g}s", "-s", str(LUA), target.url,
    ]
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    env = {**os.environ, "BENCH_BODY": body, "BENCH_PATH": "/v1/jobs", "BENCH_AUTH": auth or ""}
    if expect is not None:
        env["BENCH_EXPECT"] = expect.body_contains
        env["BENCH_EXPECT_STATUS"] = str(expect.status)
    before = {server.name: server.cpu_seconds() for server in watch}
    wrk_before = _children_cpu()
    cpus = [c for c in (target.cpu, cpu) if c is not None]
    cpu_before = {c: cpu_busy_seconds(c) for c in cpus}
    finished = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    spent = {server.name: server.cpu_seconds() - before[server.name] for server in watch}
    wrk_cpu = _children_cpu() - wrk_before
    others = {
        c: max(0.0, cpu_busy_seconds(c) - cpu_before[c]
               - sum(spent[s.name] for s in watch if s.cpu == c) - (wrk_cpu if c == cpu else 0.0))
        for c in cpus
    }
    line = next(
        (ln for ln in finished.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None
    )
    if finished.returncode != 0 or line is None:
        raise LoadError(f"wrk failed ({finished.returncode}): {finished.stderr or finished.stdout}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    seconds_run = data["duration_us"] / 1e6
    errors = sum(
        data[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return LoadRun(
        connections=connections,
        requests=int(data["requests"]),
        seconds=seconds_run,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        errors=errors,
        matched=int(data["matched"]) if expect is not None else None,
        cpu_seconds=spent,
        load_cpu_seconds=wrk_cpu,
        others_on_server_cpu=others[target.cpu] / seconds_run if target.cpu is not None else 0.0,
        others_on_load_cpu=others.get(cpu, 0.0) / seconds_run if cpu is not None else 0.0,
    )


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
