"""SQLite: tenant callback endpoints, the outbox and the attempt log (mixed into SQLiteTx for
writes and SQLiteStore for reads; see gateway.store.callbacks for the model)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import fields
from typing import Any

import aiosqlite

from gateway.store import JobEvent
from gateway.store.callbacks import MessageQuery, WebhookAttempt, WebhookEndpoint, WebhookMessage

Row = sqlite3.Row | aiosqlite.Row
_ENDPOINT_COLUMNS = [f.name for f in fields(WebhookEndpoint)]
_MESSAGE_COLUMNS = [f.name for f in fields(WebhookMessage)]
_ATTEMPT_COLUMNS = [f.name for f in fields(WebhookAttempt)]


def _endpoint_from_row(row: Row) -> WebhookEndpoint:
    data = {name: row[name] for name in _ENDPOINT_COLUMNS}
    data["event_types"] = json.loads(data["event_types"])
    data["enabled"] = bool(data["enabled"])
    return WebhookEndpoint(**data)


def _endpoint_values(changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(changes)
    if "event_types" in out:
        out["event_types"] = json.dumps(out["event_types"])
    if "enabled" in out:
        out["enabled"] = int(bool(out["enabled"]))
    return out


def _message_from_row(row: Row) -> WebhookMessage:
    return WebhookMessage(**{name: row[name] for name in _MESSAGE_COLUMNS})


def _attempt_from_row(row: Row) -> WebhookAttempt:
    return WebhookAttempt(**{name: row[name] for name in _ATTEMPT_COLUMNS})


def _insert(conn: sqlite3.Connection, table: str, values: dict[str, Any]) -> None:
    marks = ", ".join("?" for _ in values)
    conn.execute(f"INSERT INTO {table} ({', '.join(values)}) VALUES ({marks})", list(values.values()))


def _update(
    conn: sqlite3.Connection, table: str, columns: list[str], key: str, changes: dict[str, Any]
) -> None:
    unknown = set(changes) - set(columns)
    if unknown:
        raise ValueError(f"not {table} columns: {sorted(unknown)}")
    if changes:
        assignments = ", ".join(f"{name} = ?" for name in changes)
        conn.execute(f"UPDATE {table} SET {assignments} WHERE id = ?", [*changes.values(), key])


# Due messages, at most ``per_target`` in flight per target counting live claims (ours and
# other processes'), oldest first.
_CLAIM_SQL = """
WITH busy AS (
    SELECT target, COUNT(*) AS n FROM webhook_messages
    WHERE status = 'pending' AND claim_token IS NOT NULL AND next_attempt_at > :now
    GROUP BY target
),
due AS (
    SELECT id, target, next_attempt_at,
           ROW_NUMBER() OVER (PARTITION BY target ORDER BY next_attempt_at, id) AS rn
    FROM webhook_messages WHERE status = 'pending' AND next_attempt_at <= :now
)
SELECT due.id FROM due LEFT JOIN busy ON busy.target = due.target
WHERE due.rn + COALESCE(busy.n, 0) <= :per_target
ORDER BY due.next_attempt_at, due.id LIMIT :limit
"""


class CallbackTx:
    conn: sqlite3.Connection

    def job_events(self, job_id: str) -> list[JobEvent]:
        rows = self.conn.execute(
            "SELECT seq, from_status, to_status, source, at, detail FROM job_events "
            "WHERE job_id = ? ORDER BY seq", (job_id,),
        ).fetchall()
        return [
            JobEvent(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]) if r[5] else None) for r in rows
        ]

    def endpoints_for_event(self, tenant_id: str, event_type: str) -> list[WebhookEndpoint]:
        rows = self.conn.execute(
            "SELECT * FROM webhook_endpoints WHERE tenant_id = ? AND enabled = 1 ORDER BY id",
            (tenant_id,),
        ).fetchall()
        endpoints = [_endpoint_from_row(r) for r in rows]
        return [e for e in endpoints if event_type in e.event_types]

    def insert_webhook_endpoint(self, endpoint: WebhookEndpoint) -> None:
        values = {name: getattr(endpoint, name) for name in _ENDPOINT_COLUMNS}
        _insert(self.conn, "webhook_endpoints", _endpoint_values(values))

    def get_webhook_endpoint(self, endpoint_id: str) -> WebhookEndpoint | None:
        row = self.conn.execute(
            "SELECT * FROM webhook_endpoints WHERE id = ?", (endpoint_id,)
        ).fetchone()
        return _endpoint_from_row(row) if row else None

    def update_webhook_endpoint(self, endpoint_id: str, **changes: object) -> None:
        _update(
            self.conn, "webhook_endpoints", _ENDPOINT_COLUMNS, endpoint_id,
            _endpoint_values(changes),
        )

    def delete_webhook_endpoint(self, endpoint_id: str) -> None:
        self.conn.execute(
            "DELETE FROM webhook_attempts WHERE message_id IN "
            "(SELECT id FROM webhook_messages WHERE endpoint_id = ?)", (endpoint_id,),
        )
        self.conn.execute("DELETE FROM webhook_messages WHERE endpoint_id = ?", (endpoint_id,))
        self.conn.execute("DELETE FROM webhook_endpoints WHERE id = ?", (endpoint_id,))

    def insert_webhook_message(self, message: WebhookMessage) -> None:
        _insert(
            self.conn, "webhook_messages",
            {name: getattr(message, name) for name in _MESSAGE_COLUMNS},
        )

    def get_webhook_message(self, message_id: str) -> WebhookMessage | None:
        row = self.conn.execute(
            "SELECT * FROM webhook_messages WHERE id = ?", (message_id,)
        ).fetchone()
        return _message_from_row(row) if row else None

    def update_webhook_message(self, message_id: str, **changes: object) -> None:
        _update(self.conn, "webhook_messages", _MESSAGE_COLUMNS, message_id, dict(changes))

    def claim_webhook_messages(
        self, now: float, lease_until: float, limit: int, per_target: int, token: str
    ) -> list[WebhookMessage]:
        ids = [
            r[0] for r in self.conn.execute(
                _CLAIM_SQL, {"now": now, "per_target": per_target, "limit": limit}
            ).fetchall()
        ]
        claimed: list[WebhookMessage] = []
        for message_id in ids:
            row = self.conn.execute(
                "UPDATE webhook_messages SET claim_token = ?, next_attempt_at = ? "
                "WHERE id = ? RETURNING *", (token, lease_until, message_id),
            ).fetchone()
            claimed.append(_message_from_row(row))
        return claimed

    def insert_webhook_attempt(self, attempt: WebhookAttempt) -> None:
        _insert(
            self.conn, "webhook_attempts",
            {name: getattr(attempt, name) for name in _ATTEMPT_COLUMNS},
        )

    def dead_letter_pending(self, endpoint_id: str, now: float, reason: str) -> int:
        cursor = self.conn.execute(
            "UPDATE webhook_messages SET status = 'dead', dead_at = ?, last_error = ?, "
            "next_attempt_at = NULL, claim_token = NULL "
            "WHERE endpoint_id = ? AND status = 'pending'", (now, reason, endpoint_id),
        )
        return cursor.rowcount

    def prune_webhook_messages(self, before_id: str, limit: int) -> int:
        """Delete up to ``limit`` delivered or dead messages older than ``before_id`` (ids are
        time-ordered, so this walks the primary key), with their attempts."""
        ids = [
            r[0] for r in self.conn.execute(
                "SELECT id FROM webhook_messages WHERE id < ? AND status != 'pending' "
                "ORDER BY id LIMIT ?", (before_id, limit),
            ).fetchall()
        ]
        if ids:
            marks = ", ".join("?" for _ in ids)
            self.conn.execute(f"DELETE FROM webhook_attempts WHERE message_id IN ({marks})", ids)
            self.conn.execute(f"DELETE FROM webhook_messages WHERE id IN ({marks})", ids)
        return len(ids)

    def requeue_dead(
        self, tenant_id: str, endpoint_id: str | None, since: float, now: float
    ) -> int:
        sql = (
            "UPDATE webhook_messages SET status = 'pending', next_attempt_at = ?, "
            "round_attempts = 0, dead_at = NULL, claim_token = NULL "
            "WHERE tenant_id = ? AND status = 'dead' AND dead_at >= ?"
        )
        args: list[Any] = [now, tenant_id, since]
        if endpoint_id is not None:
            sql += " AND endpoint_id = ?"
            args.append(endpoint_id)
        return self.conn.execute(sql, args).rowcount


class CallbackReads:
    _reader: Callable[[], AbstractAsyncContextManager[aiosqlite.Connection]]
    _point: Callable[..., list[sqlite3.Row]]

    async def _callback_rows(self, sql: str, args: Any = ()) -> list[aiosqlite.Row]:
        async with self._reader() as db:
            cursor = await db.execute(sql, args)
            return list(await cursor.fetchall())

    async def get_webhook_endpoint(self, endpoint_id: str) -> WebhookEndpoint | None:
        rows = await self._callback_rows(
            "SELECT * FROM webhook_endpoints WHERE id = ?", (endpoint_id,)
        )
        return _endpoint_from_row(rows[0]) if rows else None

    async def list_webhook_endpoints(self, tenant_id: str) -> list[WebhookEndpoint]:
        rows = await self._callback_rows(
            "SELECT * FROM webhook_endpoints WHERE tenant_id = ? ORDER BY id", (tenant_id,)
        )
        return [_endpoint_from_row(r) for r in rows]

    async def get_webhook_message(self, message_id: str) -> WebhookMessage | None:
        rows = await self._callback_rows(
            "SELECT * FROM webhook_messages WHERE id = ?", (message_id,)
        )
        return _message_from_row(rows[0]) if rows else None

    async def list_webhook_messages(self, query: MessageQuery) -> list[WebhookMessage]:
        where: list[str] = []
        args: list[Any] = []
        for column, value in (
            ("tenant_id", query.tenant_id), ("endpoint_id", query.endpoint_id),
            ("job_id", query.job_id), ("status", query.status),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if query.since is not None:
            where.append("(CASE WHEN status = 'dead' THEN dead_at ELSE created_at END) >= ?")
            args.append(query.since)
        if query.before_id is not None:
            where.append("id < ?")
            args.append(query.before_id)
        sql = "SELECT * FROM webhook_messages"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(query.limit)
        return [_message_from_row(r) for r in await self._callback_rows(sql, args)]

    async def webhook_attempts(self, message_ids: list[str]) -> dict[str, list[WebhookAttempt]]:
        found: dict[str, list[WebhookAttempt]] = {m: [] for m in message_ids}
        if not message_ids:
            return found
        marks = ", ".join("?" for _ in message_ids)
        rows = await self._callback_rows(
            f"SELECT * FROM webhook_attempts WHERE message_id IN ({marks}) "
            "ORDER BY message_id, seq", message_ids,
        )
        for row in rows:
            found[row["message_id"]].append(_attempt_from_row(row))
        return found

    async def next_webhook_due(self) -> float | None:
        # A point read (the partial index webhook_messages_due), inline: the deliverer asks
        # after every transition that may have queued a message.
        rows = self._point(
            "SELECT MIN(next_attempt_at) FROM webhook_messages WHERE status = 'pending'"
        )
        value = rows[0][0] if rows else None
        return float(value) if value is not None else None

    async def count_pending_webhooks(self) -> int:
        rows = await self._callback_rows(
            "SELECT COUNT(*) FROM webhook_messages WHERE status = 'pending'"
        )
        return int(rows[0][0])
