"""Migration 2: quota counters, rate-limit state, the money ledger, the admin audit log."""

VERSION = 2
DESCRIPTION = "tenancy, quotas, ledger, audit"
SQL = """
CREATE TABLE quota_counters (
    tenant_id TEXT NOT NULL,
    period TEXT NOT NULL,
    images INTEGER NOT NULL DEFAULT 0,
    usd_micros INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, period)
) WITHOUT ROWID;

CREATE TABLE rate_limits (
    tenant_id TEXT PRIMARY KEY,
    tat REAL NOT NULL
) WITHOUT ROWID;

CREATE TABLE ledger (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    model TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('reserve', 'charge', 'release')),
    images INTEGER NOT NULL,
    usd_micros INTEGER NOT NULL,
    day TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE UNIQUE INDEX ledger_once ON ledger(job_id, kind);
CREATE INDEX ledger_tenant_day ON ledger(tenant_id, day);

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id TEXT NOT NULL,
    before TEXT,
    after TEXT
);
CREATE INDEX audit_target ON audit_log(target_type, target_id);
"""
