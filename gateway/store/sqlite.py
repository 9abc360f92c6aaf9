"""SQLite implementation of the store.

Writes: one connection owned by one thread. Transaction scripts queue up while the previous
batch commits, then run together in one transaction (each in its own savepoint when there are
several, so one script that raises leaves the others intact) and commit once: group commit,
with no timer. Every caller waits for its own batch's commit, so nothing is acknowledged
before it is durable.
WAL with synchronous=FULL: the commit is fsynced, and group commit makes that nearly free.

A script may be written ``durable=False``: progress that nobody is told about and that the
gateway recovers without loss if a power cut takes it (see ``write``). A batch of such scripts
only is committed with synchronous=NORMAL: in WAL mode it survives a crash of the process, not
of the machine, until the next fsynced commit, which writes it to disk too (the WAL is one
file, appended in commit order). One fsync less on such a write's path.

Reads: under WAL every reader sees only committed data. Point reads by key (a job, its
events, a key, an idempotency record) run inline on the event loop's thread on a connection of
their own: they take a few microseconds, less than a hand-off to another thread costs (see
bench/). Scans (listings, recovery, reports) go through aiosqlite, so a slow one never stalls
the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import partial
from typing import Any, TypeVar

import aiosqlite

from gateway import jsonio
from gateway.logs import get_logger
from gateway.store import ApiKey, Idempotency, Job, JobEvent, Settled, Tenant
from gateway.store.migrations import MIGRATIONS, statements
from gateway.store.sqlite_callbacks import CallbackReads, CallbackTx
from gateway.store.sqlite_tenancy import TenancyReads, TenancyTx, key_from_row, tenant_from_row

T = TypeVar("T")
log = get_logger()

MAX_BATCH = 512
MAX_KEPT_KEYS = 10_000  # find_key's memory: past it, start again
# A tenant by id or by name, an id winning over a name: two lookups, each on its own index
# (the id alone is what the hot paths ask for, and it is found by the first).
_TENANT_BY_ID = "SELECT * FROM tenants WHERE id = ?"
_TENANT_BY_NAME = "SELECT * FROM tenants WHERE name = ?"
_JSON_COLUMNS = {"inputs", "metadata", "outputs", "has_nsfw_contents", "upstream_timings"}
_JOB_COLUMNS = [f.name for f in fields(Job)]
_IDS_PER_QUERY = 500  # well under SQLite's limit on a statement's variables
# Every read of jobs names Job's fields in order, so that a row is read by position: by name,
# sqlite3.Row compares the name with each column's in turn (a job row read by name was about
# 50,000 instructions, and a job is read three times on its way).
_JOB_SELECT = f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs"
_JOB_BY_ID = f"{_JOB_SELECT} WHERE id = ?"
_JSON_POSITIONS = tuple(i for i, name in enumerate(_JOB_COLUMNS) if name in _JSON_COLUMNS)
_LIST_POSITIONS = tuple(_JOB_COLUMNS.index(name) for name in ("outputs", "has_nsfw_contents"))


@functools.cache
def _insert_job_sql(columns: tuple[str, ...]) -> str:
    # One statement per set of columns with a value: a handful (what a new job has set).
    return f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"


@functools.cache
def _insert_event_sql(columns: tuple[str, ...]) -> str:
    return f"INSERT INTO job_events ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"


@functools.cache
def _next_event_sql(columns: tuple[str, ...]) -> str:
    # The event numbered after the job's last one.
    return (
        f"INSERT INTO job_events ({', '.join(columns)}, seq) "
        f"SELECT {', '.join('?' for _ in columns)}, COALESCE(MAX(seq), 0) + 1 "
        "FROM job_events WHERE job_id = ? RETURNING seq"
    )


def _dump(value: Any) -> str | None:
    return None if value is None else jsonio.dumps(value)


def _job_from_row(row: sqlite3.Row | aiosqlite.Row) -> Job:
    """A job from a row of ``_JOB_SELECT``."""
    values = list(row)
    for i in _JSON_POSITIONS:
        raw = values[i]
        values[i] = json.loads(raw) if raw is not None else None
    for i in _LIST_POSITIONS:
        values[i] = values[i] or []
    return Job(*values)


def _connect_pragmas(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=10000")


class SQLiteTx(TenancyTx, CallbackTx):
    """The ``Tx`` of a transaction script, over the writer's connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        # One cursor for the statements run for every job whose rows are not read (the
        # transaction's own, the inserts): conn.execute makes a cursor each time.
        self.cursor = conn.cursor()
        self.tenants_read = {}
        self.script_counts = {}
        self.batch_counts = {}

    def end_script(self, ok: bool) -> None:
        """The running script returned (``ok``) or raised and was rolled back."""
        if not ok:
            self.tenants_read.clear()  # it may have read a tenant it had changed
        self.end_script_counts(ok)

    def before_commit(self) -> None:
        self.flush_counters()

    def get_job(self, job_id: str) -> Job | None:
        row = self.conn.execute(_JOB_BY_ID, (job_id,)).fetchone()
        return _job_from_row(row) if row else None

    def insert_job(self, job: Job) -> None:
        # Only the columns with a value (the others default to NULL): the sqlite3 module binds
        # a None through its adapter lookup, about 3,000 instructions each, and a new job has
        # a dozen (a sixth of what writing its row cost).
        columns: list[str] = []
        values: list[Any] = []
        for name in _JOB_COLUMNS:
            value = getattr(job, name)
            if value is not None:
                columns.append(name)
                values.append(_dump(value) if name in _JSON_COLUMNS else value)
        self.cursor.execute(_insert_job_sql(tuple(columns)), values)

    def update_job(self, job_id: str, **changes: Any) -> None:
        unknown = set(changes) - set(_JOB_COLUMNS)
        if unknown:
            raise ValueError(f"not job columns: {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in changes)
        values = [_dump(v) if k in _JSON_COLUMNS else v for k, v in changes.items()]
        self.conn.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", [*values, job_id])

    def insert_event(
        self, job_id: str, from_status: str | None, to_status: str, source: str, at: float,
        detail: dict[str, Any] | None, seq: int | None = None,
    ) -> int:
        # A None is left to the column's default rather than bound (see insert_job): a job's
        # first event has no from_status, and most events no detail.
        columns = ["job_id", "to_status", "source", "at"]
        values: list[Any] = [job_id, to_status, source, at]
        if from_status is not None:
            columns.append("from_status")
            values.append(from_status)
        if detail is not None:
            columns.append("detail")
            values.append(_dump(detail))
        if seq is not None:
            columns.append("seq")
            values.append(seq)
            self.cursor.execute(_insert_event_sql(tuple(columns)), values)
            return seq
        values.append(job_id)
        row = self.conn.execute(_next_event_sql(tuple(columns)), values).fetchone()
        return int(row[0])

    def get_idempotency(self, tenant_id: str, key: str) -> Idempotency | None:
        row = self.conn.execute(
            "SELECT fingerprint, job_id, created_at FROM idempotency_keys "
            "WHERE tenant_id = ? AND key = ?", (tenant_id, key),
        ).fetchone()
        return Idempotency(row[0], row[1], row[2]) if row else None

    def put_idempotency(self, tenant_id: str, key: str, record: Idempotency) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO idempotency_keys "
            "(tenant_id, key, fingerprint, job_id, created_at) VALUES (?, ?, ?, ?, ?)",
            (tenant_id, key, record.fingerprint, record.job_id, record.created_at),
        )

    def insert_receipt(
        self, webhook_id: str, job_id: str, at: float, status: str | None, result: str
    ) -> bool:
        cursor = self.conn.execute(
            "INSERT OR IGNORE INTO webhook_receipts "
            "(webhook_id, job_id, received_at, status, result) VALUES (?, ?, ?, ?, ?)",
            (webhook_id, job_id, at, status, result),
        )
        return cursor.rowcount == 1

    def insert_tenant(self, tenant: Tenant) -> None:
        self.tenants_read.clear()
        self.conn.execute(
            "INSERT INTO tenants (id, name, created_at, disabled_at, limits, webhook_secret) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (tenant.id, tenant.name, tenant.created_at, tenant.disabled_at,
             json.dumps(tenant.limits), tenant.webhook_secret),
        )

    def get_tenant(self, ref: str) -> Tenant | None:
        """The tenant, read once per transaction (see TenancyTx); callers must not change it."""
        tenant = self.tenants_read.get(ref)
        if tenant is not None:
            return tenant
        row = (
            self.conn.execute(_TENANT_BY_ID, (ref,)).fetchone()
            or self.conn.execute(_TENANT_BY_NAME, (ref,)).fetchone()
        )
        if row is None:
            return None
        tenant = self.tenants_read[ref] = tenant_from_row(row)
        return tenant

    def insert_api_key(self, key: ApiKey, secret_hash: str) -> None:
        self.conn.execute(
            "INSERT INTO api_keys (id, tenant_id, name, prefix, secret_hash, created_at, "
            "expires_at, revoked_at, last_used_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key.id, key.tenant_id, key.name, key.prefix, secret_hash, key.created_at,
             key.expires_at, key.revoked_at, key.last_used_at),
        )


