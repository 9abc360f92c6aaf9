"""``--profile DIR``: while a gateway is under load, sample it with py-spy (collapsed stacks,
one file per run, viewable in speedscope or flamegraph.pl) and record each thread's CPU."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    return found


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of each thread of ``pid``, keyed ``name/tid``."""
    out: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/stat") as stat:
            text = stat.read()
            name = text[text.index("(") + 1:text.rindex(")")]
            fields = text.rsplit(")", 1)[1].split()
            out[f"{name}/{tid}"] = (int(fields[11]) + int(fields[12])) / _TICKS
    return out


def _thread_names(raw: Path) -> dict[str, str]:
    """tid -> Python thread name, from py-spy's "thread (tid): name" stack roots."""
    names: dict[str, str] = {}
    with contextlib.suppress(OSError), open(raw) as stacks:
        for line in stacks:
            match = re.match(r"thread \((\d+)\): ([^;]+)", line)
            if match:
                names[match.group(1)] = match.group(2)
    return names


@contextlib.contextmanager
def sampled(pid: int, out: Path, seconds: float, cpu: int | None) -> Iterator[dict[str, float]]:
    """Sample ``pid`` for ``seconds`` into ``out``.raw; the yielded dict is filled, on exit,
    with the CPU seconds each thread spent meanwhile (also written to ``out``.threads.json)."""
    command = [py_spy(), "record", "-p", str(pid), "-d", str(math.ceil(seconds)), "-r", "200",
               "-f", "raw", "-o", str(out.with_suffix(".raw")), "--threads", "--nonblocking"]
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    spent: dict[str, float] = {}
    before = thread_cpu(pid)
    sampler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield spent
    finally:
        after = thread_cpu(pid)
        sampler.wait(timeout=seconds + 30)
        names = _thread_names(out.with_suffix(".raw"))
        spent.update({
            f"{names.get(key.split('/')[1], key.split('/')[0])}/{key.split('/')[1]}":
                round(value - before.get(key, 0.0), 3)
            for key, value in after.items() if value - before.get(key, 0.0) > 0
        })
        out.with_suffix(".threads.json").write_text(json.dumps(spent, indent=2) + "\n")
