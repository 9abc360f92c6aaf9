"""Instructions per accepted job: ``python -m bench.instructions [--stages ...]``.

The same in-process set-up as ``bench.accept_stages`` (the ASGI app called by 64 concurrent
clients, no sockets), counted by valgrind's cachegrind instead of timed: a count does not
move with what else the machine is doing (two runs of the same code agree within 0.5%), so a
change of a few percent can be seen on a noisy VM where timings move by 20%. Each figure is
the difference between a run of 1,280 and a run of 256 requests, per request: start-up and
warm-up cancel out. What it does not see: system calls' time in the kernel, cache misses,
waiting. Confirm a gain with ``make bench``.

Stages: ``baseline``, ``handler`` (the real ``POST /v1/jobs``), and accept_stages' cuts
``framework``, ``+key``, ``+validation``, ``+store``. About 40 s per stage.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.accept_stages import STAGES, _drive, request_parts, started_gateway

TARGETS = ("baseline", "handler", *STAGES[:4])
SMALL, LARGE = 256, 1280
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def cachegrind(summary: Path) -> tuple[str, ...]:
    """The command prefix that counts a process's instructions into ``summary``."""
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    return ("valgrind", "--tool=cachegrind", "--cache-sim=no",
            "--cachegrind-out-file=/dev/null", f"--log-file={summary}")


def counted(summary: Path) -> int | None:
    """The instruction count in a summary ``cachegrind`` wrote, if it wrote one."""
    found = _REFS.search(summary.read_text()) if summary.exists() else None
    return int(found.group(1).replace(",", "")) if found else None


async def _child(target: str, requests: int, workdir: Path) -> None:
    from bench.baseline_app import create_baseline_app

    body, headers = request_parts()
    if target == "baseline":
        app = create_baseline_app()
        await _drive(app, body, headers, 256)
        await _drive(app, body, headers, requests)
        return
    stage = None if target == "handler" else STAGES.index(target)
    async with started_gateway(workdir / "instructions.db", stage) as (gateway, key):
        headers.append((b"authorization", f"Bearer {key}".encode()))
        await _drive(gateway, body, headers, 256)
        await _drive(gateway, body, headers, requests)


def _count(target: str, requests: int) -> int:
    """Instructions of one child process that serves ``requests`` after its warm-up."""
    with tempfile.TemporaryDirectory(prefix="instructions-") as workdir:
        summary = Path(workdir) / "valgrind.log"
        command = [*cachegrind(summary), sys.executable, "-m", "bench.instructions", "--child",
                   target, str(requests)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False,
                              cwd=Path(__file__).resolve().parent.parent)
        count = counted(summary)
    if done.returncode != 0 or count is None:
        raise SystemExit(f"{target}: the counted run failed:\n{done.stderr[-3000:]}")
    return count


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", nargs="+", choices=TARGETS, default=["baseline", "handler"])
    parser.add_argument("--child", nargs=2, metavar=("TARGET", "REQUESTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        target, requests = args.child[0], int(args.child[1])
        with tempfile.TemporaryDirectory(prefix="instructions-") as workdir:
            log = os.open(Path(workdir) / "gateway.log", os.O_WRONLY | os.O_CREAT)
            os.dup2(log, 1)  # the gateway's lines (valgrind's summary goes to its own file)
            os.dup2(log, 2)
            import uvloop

            uvloop.run(_child(target, requests, Path(workdir)))
        return
    print(f"instructions per request, in process, {LARGE} - {SMALL} requests (cachegrind)")
    for target in args.stages:
        per_request = (_count(target, LARGE) - _count(target, SMALL)) / (LARGE - SMALL)
        print(f"{target:12} {per_request:12,.0f}", flush=True)


if __name__ == "__main__":
    main()
