"""SQLite: tenancy, quota counters, rate state, the ledger and the audit log (mixed into
SQLiteTx for writes and SQLiteStore for reads)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiosqlite

from gateway.store import ApiKey, AuditEntry, Tenant, UsageRow

_TENANT_COLUMNS = {"name", "disabled_at", "limits", "webhook_secret"}
_KEY_COLUMNS = {"name", "expires_at", "revoked_at", "last_used_at"}


def tenant_from_row(row: sqlite3.Row | aiosqlite.Row) -> Tenant:
    return Tenant(
        id=row["id"], name=row["name"], created_at=row["created_at"],
        webhook_secret=row["webhook_secret"], limits=json.loads(row["limits"]),
        disabled_at=row["disabled_at"],
    )


def key_from_row(row: sqlite3.Row | aiosqlite.Row) -> ApiKey:
    return ApiKey(
        id=row["id"], tenant_id=row["tenant_id"], prefix=row["prefix"],
        created_at=row["created_at"], name=row["name"], expires_at=row["expires_at"],
        revoked_at=row["revoked_at"], last_used_at=row["last_used_at"],
    )


def _audit_from_row(row: sqlite3.Row | aiosqlite.Row) -> AuditEntry:
    return AuditEntry(
        id=row["id"], at=row["at"], actor=row["actor"], action=row["action"],
        target_type=row["target_type"], target_id=row["target_id"],
        before=json.loads(row["before"]) if row["before"] else None,
        after=json.loads(row["after"]) if row["after"] else None,
    )


Counts = dict[tuple[str, str], tuple[int, int]]  # (tenant, period) -> (images, usd_micros)


class TenancyTx:
    """Two things a transaction keeps in memory (see SQLiteTx, which owns their life):

    - the tenants it read (``get_tenant``, by the reference asked for), read again after any
      tenant is written: the batch holds the write lock, so nobody else can change one
      meanwhile, and each accepted job re-reads its tenant;
    - the counter changes (``add_counters``), summed over the batch and written with one
      statement before the commit (``flush_counters``): an upsert per job cost a fifth of
      the job's transaction. ``get_counter`` adds what is pending to what is stored.
    """

    conn: sqlite3.Connection
    tenants_read: dict[str, Tenant]
    script_counts: Counts  # the running script's changes: dropped if it raises
    batch_counts: Counts  # the changes of the batch's scripts that succeeded

    def update_tenant(self, tenant_id: str, **changes: Any) -> None:
        unknown = set(changes) - _TENANT_COLUMNS
        if unknown:
            raise ValueError(f"not tenant columns: {sorted(unknown)}")
        self.tenants_read.clear()
        if "limits" in changes:
            changes["limits"] = json.dumps(changes["limits"])
        assignments = ", ".join(f"{name} = ?" for name in changes)
        self.conn.execute(
            f"UPDATE tenants SET {assignments} WHERE id = ?", [*changes.values(), tenant_id]
        )

    def get_api_key(self, key_id: str) -> ApiKey | None:
        row = self.conn.execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return key_from_row(row) if row else None

    def update_api_key(self, key_id: str, **changes: Any) -> None:
        unknown = set(changes) - _KEY_COLUMNS
        if unknown:
            raise ValueError(f"not api_key columns: {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in changes)
        self.conn.execute(
            f"UPDATE api_keys SET {assignments} WHERE id = ?", [*changes.values(), key_id]
        )

    def insert_audit(
        self, at: float, actor: str, action: str, target_type: str, target_id: str,
        before: Any, after: Any,
    ) -> None:
        self.conn.execute(
            "INSERT INTO audit_log (at, actor, action, target_type, target_id, before, after) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (at, actor, action, target_type, target_id,
             json.dumps(before) if before is not None else None,
             json.dumps(after) if after is not None else None),
        )

    def get_counter(self, tenant_id: str, period: str) -> tuple[int, int]:
        row = self.conn.execute(
            "SELECT images, usd_micros FROM quota_counters WHERE tenant_id = ? AND period = ?",
            (tenant_id, period),
        ).fetchone()
        images, micros = (int(row[0]), int(row[1])) if row else (0, 0)
        for pending in (self.batch_counts, self.script_counts):
            more = pending.get((tenant_id, period))
            if more is not None:
                images, micros = images + more[0], micros + more[1]
        return images, micros

    def add_counters(
        self, tenant_id: str, periods: Sequence[str], images: int, usd_micros: int
    ) -> None:
        for period in periods:
            _add(self.script_counts, (tenant_id, period), images, usd_micros)

    def end_script_counts(self, ok: bool) -> None:
        """The running script ended: keep its counter changes if it succeeded."""
        if ok:
            for key, (images, micros) in self.script_counts.items():
                _add(self.batch_counts, key, images, micros)
        self.script_counts.clear()

    def flush_counters(self) -> None:
        """Write the batch's counter changes: one statement, one row per tenant and period."""
        changes = [(t, p, i, u) for (t, p), (i, u) in self.batch_counts.items() if i or u]
        self.batch_counts.clear()
        if not changes:
            return
        rows = ", ".join("(?, ?, ?, ?)" for _ in changes)
        self.conn.execute(
            f"INSERT INTO quota_counters (tenant_id, period, images, usd_micros) VALUES {rows} "
            "ON CONFLICT (tenant_id, period) DO UPDATE SET images = images + excluded.images, "
            "usd_micros = usd_micros + excluded.usd_micros",
            [v for change in changes for v in change],
        )

    def get_rate(self, tenant_id: str) -> float | None:
        row = self.conn.execute(
            "SELECT tat FROM rate_limits WHERE tenant_id = ?", (tenant_id,)
        ).fetchone()
        return float(row[0]) if row else None

    def set_rate(self, tenant_id: str, tat: float) -> None:
        self.conn.execute(
            "INSERT INTO rate_limits (tenant_id, tat) VALUES (?, ?) "
            "ON CONFLICT (tenant_id) DO UPDATE SET tat = excluded.tat",
            (tenant_id, tat),
        )

    def insert_ledger(
        self, tenant_id: str, job_id: str, model: str, kind: str, images: int, usd_micros: int,
        day: str, at: float,
    ) -> bool:
        cursor = self.conn.execute(
            "INSERT OR IGNORE INTO ledger (tenant_id, job_id, model, kind, images, usd_micros, day, at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (tenant_id, job_id, model, kind, images, usd_micros, day, at),
        )
        return cursor.rowcount == 1


