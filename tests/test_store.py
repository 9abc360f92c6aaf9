"""The SQLite store on a real file: group commit (many scripts, few commits), each script in
its own savepoint (one failure undoes only itself), reads see every acknowledged write, close
commits what is queued, and migrations apply once (also through ``gateway migrate``)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.ids import new_id
from gateway.store import Job
from gateway.store.migrations import LATEST, MIGRATIONS
from gateway.store.sqlite import SQLiteStore
from gateway.tenancy import create_tenant

ROOT = Path(__file__).resolve().parent.parent


class Boom(Exception):
    pass


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(str(tmp_path / "store.db"))
    await s.open()
    await s.migrate()
    try:
        yield s
    finally:
        await s.close()


async def new_tenant(store: SQLiteStore) -> str:
    tenant = await store.write(create_tenant(f"t-{new_id('x')}", {}, time.time()))
    return tenant.id


def make_job(tenant_id: str, prompt: str = "x") -> Job:
    now = time.time()
    return Job(
        id=new_id("job"), tenant_id=tenant_id, model="flux-kontext-pro", task="text-to-image",
        wavespeed_id="wavespeed-ai/flux-kontext-pro/text-to-image", status="queued",
        inputs={"prompt": prompt}, price_micros=40_000, created_at=now, updated_at=now,
    )


def insert(job: Job, fail: bool = False) -> Any:
    def script(tx: Any) -> str:
        tx.insert_job(job)
        tx.insert_event(job.id, None, "queued", "api", job.created_at, None)
        if fail:
            raise Boom(job.id)  # after writing: the savepoint must undo both rows
        return job.id

    return script


async def test_many_concurrent_writes_commit_in_fewer_batches(store: SQLiteStore) -> None:
    tenant_id = await new_tenant(store)
    jobs = [make_job(tenant_id, f"p{i}") for i in range(300)]
    batches, scripts = store.batches, store.scripts
    results = await asyncio.gather(*(store.write(insert(job)) for job in jobs))
    assert results == [job.id for job in jobs]
    assert store.scripts - scripts == 300
    assert 1 <= store.batches - batches < 300 // 10
    for job in jobs[::37]:
        stored = await store.get_job(job.id)
        assert stored is not None and stored.inputs == job.inputs


async def test_one_failing_script_does_not_undo_the_others_in_its_batch(store: SQLiteStore) -> None:
    tenant_id = await new_tenant(store)
    jobs = [make_job(tenant_id, f"p{i}") for i in range(9)]
    batches = store.batches
    results = await asyncio.gather(
        *(store.write(insert(job, fail=(i == 4))) for i, job in enumerate(jobs)),
        return_exceptions=True,
    )
    assert store.batches - batches == 1, "the scripts were meant to share one commit"
    assert isinstance(results[4], Boom)
    assert [r for i, r in enumerate(results) if i != 4] == [j.id for i, j in enumerate(jobs) if i != 4]
    for i, job in enumerate(jobs):
        stored = await store.get_job(job.id)
        events = await store.get_events(job.id)
        if i == 4:
            assert stored is None and events == []
        else:
            assert stored is not None and len(events) == 1


async def test_counter_changes_are_summed_per_batch_and_a_failed_script_adds_nothing(
    store: SQLiteStore,
) -> None:
    """add_counters is written once per batch: each later script of the batch sees the changes
    of those before it (its own too), and a script that raises leaves none behind."""
    tenant_id = await new_tenant(store)
    seen: list[tuple[int, int]] = []

    def add(images: int, fail: bool = False) -> Any:
        def script(tx: Any) -> None:
            tx.add_counters(tenant_id, ("d", "m"), images, images * 10)
            seen.append(tx.get_counter(tenant_id, "d"))
            if fail:
                raise Boom()

        return script

    await store.write(add(100))
    batches = store.batches
    results = await asyncio.gather(
        store.write(add(1)), store.write(add(2, fail=True)), store.write(add(4)),
        store.write(add(-1)), return_exceptions=True,
    )
    assert store.batches - batches == 1, "the scripts were meant to share one commit"
    assert isinstance(results[1], Boom)
    assert seen == [(100, 1000), (101, 1010), (103, 1030), (105, 1050), (104, 1040)]
    assert await store.counters(tenant_id, ("d", "m", "open")) == {
        "d": (104, 1040), "m": (104, 1040), "open": (0, 0),
    }


async def test_a_tenant_read_again_in_a_batch_shows_its_changes_and_not_rolled_back_ones(
    store: SQLiteStore,
) -> None:
    tenant_id = await new_tenant(store)
    seen: list[tuple[dict[str, Any], bool]] = []

    def read(change: dict[str, Any] | None = None, fail: bool = False) -> Any:
        def script(tx: Any) -> None:
            if change is not None:
                tx.update_tenant(tenant_id, **change)
            tenant = tx.get_tenant(tenant_id)
            seen.append((tenant.limits, tenant.disabled_at is not None))
            if fail:
                raise Boom()

        return script

    batches = store.batches
    await asyncio.gather(
        store.write(read()),
        store.write(read({"limits": {"images_per_day": 3}})),
        store.write(read()),
        store.write(read({"disabled_at": 1.0}, fail=True)),
        store.write(read()),
        return_exceptions=True,
    )
    assert store.batches - batches == 1, "the scripts were meant to share one commit"
    limited = {"images_per_day": 3}
    assert seen == [({}, False), (limited, False), (limited, False), (limited, True),
                    (limited, False)]
    stored = await store.get_tenant(tenant_id)
    assert stored is not None and stored.limits == limited and stored.disabled_at is None


async def test_a_script_that_raises_alone_commits_nothing_and_the_store_goes_on(
    store: SQLiteStore,
) -> None:
    tenant_id = await new_tenant(store)
    job = make_job(tenant_id)
    with pytest.raises(Boom):
        await store.write(insert(job, fail=True))
    assert await store.get_job(job.id) is None
    assert await store.write(insert(job)) == job.id
    assert await store.get_job(job.id) is not None


async def test_a_constraint_violation_fails_only_its_own_script(store: SQLiteStore) -> None:
    tenant_id = await new_tenant(store)
    job = make_job(tenant_id)
    await store.write(insert(job))
    twin, other = make_job(tenant_id), make_job(tenant_id)
    twin.id = job.id
    results = await asyncio.gather(
        store.write(insert(twin)), store.write(insert(other)), return_exceptions=True
    )
    assert isinstance(results[0], sqlite3.IntegrityError)
    assert results[1] == other.id
    assert await store.get_job(other.id) is not None


async def test_every_acknowledged_write_is_visible_to_reads(store: SQLiteStore) -> None:
    tenant_id = await new_tenant(store)
    for i in range(40):
        job = make_job(tenant_id, f"p{i}")
        await store.write(insert(job))
        stored = await store.get_job(job.id)
        assert stored is not None, i
        status = "submitted" if i % 2 else "cancelled"

        def update(tx: Any, job_id: str = job.id, status: str = status) -> None:
            tx.update_job(job_id, status=status, upstream_id=f"up-{job_id}")

        await store.write(update)
        stored = await store.get_job(job.id)
        assert stored is not None and stored.status == status and stored.upstream_id == f"up-{job.id}"
    listed = await store.list_jobs(tenant_id, status=None, model=None, limit=100, before_id=None)
    assert len(listed) == 40


async def test_a_caller_cancelled_while_its_batch_runs_leaves_the_store_working(
    store: SQLiteStore,
) -> None:
    """Cancelling a writer's caller does not undo its script (the batch commits; the caller
    just does not hear of it), and the writer thread goes on with the next batch."""
    tenant_id = await new_tenant(store)
    slow_job, next_job = make_job(tenant_id, "slow"), make_job(tenant_id, "next")
    started = threading.Event()

    def slow(tx: Any) -> str:
        started.set()
        time.sleep(0.2)  # in the writer thread, while the caller is cancelled
        return str(insert(slow_job)(tx))

    caller = asyncio.ensure_future(store.write(slow))
    await asyncio.to_thread(started.wait, 5)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert await asyncio.wait_for(store.write(insert(next_job)), 10) == next_job.id
    assert await store.get_job(slow_job.id) is not None
    assert await store.get_job(next_job.id) is not None


async def test_settled_hears_the_outcome_even_when_the_caller_was_cancelled(
    store: SQLiteStore,
) -> None:
    """What must follow a commit (a job to the dispatcher, a waiter woken) cannot hang on the
    caller still waiting: ``settled`` is told by the write loop itself."""
    tenant_id = await new_tenant(store)
    job = make_job(tenant_id)
    started, release = threading.Event(), threading.Event()
    heard: list[tuple[bool, Any]] = []

    def held(tx: Any) -> str:
        started.set()
        release.wait(5)  # in the writer thread, while the caller is cancelled
        return str(insert(job)(tx))

    caller = asyncio.ensure_future(store.write(held, settled=lambda *o: heard.append(o)))
    await asyncio.to_thread(started.wait, 5)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    release.set()
    await asyncio.wait_for(store.write(insert(make_job(tenant_id))), 10)  # the next batch
    assert heard == [(True, job.id)]
    assert await store.get_job(job.id) is not None

    failing = make_job(tenant_id)
    with pytest.raises(Boom):
        await store.write(insert(failing, fail=True), settled=lambda *o: heard.append(o))
    ok, error = heard[-1]
    assert not ok and isinstance(error, Boom) and await store.get_job(failing.id) is None


async def test_what_settled_wakes_runs_before_any_writer_of_the_batch_resumes(
    store: SQLiteStore,
) -> None:
    """So a request woken from ``settled`` (e.g. one waiting for this job to end) is answered
    before the writers' own continuations (e.g. the webhook's answer and its log line)."""
    tenant_id = await new_tenant(store)
    loop = asyncio.get_running_loop()
    order: list[str] = []
    batches = store.batches

    def wake(name: str) -> Any:
        return lambda *_: loop.call_soon(order.append, f"woken {name}")

    async def writer(name: str) -> None:
        await store.write(insert(make_job(tenant_id)), settled=wake(name))
        order.append(f"resumed {name}")

    await asyncio.gather(writer("a"), writer("b"))
    assert store.batches == batches + 1  # one batch for both
    assert order == ["woken a", "woken b", "resumed a", "resumed b"]


async def test_a_failing_settled_hook_harms_neither_its_write_nor_the_next(
    store: SQLiteStore,
) -> None:
    tenant_id = await new_tenant(store)
    job = make_job(tenant_id)

    def broken(ok: bool, value: Any) -> None:
        raise RuntimeError("listener bug")

    assert await store.write(insert(job), settled=broken) == job.id
    assert await store.get_job(job.id) is not None
    after = make_job(tenant_id)
    assert await asyncio.wait_for(store.write(insert(after)), 10) == after.id


def synchronous_seen(job: Job) -> Any:
    """Insert ``job`` and say which synchronous setting the batch commits with."""

    def script(tx: Any) -> int:
        tx.insert_job(job)
        return int(tx.conn.execute("PRAGMA synchronous").fetchone()[0])

    return script


FULL, NORMAL = 2, 1


async def test_a_batch_of_relaxed_writes_only_is_committed_without_waiting_for_the_disk(
    store: SQLiteStore,
) -> None:
    tenant_id = await new_tenant(store)
    relaxed = store.relaxed_batches
    assert await store.write(synchronous_seen(make_job(tenant_id)), durable=False) == NORMAL
    assert store.relaxed_batches == relaxed + 1
    # The next durable write is fsynced again, and takes the relaxed one to disk with it.
    assert await store.write(synchronous_seen(make_job(tenant_id))) == FULL
    # One durable script in a batch makes the whole batch durable.
    batches = store.batches
    seen = await asyncio.gather(
        store.write(synchronous_seen(make_job(tenant_id)), durable=False),
        store.write(synchronous_seen(make_job(tenant_id))),
        store.write(synchronous_seen(make_job(tenant_id)), durable=False),
    )
    assert store.batches == batches + 1 and seen == [FULL, FULL, FULL]
    assert store.relaxed_batches == relaxed + 1


def test_a_relaxed_write_survives_the_process_being_killed(tmp_path: Path) -> None:
    """synchronous=NORMAL in WAL mode still commits to the WAL: only a power cut can take it."""
    path = tmp_path / "killed.db"
    child = f"""