class _WriterThread:
    """The one thread that owns the writer connection: runs what it is handed, in order, and
    answers on the event loop. One queue put and one call_soon_threadsafe per hand-off
    (a ThreadPoolExecutor and asyncio's future chaining cost about twice as much)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._work: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    def run(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        future: asyncio.Future[T] = self._loop.create_future()
        self._work.put((fn, future))
        return future

    def stop(self) -> None:
        """Finish what was handed over, then end the thread."""
        self._work.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (item := self._work.get()) is not None:
            fn, future = item
            try:
                result, error = fn(), None
            except BaseException as exc:  # handed to the caller, like an executor would
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                self._loop.call_soon_threadsafe(_settle, future, result, error)


def _settle_batch(batch: list[_Pending], outcomes: list[tuple[bool, Any]]) -> None:
    """Tell a batch's writers its outcome: first every ``settled`` hook (so that what they
    wake, e.g. a request waiting for the job, runs before the writers' own continuations),
    then the writers themselves."""
    for item, (ok, value) in zip(batch, outcomes, strict=True):
        if item.settled is not None and item.context is not None:
            try:
                item.context.run(item.settled, ok, value)
            except Exception:
                log.exception("write_settled_hook_failed")
    for item, (ok, value) in zip(batch, outcomes, strict=True):
        _settle(item.future, value if ok else None, None if ok else value)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled meanwhile
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


@dataclass
class _Pending:
    script: Callable[[SQLiteTx], Any]
    future: asyncio.Future[Any]
    durable: bool
    settled: Settled | None
    context: contextvars.Context | None  # the caller's, for ``settled`` (its log bindings)


class SQLiteStore(TenancyReads, CallbackReads):
    """The store on one SQLite file (see the module docstring for how writes are batched)."""

    def __init__(self, path: str, *, readers: int = 2) -> None:
        self.path = path
        self._reader_count = readers
        self._readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._all_readers: list[aiosqlite.Connection] = []
        self._writer: _WriterThread | None = None
        self._conn: sqlite3.Connection | None = None
        self._inline: sqlite3.Connection | None = None
        self._pending: list[_Pending] = []
        self._keys: dict[str, tuple[int, tuple[Tenant, ApiKey]]] = {}  # see find_key
        self._version: int | None = None  # see _tenancy_version
        self.version_reads = 0
        self._wake = asyncio.Event()
        self._writer_task: asyncio.Task[None] | None = None
        self._closing = False
        self._synchronous = "FULL"  # the writer connection's setting (see _connect_pragmas)
        self.batches = 0
        self.scripts = 0
        self.relaxed_batches = 0  # run with synchronous=NORMAL: every script was durable=False

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        self._writer = _WriterThread(asyncio.get_running_loop())
        self._conn = await self._in_writer(self._open_writer)
        for _ in range(self._reader_count):
            reader = await aiosqlite.connect(self.path)
            reader.row_factory = aiosqlite.Row
            await reader.execute("PRAGMA busy_timeout=10000")
            await reader.execute("PRAGMA query_only=ON")
            self._all_readers.append(reader)
            self._readers.put_nowait(reader)
        inline = sqlite3.connect(self.path, isolation_level=None)
        inline.row_factory = sqlite3.Row
        inline.execute("PRAGMA query_only=ON")
        self._inline = inline
        self._writer_task = asyncio.create_task(self._write_loop(), name="store-writer")

    def _point(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """A point read inline (see the module docstring)."""
        assert self._inline is not None, "store is not open"
        return self._inline.execute(sql, args).fetchall()

    def _open_writer(self) -> sqlite3.Connection:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        _connect_pragmas(conn)
        return conn

    async def close(self) -> None:
        """Commit what is queued, then close every connection."""
        self._closing = True
        self._wake.set()
        if self._writer_task is not None:
            await self._writer_task
            self._writer_task = None
        for reader in self._all_readers:
            await reader.close()
        self._all_readers.clear()
        if self._inline is not None:
            self._inline.close()
            self._inline = None
        if self._conn is not None:
            conn = self._conn
            await self._in_writer(conn.close)
            self._conn = None
        if self._writer is not None:
            self._writer.stop()
            self._writer = None

    async def _in_writer(self, fn: Callable[[], T]) -> T:
        assert self._writer is not None, "store is not open"
        return await self._writer.run(fn)

    # -- migrations --------------------------------------------------------------------------

    async def migrate(self) -> list[int]:
        return await self._in_writer(self._migrate)

    def _migrate(self) -> list[int]:
        conn = self._conn
        assert conn is not None
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        applied: list[int] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, description, sql in MIGRATIONS:
                if version in done:
                    continue
                for statement in statements(sql):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                    (version, description, time.time()),
                )
                applied.append(version)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return applied

    async def schema_version(self) -> int:
        async with self._reader() as db:
            try:
                cursor = await db.execute("SELECT MAX(version) FROM schema_migrations")
            except sqlite3.OperationalError:
                return 0
            row = await cursor.fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    # -- writes ------------------------------------------------------------------------------

    async def write(
        self, script: Callable[[SQLiteTx], T], *, durable: bool = True,
        settled: Settled | None = None,
    ) -> T:
        """Run ``script`` in the next batch; return once the batch is committed.

        ``durable=False`` only for what nobody outside learns from this commit and what is
        recovered without loss if a power cut takes it: the commit is then not waited on to
        reach the disk (the next durable commit takes it there).

        ``settled`` (see ``Settled``) is called by the write loop with the outcome before any
        writer of the batch resumes, and even if this caller has stopped waiting; in the
        caller's context (what it bound for its log lines)."""
        if self._writer_task is None or self._closing:
            raise RuntimeError("store is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        context = contextvars.copy_context() if settled is not None else None
        self._pending.append(_Pending(script, future, durable, settled, context))
        self._wake.set()
        return await future

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                try:
                    outcomes = await self._in_writer(partial(self._run_batch, batch))
                except BaseException as exc:  # the commit itself failed: nobody's write held
                    outcomes = [(False, exc)] * len(batch)
                _settle_batch(batch, outcomes)
            if self._closing:
                return

    def _run_batch(self, batch: list[_Pending]) -> list[tuple[bool, Any]]:
        conn = self._conn
        assert conn is not None
        tx = SQLiteTx(conn)
        run = tx.cursor.execute
        outcomes: list[tuple[bool, Any]] = []
        synchronous = "FULL" if any(item.durable for item in batch) else "NORMAL"
        if synchronous != self._synchronous:
            conn.execute(f"PRAGMA synchronous={synchronous}")
            self._synchronous = synchronous
        alone = len(batch) == 1  # the transaction is the script's own: no savepoint needed
        run("BEGIN IMMEDIATE")
        try:
            for item in batch:
                if not alone:
                    run("SAVEPOINT script")
                try:
                    value = item.script(tx)
                except Exception as exc:
                    if alone:
                        run("ROLLBACK")
                    else:
                        run("ROLLBACK TO script")
                        run("RELEASE script")
                    tx.end_script(ok=False)
                    outcomes.append((False, exc))
                else:
                    if not alone:
                        run("RELEASE script")
                    tx.end_script(ok=True)
                    outcomes.append((True, value))
            if conn.in_transaction:
                tx.before_commit()
                run("COMMIT")
        except BaseException:
            if conn.in_transaction:
                run("ROLLBACK")
            raise
        self.batches += 1
        self.scripts += len(batch)
        self.relaxed_batches += synchronous == "NORMAL"
        return outcomes

    # -- reads -------------------------------------------------------------------------------

    def _reader(self) -> _ReaderLease:
        return _ReaderLease(self._readers)

    async def get_job(self, job_id: str) -> Job | None:
        rows = self._point(_JOB_BY_ID, (job_id,))
        return _job_from_row(rows[0]) if rows else None

    async def job_statuses(self, job_ids: list[str]) -> dict[str, str]:
        """The status of each of these jobs that exists: point reads by id, inline."""
        statuses: dict[str, str] = {}
        for start in range(0, len(job_ids), _IDS_PER_QUERY):
            chunk = job_ids[start:start + _IDS_PER_QUERY]
            marks = ", ".join("?" for _ in chunk)
            rows = self._point(f"SELECT id, status FROM jobs WHERE id IN ({marks})", tuple(chunk))
            statuses.update((row[0], row[1]) for row in rows)
        return statuses

    async def get_events(self, job_id: str) -> list[JobEvent]:
        rows = self._point(
            "SELECT seq, from_status, to_status, source, at, detail FROM job_events "
            "WHERE job_id = ? ORDER BY seq", (job_id,),
        )
        return [
            JobEvent(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]) if r[5] else None)
            for r in rows
        ]

    async def list_jobs(
        self, tenant_id: str, *, status: str | None, model: str | None, limit: int,
        before_id: str | None,
    ) -> list[Job]:
        sql = f"{_JOB_SELECT} WHERE tenant_id = ?"
        args: list[Any] = [tenant_id]
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        if model is not None:
            sql += " AND (model = ? OR wavespeed_id = ?)"
            args.extend([model, model])
        if before_id is not None:
            sql += " AND id < ?"
            args.append(before_id)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        async with self._reader() as db:
            cursor = await db.execute(sql, args)
            rows = await cursor.fetchall()
        return [_job_from_row(r) for r in rows]

    async def jobs_in_status(self, statuses: tuple[str, ...]) -> list[Job]:
        marks = ", ".join("?" for _ in statuses)
        async with self._reader() as db:
            cursor = await db.execute(
                f"{_JOB_SELECT} WHERE status IN ({marks}) ORDER BY id", statuses
            )
            rows = await cursor.fetchall()
        return [_job_from_row(r) for r in rows]

    async def due_polls(self, now: float, limit: int) -> list[Job]:
        """Jobs at WaveSpeed whose webhook is overdue (see gateway.reconciler)."""
        return await self._jobs_where(
            "status IN ('submitted', 'processing') AND upstream_id IS NOT NULL "
            "AND next_poll_at <= ? ORDER BY next_poll_at LIMIT ?", (now, limit),
        )

    async def expired_submits(self, attempted_before: float) -> list[Job]:
        """Queued jobs whose submit was attempted before the cutoff and never answered."""
        return await self._jobs_where(
            "status = 'queued' AND upstream_id IS NULL AND submit_attempted_at <= ?",
            (attempted_before,), index="jobs_unanswered_submits",  # see migration 7
        )

    async def unsent_jobs(self, limit: int) -> list[Job]:
        """Up to ``limit`` queued jobs no worker has claimed for a submit. Read through the
        status index, so it reads what it returns (and the claims in flight it skips), not the
        backlog; in the index's order (by model, then oldest first), not sorted: a sort would
        read the whole backlog."""
        return await self._jobs_where(
            "status = 'queued' AND submit_attempted_at IS NULL LIMIT ?", (limit,)
        )

    async def active_job_counts(self) -> dict[tuple[str, str], int]:
        """Unfinished jobs by (model, status), for the metrics scrape."""
        async with self._reader() as db:
            cursor = await db.execute(
                "SELECT model, status, COUNT(*) FROM jobs "
                "WHERE status IN ('queued', 'submitted', 'processing') GROUP BY model, status"
            )
            rows = await cursor.fetchall()
        return {(r[0], r[1]): r[2] for r in rows}

    async def poll_backlog(self, now: float) -> tuple[int, float | None]:
        """How many polls are due now (see ``due_polls``), and the oldest due time."""
        async with self._reader() as db:
            cursor = await db.execute(
                "SELECT COUNT(*), MIN(next_poll_at) FROM jobs WHERE status IN "
                "('submitted', 'processing') AND upstream_id IS NOT NULL AND next_poll_at <= ?",
                (now,),
            )
            row = await cursor.fetchone()
        return (row[0], row[1]) if row else (0, None)

    async def _jobs_where(
        self, where: str, args: tuple[Any, ...], *, index: str | None = None
    ) -> list[Job]:
        source = _JOB_SELECT if index is None else f"{_JOB_SELECT} INDEXED BY {index}"
        async with self._reader() as db:
            cursor = await db.execute(f"{source} WHERE {where}", args)
            rows = await cursor.fetchall()
        return [_job_from_row(r) for r in rows]

    async def get_tenant(self, ref: str) -> Tenant | None:
        rows = self._point(_TENANT_BY_ID, (ref,)) or self._point(_TENANT_BY_NAME, (ref,))
        return tenant_from_row(rows[0]) if rows else None

    async def find_key(self, secret_hash: str) -> tuple[Tenant, ApiKey] | None:
        """The key with this hash and its tenant. What was read is kept for the next requests
        while the tenancy version (raised by triggers on any change to tenants or to what
        decides a key's validity, by any process: migration 5) is the same (see
        ``_tenancy_version``). Unknown hashes are not kept."""
        version = self._tenancy_version()
        kept = self._keys.get(secret_hash)
        if kept is not None and kept[0] == version:
            return kept[1]
        found = self._read_key(secret_hash)
        if found is not None:
            if len(self._keys) >= MAX_KEPT_KEYS:
                self._keys.clear()
            self._keys[secret_hash] = (version, found)
        return found

    def _tenancy_version(self) -> int:
        """The tenancy version, read at most once per event-loop iteration. The lookups made in
        one iteration are for requests that had all arrived when it began, so they were
        concurrent with any change committed meanwhile, and none of them can have been sent
        after that change was answered (its answer goes out in a later iteration, this
        process's own writes included: the writer thread's commits are answered through the
        loop). Each later iteration reads the version again."""
        version = self._version
        if version is None:
            version = self._version = int(self._point("SELECT version FROM tenancy_version")[0][0])
            self.version_reads += 1
            asyncio.get_running_loop().call_soon(self._forget_version)
        return version

    def _forget_version(self) -> None:
        self._version = None

    def _read_key(self, secret_hash: str) -> tuple[Tenant, ApiKey] | None:
        rows = self._point(
            "SELECT k.*, t.name AS t_name, t.created_at AS t_created_at, "
            "t.disabled_at AS t_disabled_at, t.limits AS t_limits, "
            "t.webhook_secret AS t_webhook_secret "
            "FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.secret_hash = ?",
            (secret_hash,),
        )
        if not rows:
            return None
        row = rows[0]
        tenant = Tenant(
            id=row["tenant_id"], name=row["t_name"], created_at=row["t_created_at"],
            webhook_secret=row["t_webhook_secret"], limits=json.loads(row["t_limits"]),
            disabled_at=row["t_disabled_at"],
        )
        return tenant, key_from_row(row)

    async def get_idempotency(self, tenant_id: str, key: str) -> Idempotency | None:
        rows = self._point(
            "SELECT fingerprint, job_id, created_at FROM idempotency_keys "
            "WHERE tenant_id = ? AND key = ?", (tenant_id, key),
        )
        return Idempotency(rows[0][0], rows[0][1], rows[0][2]) if rows else None


class _ReaderLease:
    def __init__(self, pool: asyncio.Queue[aiosqlite.Connection]) -> None:
        self._pool = pool
        self._conn: aiosqlite.Connection | None = None

    async def __aenter__(self) -> aiosqlite.Connection:
        self._conn = await self._pool.get()
        return self._conn

    async def __aexit__(self, *exc: object) -> None:
        assert self._conn is not None
        self._pool.put_nowait(self._conn)
