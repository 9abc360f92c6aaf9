"""Migration 3: tenant webhooks: endpoints, the outbox of messages, the attempt log."""

VERSION = 3
DESCRIPTION = "tenant webhooks: endpoints, outbox, attempts"
SQL = """
CREATE TABLE webhook_endpoints (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    url TEXT NOT NULL,
    description TEXT,
    event_types TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    disabled_reason TEXT,
    secret TEXT NOT NULL,
    previous_secret TEXT,
    previous_secret_expires_at REAL,
    secret_rotated_at REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints(tenant_id, id);

CREATE TABLE webhook_messages (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    endpoint_id TEXT,
    url TEXT NOT NULL,
    target TEXT NOT NULL,
    job_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    event_at REAL NOT NULL,
    created_at REAL NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    next_attempt_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    round_attempts INTEGER NOT NULL DEFAULT 0,
    delivered_at REAL,
    dead_at REAL,
    last_error TEXT,
    claim_token TEXT
);
CREATE INDEX webhook_messages_due ON webhook_messages(next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_messages_claimed ON webhook_messages(target)
    WHERE status = 'pending' AND claim_token IS NOT NULL;
CREATE INDEX webhook_messages_tenant ON webhook_messages(tenant_id, id);
CREATE INDEX webhook_messages_endpoint ON webhook_messages(endpoint_id, id);
CREATE INDEX webhook_messages_job ON webhook_messages(job_id);
CREATE INDEX webhook_messages_dead ON webhook_messages(tenant_id, dead_at) WHERE status = 'dead';

CREATE TABLE webhook_attempts (
    message_id TEXT NOT NULL REFERENCES webhook_messages(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    at REAL NOT NULL,
    latency_ms INTEGER,
    status_code INTEGER,
    error TEXT,
    response TEXT,
    PRIMARY KEY (message_id, seq)
) WITHOUT ROWID;
"""