import asyncio, os, sys, time
sys.path.insert(0, {str(ROOT)!r})
from gateway.store.sqlite import SQLiteStore
from gateway.tenancy import create_tenant

async def main():
    store = SQLiteStore({str(path)!r})
    await store.open()
    await store.migrate()
    await store.write(create_tenant("killed", {{}}, time.time()), durable=False)
    os._exit(0)  # no close, no checkpoint: only the WAL holds the tenant

asyncio.run(main())
"""
    subprocess.run([sys.executable, "-c", child], check=True, timeout=60)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT name FROM tenants").fetchall() == [("killed",)]


async def test_close_commits_what_is_queued(tmp_path: Path) -> None:
    path = str(tmp_path / "close.db")
    store = SQLiteStore(path)
    await store.open()
    await store.migrate()
    tenant_id = await new_tenant(store)
    jobs = [make_job(tenant_id, f"p{i}") for i in range(50)]
    writes = [asyncio.ensure_future(store.write(insert(job))) for job in jobs]
    await asyncio.sleep(0)  # the writes are queued
    await store.close()
    assert [w.result() for w in writes] == [job.id for job in jobs]
    with pytest.raises(RuntimeError):
        await store.write(insert(make_job(tenant_id)))

    reopened = SQLiteStore(path)
    await reopened.open()
    try:
        assert await reopened.migrate() == []
        for job in jobs:
            assert await reopened.get_job(job.id) is not None
    finally:
        await reopened.close()


async def test_a_job_reads_back_as_written_with_every_field_set_or_left_empty(
    store: SQLiteStore,
) -> None:
    """insert_job writes only the columns that have a value: a field left None must read back
    None, and one set must read back as set, whichever set of columns a job has."""
    tenant = await new_tenant(store)
    bare = make_job(tenant)
    full = make_job(tenant, "y")
    for name, value in {
        "callback_url": "https://example.test/hook", "metadata": {"a": [1, None]},
        "cost_micros": 40_000, "upstream_id": "up-1", "outputs": ["https://o.test/1.png"],
        "has_nsfw_contents": [False], "error_code": "e", "error_message": "m",
        "upstream_timings": {"inference": 12}, "submit_attempted_at": 1.5, "submitted_at": 2.5,
        "finished_at": 3.5, "last_heard_at": 4.5, "next_poll_at": 5.5, "not_before": 6.5,
        "surface": "wavespeed",
    }.items():
        setattr(full, name, value)
    written = (bare, full, make_job(tenant, "z"))
    for job in written:
        await store.write(insert(job))
        # Each way a job is read: inline, inside a transaction, through a reader.
        assert await store.get_job(job.id) == job
        assert await store.write(lambda tx, job_id=job.id: tx.get_job(job_id)) == job
    listed = await store.list_jobs(tenant, status=None, model=None, limit=10, before_id=None)
    assert sorted(listed, key=lambda j: j.id) == sorted(written, key=lambda j: j.id)


def test_every_job_field_that_may_be_none_is_a_column_that_defaults_to_null(
    tmp_path: Path,
) -> None:
    """What insert_job leaves out must read back as None: the column's default must be NULL."""
    path = tmp_path / "schema.db"
    with sqlite3.connect(path) as conn:
        for _, _, sql in MIGRATIONS:
            conn.executescript(sql)
        columns = {row[1]: row for row in conn.execute("PRAGMA table_info(jobs)")}
    for field in dataclasses.fields(Job):
        column = columns[field.name]
        if field.default is None or "None" in str(field.type):
            assert column[4] is None, f"jobs.{field.name} defaults to {column[4]}, not NULL"


