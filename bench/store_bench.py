"""Store micro-benchmark: accepting a job is one job row + one event row. Compared:

- commit per request: each write its own transaction (BEGIN IMMEDIATE ... COMMIT) on one
  connection owned by one thread, WAL with synchronous=FULL (an fsync per commit);
- group commit: the gateway's ``SQLiteStore.write`` (one writer thread, whatever is queued
  runs as one transaction, each script in a savepoint, one fsync per batch).

Both run the same SQL (``SQLiteTx.insert_job`` / ``insert_event``) on a fresh database file,
at 1 and 64 concurrent writers; each run is bounded in time and in rows. Run as its own
process, pinned: ``python -m bench.store_bench --cpu 0 --dir DIR`` prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.payload import JOB, SUBMIT, WAVESPEED_ID
from gateway.ids import new_id
from gateway.store import Job
from gateway.store.sqlite import SQLiteStore, SQLiteTx
from gateway.tenancy import create_tenant

MODES = ("commit_per_request", "group_commit")


@dataclass(frozen=True)
class StoreRun:
    mode: str
    writers: int
    jobs: int  # each one job row + one event row
    seconds: float
    batches: int | None  # group commit only: transactions committed

    @property
    def jobs_per_second(self) -> float:
        return self.jobs / self.seconds


def new_job(tenant_id: str) -> Job:
    now = time.time()
    return Job(
        id=new_id("job"), tenant_id=tenant_id, model=JOB["model"], task="text-to-image",
        wavespeed_id=WAVESPEED_ID, status="queued", inputs=dict(SUBMIT), price_micros=40_000,
        created_at=now, updated_at=now, metadata=JOB["metadata"],
    )


def insert(tx: SQLiteTx, job: Job) -> None:
    tx.insert_job(job)
    tx.insert_event(job.id, None, "queued", "api", job.created_at, None)


async def _fresh_database(path: Path) -> str:
    """A migrated database with one tenant (jobs reference it); returns the tenant id."""
    store = SQLiteStore(str(path), readers=1)
    await store.open()
    try:
        await store.migrate()
        tenant = await store.write(create_tenant("bench", {}, time.time()))
        return tenant.id
    finally:
        await store.close()


async def _drive(
    writers: int, seconds: float, max_jobs: int, write_one: Callable[[], Awaitable[None]]
) -> tuple[int, float]:
    done = 0
    started = time.perf_counter()
    deadline = started + seconds

    async def writer() -> None:
        nonlocal done
        while done < max_jobs and time.perf_counter() < deadline:
            await write_one()
            done += 1

    await asyncio.gather(*(writer() for _ in range(writers)))
    return done, time.perf_counter() - started


async def commit_per_request(path: Path, writers: int, seconds: float, max_jobs: int) -> StoreRun:
    tenant_id = await _fresh_database(path)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="writer")
    loop = asyncio.get_running_loop()

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    conn = await loop.run_in_executor(executor, connect)
    tx = SQLiteTx(conn)

    def one_transaction() -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            insert(tx, new_job(tenant_id))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def write_one() -> None:
        await loop.run_in_executor(executor, one_transaction)

    try:
        jobs, elapsed = await _drive(writers, seconds, max_jobs, write_one)
    finally:
        await loop.run_in_executor(executor, conn.close)
        executor.shutdown()
    return StoreRun("commit_per_request", writers, jobs, elapsed, None)


async def group_commit(path: Path, writers: int, seconds: float, max_jobs: int) -> StoreRun:
    tenant_id = await _fresh_database(path)
    store = SQLiteStore(str(path), readers=1)
    await store.open()

    async def write_one() -> None:
        job = new_job(tenant_id)
        await store.write(lambda tx: insert(tx, job))

    try:
        batches_before = store.batches
        jobs, elapsed = await _drive(writers, seconds, max_jobs, write_one)
        batches = store.batches - batches_before
    finally:
        await store.close()
    return StoreRun("group_commit", writers, jobs, elapsed, batches)


async def run_all(directory: Path, seconds: float, max_jobs: int, repeat: int) -> list[StoreRun]:
    runs: list[StoreRun] = []
    for index in range(repeat):
        for writers in (1, 64):
            for mode in MODES:
                path = directory / f"store-{mode}-{writers}-{index}.db"
                bench = commit_per_request if mode == "commit_per_request" else group_commit
                runs.append(await bench(path, writers, seconds, max_jobs))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.store_bench")
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--max-jobs", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    runs = asyncio.run(run_all(args.dir, args.seconds, args.max_jobs, args.repeat))
    print(json.dumps([asdict(run) for run in runs]))


if __name__ == "__main__":
    main()
