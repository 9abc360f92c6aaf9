"""The servers under test, each in its own process pinned to a CPU (see ``bench.serve``), and
what they cost: CPU seconds read from /proc, so that a figure can say which side was busy."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from gateway.simulator.config import DEFAULT_API_KEY, DEFAULT_WEBHOOK_SECRET
from gateway.store.sqlite import SQLiteStore
from gateway.tenancy import create_tenant, issue_key

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Cpus:
    """Where things run: servers under test on ``server``, load generators on ``load``."""

    server: int | None
    load: int | None

    @classmethod
    def detect(cls) -> Cpus:
        available = sorted(os.sched_getaffinity(0))
        if len(available) < 2:
            return cls(None, None)
        return cls(available[0], available[1])

    def describe(self) -> str:
        if self.server is None:
            return "fewer than 2 CPUs: nothing pinned, servers and load share the CPU"
        return f"servers under test on CPU {self.server}, load generators on CPU {self.load}"


def cpu_busy_seconds(cpu: int) -> float:
    """Seconds CPU ``cpu`` spent busy so far, whoever ran on it (steal included: a VM's
    neighbours are other load too)."""
    with open("/proc/stat") as stat:
        for line in stat:
            if line.startswith(f"cpu{cpu} "):
                ticks = [int(v) for v in line.split()[1:]]
                idle = ticks[3] + ticks[4]  # idle + iowait
                return (sum(ticks[:8]) - idle) / _TICKS
    raise ValueError(f"no cpu{cpu} in /proc/stat")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of every thread of ``pid`` so far (10 ms resolution)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


@dataclass
class ServerProcess:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    cpu: int | None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.proc.pid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


class ServerFailed(RuntimeError):
    pass


def start_server(
    kind: str,
    name: str,
    *,
    cpu: int | None,
    workdir: Path,
    env: Callable[[str], dict[str, str]] | None = None,
    ready_path: str = "/healthz",
    prefix: tuple[str, ...] = (),
    ready_timeout: float = 30.0,
) -> ServerProcess:
    """Bind 127.0.0.1:0 here, hand the socket to ``python -m bench.serve KIND``, and return once
    it answers ``ready_path``. ``env`` gives extra environment from the server's own URL;
    ``prefix`` a command to run it under (valgrind)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    command = [*prefix, sys.executable, "-m", "bench.serve", kind, "--fd", str(sock.fileno())]
    if cpu is not None:
        command += ["--cpu", str(cpu)]
    if kind == "simulator":
        command += ["--public-url", url]
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command, pass_fds=[sock.fileno()], stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, **(env(url) if env else {})}, cwd=Path(__file__).resolve().parent.parent,
        )
    sock.close()
    server = ServerProcess(name, url, proc, log_path, cpu)
    try:
        _wait_ready(server, ready_path, ready_timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_ready(server: ServerProcess, path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise ServerFailed(f"{server.name} exited at start-up:\n{server.log_tail()}")
            try:
                if client.get(server.url + path).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    raise ServerFailed(f"{server.name} did not become ready in {timeout:g} s:\n{server.log_tail()}")


def set_simulator_faults(simulator: ServerProcess, **faults: object) -> None:
    response = httpx.post(simulator.url + "/_sim/faults", json=faults, timeout=5.0)
    response.raise_for_status()


def settle(
    servers: list[ServerProcess], *, busy_fraction: float = 0.05, cpu_fraction: float = 0.15,
    limit: float = 5.0,
) -> None:
    """Wait (at most ``limit`` s) until no server uses more than ``busy_fraction`` of a CPU and
    the servers' CPU is no more than ``cpu_fraction`` busy, whoever uses it: work left over
    from one run must not be billed to the next. That includes the kernel writing back what a
    run wrote (a saturated accept run leaves tens of MB of dirty pages, whose writeback took a
    third of the server CPU during the next run): ``sync`` first."""
    os.sync()
    cpus = sorted({s.cpu for s in servers if s.cpu is not None})
    window = 0.25
    allowed = [busy_fraction * window] * len(servers) + [cpu_fraction * window] * len(cpus)

    def busy_so_far() -> list[float]:  # each server's CPU seconds, then each server CPU's
        return [s.cpu_seconds() for s in servers] + [cpu_busy_seconds(c) for c in cpus]

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = busy_so_far()
        time.sleep(window)
        after = busy_so_far()
        if all(b - a <= most for a, b, most in zip(before, after, allowed, strict=True)):
            return


def gateway_env(
    public_url: str,
    *,
    database: Path,
    upstream: str,
    transport: str,
    max_concurrency: int,
    log_level: str,
) -> dict[str, str]:
    """Settings for a gateway whose upstream is a simulator (its default key and secret)."""
    return {
        "GATEWAY_PUBLIC_URL": public_url,
        "GATEWAY_DATABASE_URL": f"sqlite:///{database}",
        "GATEWAY_WAVESPEED_BASE_URL": upstream,
        "GATEWAY_WAVESPEED_API_KEY": DEFAULT_API_KEY,
        "GATEWAY_WAVESPEED_WEBHOOK_SECRET": DEFAULT_WEBHOOK_SECRET,
        "GATEWAY_UPSTREAM_TRANSPORT": transport,
        "GATEWAY_UPSTREAM_MAX_CONCURRENCY": str(max_concurrency),
        "GATEWAY_LOG_FORMAT": "json",
        "GATEWAY_LOG_LEVEL": log_level,
        "GATEWAY_SHUTDOWN_GRACE_SECONDS": "2",
    }


def prepare_gateway_database(database: Path) -> str:
    """Migrate a fresh database and create the bench tenant; return its API key's secret."""

    async def prepare() -> str:
        store = SQLiteStore(str(database), readers=1)
        await store.open()
        try:
            await store.migrate()
            now = time.time()
            tenant = await store.write(create_tenant("bench", {}, now))
            issued = await store.write(issue_key(tenant.id, "bench", None, now))
            return issued.secret
        finally:
            await store.close()

    return asyncio.run(prepare())