async def test_the_queries_for_jobs_by_status_search_an_index(store: SQLiteStore) -> None:
    """The dispatcher's, the reconciler's and the metrics' queries must not read every job
    ever accepted (they run every tick, and a production table holds millions)."""
    issued: list[str] = []
    for reader in store._all_readers:
        await reader.set_trace_callback(issued.append)
    now = time.time()
    await store.jobs_in_status(("queued", "submitted", "processing"))
    await store.due_polls(now, 10)
    await store.expired_submits(now)
    await store.unsent_jobs(10)
    await store.active_job_counts()
    await store.poll_backlog(now)
    queries = [sql for sql in issued if "FROM jobs" in sql]
    assert len(queries) == 6, issued
    with sqlite3.connect(store.path) as conn:
        plans = {
            sql: " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql))
            for sql in queries
        }
    for sql, plan in plans.items():
        assert "SCAN jobs" not in plan and "SEARCH jobs USING" in plan, (sql, plan)
    # The reconciler's every-second query for unanswered submits reads only those, not every
    # job without an upstream id (the whole backlog): see migration 7.
    [expired] = [plan for sql, plan in plans.items() if "submit_attempted_at <=" in sql]
    assert "USING INDEX jobs_unanswered_submits (submit_attempted_at<?)" in expired, expired
    # The metrics scrape's count of unfinished jobs reads the index alone (migration 8).
    [counts] = [plan for sql, plan in plans.items() if "GROUP BY model, status" in sql]
    assert "USING COVERING INDEX jobs_status" in counts, counts


