"""gateway.logs.LineWriter: lines logged on the event loop's thread are written together when
the loop's iteration ends; lines from anywhere else at once, after those gathered before them;
what is still gathered when the process exits is written then."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from gateway.logs import LineWriter

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[IO[str]]:
    with open(tmp_path / "lines.log", "w") as stream:
        yield stream


def written(stream: IO[str]) -> str:
    return Path(stream.name).read_text()


async def test_lines_on_the_loop_are_written_together_when_the_iteration_ends(
    log_file: IO[str],
) -> None:
    writer = LineWriter(log_file)
    writer.msg("one")
    writer.msg("two")
    assert written(log_file) == ""
    await asyncio.sleep(0)
    assert written(log_file) == "one\ntwo\n"
    writer.msg("three")
    await asyncio.sleep(0)
    assert written(log_file) == "one\ntwo\nthree\n"


async def test_a_line_from_another_thread_is_written_at_once_after_the_gathered_ones(
    log_file: IO[str],
) -> None:
    writer = LineWriter(log_file)
    writer.msg("on the loop")
    thread = threading.Thread(target=writer.msg, args=("from a thread",))
    thread.start()
    thread.join()
    assert written(log_file) == "on the loop\nfrom a thread\n"
    await asyncio.sleep(0)
    assert written(log_file) == "on the loop\nfrom a thread\n"


def test_without_a_running_loop_each_line_is_written_at_once(log_file: IO[str]) -> None:
    writer = LineWriter(log_file)
    writer.msg("alone")
    assert written(log_file) == "alone\n"


def test_lines_still_gathered_when_the_process_exits_are_written(tmp_path: Path) -> None:
    # The loop stops in the iteration that logged: the scheduled write never runs.
    code = (
        "import asyncio, sys\n"
        "from gateway.logs import LineWriter\n"
        "writer = LineWriter(sys.stderr)\n"
        "loop = asyncio.new_event_loop()\n"
        "loop.call_soon(lambda: (writer.msg('first'), writer.msg('last'), loop.stop()))\n"
        "loop.run_forever()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
        check=True,
    )
    assert done.stderr == "first\nlast\n"


def test_without_a_file_descriptor_each_line_is_written_and_flushed() -> None:
    class Stream:
        def __init__(self) -> None:
            self.parts: list[str] = []
            self.flushed = 0

        def write(self, text: str) -> None:
            self.parts.append(text)

        def flush(self) -> None:
            self.flushed += 1

    stream = Stream()
    writer = LineWriter(stream)
    writer.msg("a")
    writer.msg("b")
    assert stream.parts == ["a\n", "b\n"] and stream.flushed == 2
