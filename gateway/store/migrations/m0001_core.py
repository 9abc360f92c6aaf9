"""Migration 1: tenants, keys, jobs, job events, webhook receipts, idempotency keys."""

VERSION = 1
DESCRIPTION = "jobs, events, tenants, keys, webhook receipts, idempotency"
SQL = """
        CREATE TABLE tenants (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            created_at REAL NOT NULL,
            disabled_at REAL,
            limits TEXT NOT NULL DEFAULT '{}',
            webhook_secret TEXT NOT NULL
        );
        CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            tenant_id TEXT NOT NULL REFERENCES tenants(id),
            name TEXT,
            prefix TEXT NOT NULL,
            secret_hash TEXT NOT NULL UNIQUE,
            created_at REAL NOT NULL,
            expires_at REAL,
            revoked_at REAL,
            last_used_at REAL
        );
        CREATE INDEX api_keys_tenant ON api_keys(tenant_id);
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            tenant_id TEXT NOT NULL REFERENCES tenants(id),
            model TEXT NOT NULL,
            task TEXT NOT NULL,
            wavespeed_id TEXT NOT NULL,
            status TEXT NOT NULL,
            inputs TEXT NOT NULL,
            callback_url TEXT,
            metadata TEXT,
            price_micros INTEGER NOT NULL,
            cost_micros INTEGER,
            upstream_id TEXT UNIQUE,
            outputs TEXT,
            has_nsfw_contents TEXT,
            error_code TEXT,
            error_message TEXT,
            upstream_timings TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            submit_attempted_at REAL,
            submitted_at REAL,
            finished_at REAL,
            last_heard_at REAL,
            next_poll_at REAL,
            not_before REAL
        );
        CREATE INDEX jobs_tenant ON jobs(tenant_id, id DESC);
        CREATE INDEX jobs_active ON jobs(status, id)
            WHERE status IN ('queued', 'submitted', 'processing');
        CREATE TABLE job_events (
            job_id TEXT NOT NULL REFERENCES jobs(id),
            seq INTEGER NOT NULL,
            from_status TEXT,
            to_status TEXT NOT NULL,
            source TEXT NOT NULL,
            at REAL NOT NULL,
            detail TEXT,
            PRIMARY KEY (job_id, seq)
        ) WITHOUT ROWID;
        CREATE TABLE webhook_receipts (
            webhook_id TEXT PRIMARY KEY,
            job_id TEXT NOT NULL,
            received_at REAL NOT NULL,
            status TEXT,
            result TEXT NOT NULL
        );
        CREATE TABLE idempotency_keys (
            tenant_id TEXT NOT NULL,
            key TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            job_id TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (tenant_id, key)
        ) WITHOUT ROWID;
        """