async def test_migrations_apply_once(tmp_path: Path) -> None:
    path = str(tmp_path / "m.db")
    store = SQLiteStore(path)
    await store.open()
    try:
        assert await store.schema_version() == 0
        assert await store.migrate() == [v for v, _, _ in MIGRATIONS]
        assert await store.schema_version() == LATEST
        assert await store.migrate() == []
        assert await asyncio.gather(store.migrate(), store.migrate()) == [[], []]
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
    assert versions == list(range(1, LATEST + 1))


async def test_gateway_migrate_is_idempotent(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_DATABASE_URL"] = f"sqlite:///{tmp_path / 'cli.db'}"

    async def migrate() -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "migrate", cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        return out.decode().strip()

    first = await migrate()
    assert first == f"applied migrations: {[v for v, _, _ in MIGRATIONS]}"
    assert await migrate() == "schema is up to date"
    assert await migrate() == "schema is up to date"
    with sqlite3.connect(tmp_path / "cli.db") as conn:
        count = conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0]
    assert count == LATEST


async def test_migration_4_moves_the_surface_marker_into_columns(tmp_path: Path) -> None:
    """Jobs accepted on the WaveSpeed surface before migration 4 kept the surface in their
    creation event; the migration moves it to jobs.surface and to their callback messages."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE schema_migrations "
        "(version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    for version, description, sql in MIGRATIONS[:3]:
        for statement in sql.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (version, description))
    conn.execute("INSERT INTO tenants VALUES ('ten_1', 't', 0, NULL, '{}', 'whsec_x')")
    for job_id, detail in (("job_a", '{"surface": "wavespeed"}'), ("job_b", None)):
        conn.execute(
            "INSERT INTO jobs (id, tenant_id, model, task, wavespeed_id, status, inputs, "
            "price_micros, created_at, updated_at, callback_url) "
            "VALUES (?, 'ten_1', 'm', 't', 'w', 'completed', '{}', 0, 0, 0, 'http://cb')", (job_id,),
        )
        conn.execute(
            "INSERT INTO job_events VALUES (?, 1, NULL, 'queued', 'api', 0, ?)", (job_id, detail)
        )
        conn.execute(
            "INSERT INTO webhook_messages (id, tenant_id, endpoint_id, url, target, job_id, "
            "event_type, payload, event_at, created_at, status, next_attempt_at) "
            "VALUES (?, 'ten_1', NULL, 'http://cb', 't', ?, 'job.completed', '{}', 0, 0, 'pending', 0)",
            (f"msg_{job_id}", job_id),
        )
    conn.commit()
    conn.close()

    store = SQLiteStore(str(path))
    await store.open()
    try:
        assert 4 in await store.migrate()
        job_a, job_b = await store.get_job("job_a"), await store.get_job("job_b")
        assert job_a is not None and job_a.surface == "wavespeed"
        assert job_b is not None and job_b.surface == "v1"
        messages = [await store.get_webhook_message(f"msg_{j}") for j in ("job_a", "job_b")]
        styles = {m.id: m.style for m in messages if m is not None}
        assert styles == {"msg_job_a": "wavespeed", "msg_job_b": "standard"}
    finally:
        await store.close()