def _add(counts: Counts, key: tuple[str, str], images: int, micros: int) -> None:
    was = counts.get(key)
    counts[key] = (was[0] + images, was[1] + micros) if was else (images, micros)


class TenancyReads:
    _reader: Callable[[], AbstractAsyncContextManager[aiosqlite.Connection]]
    _point: Callable[[str, tuple[Any, ...]], list[sqlite3.Row]]

    async def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[aiosqlite.Row]:
        async with self._reader() as db:
            cursor = await db.execute(sql, args)
            return list(await cursor.fetchall())

    async def list_tenants(self) -> list[Tenant]:
        return [tenant_from_row(r) for r in await self._rows("SELECT * FROM tenants ORDER BY name")]

    async def list_keys(self, tenant_id: str) -> list[ApiKey]:
        rows = await self._rows(
            "SELECT * FROM api_keys WHERE tenant_id = ? ORDER BY created_at, id", (tenant_id,)
        )
        return [key_from_row(r) for r in rows]

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        rows = self._point("SELECT * FROM api_keys WHERE id = ?", (key_id,))
        return key_from_row(rows[0]) if rows else None

    async def list_audit(
        self, *, limit: int, before_id: int | None, target_id: str | None
    ) -> list[AuditEntry]:
        sql = "SELECT * FROM audit_log WHERE 1 = 1"
        args: list[Any] = []
        if before_id is not None:
            sql += " AND id < ?"
            args.append(before_id)
        if target_id is not None:
            sql += " AND target_id = ?"
            args.append(target_id)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        return [_audit_from_row(r) for r in await self._rows(sql, tuple(args))]

    async def usage_by_model(self, tenant_id: str, first_day: str, last_day: str) -> list[UsageRow]:
        rows = await self._rows(
            "SELECT day, model, SUM(images), SUM(usd_micros) FROM ledger "
            "WHERE tenant_id = ? AND kind = 'charge' AND day BETWEEN ? AND ? "
            "GROUP BY day, model ORDER BY day, model",
            (tenant_id, first_day, last_day),
        )
        return [UsageRow(day=r[0], model=r[1], images=int(r[2]), usd_micros=int(r[3])) for r in rows]

    async def counters(self, tenant_id: str, periods: tuple[str, ...]) -> dict[str, tuple[int, int]]:
        marks = ", ".join("?" for _ in periods)
        rows = self._point(
            f"SELECT period, images, usd_micros FROM quota_counters "
            f"WHERE tenant_id = ? AND period IN ({marks})", (tenant_id, *periods),
        )
        found = {r[0]: (int(r[1]), int(r[2])) for r in rows}
        return {p: found.get(p, (0, 0)) for p in periods}

    async def rate_tat(self, tenant_id: str) -> float | None:
        rows = self._point("SELECT tat FROM rate_limits WHERE tenant_id = ?", (tenant_id,))
        return float(rows[0][0]) if rows else None
