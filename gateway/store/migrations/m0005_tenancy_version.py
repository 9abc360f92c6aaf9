"""Migration 5: a version number of everything authentication reads (tenants, and the fields of
API keys that decide whether a key is valid), raised by triggers on every such change, whoever
makes it. A process may keep what it read for a key while the version is unchanged
(gateway.store.sqlite.SQLiteStore.find_key): the version is read on every request, so a
revocation, a disabled tenant or a changed limit by any process counts at once. A key's
``last_used_at`` is not among the fields: recording a use does not invalidate anything."""

VERSION = 5
DESCRIPTION = "tenancy version for cached key lookups"
SQL = """
CREATE TABLE tenancy_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO tenancy_version (id, version) VALUES (1, 0);
CREATE TRIGGER tenants_inserted AFTER INSERT ON tenants
BEGIN UPDATE tenancy_version SET version = version + 1; END;
CREATE TRIGGER tenants_updated AFTER UPDATE ON tenants
BEGIN UPDATE tenancy_version SET version = version + 1; END;
CREATE TRIGGER tenants_deleted AFTER DELETE ON tenants
BEGIN UPDATE tenancy_version SET version = version + 1; END;
CREATE TRIGGER api_keys_inserted AFTER INSERT ON api_keys
BEGIN UPDATE tenancy_version SET version = version + 1; END;
CREATE TRIGGER api_keys_updated
AFTER UPDATE OF id, tenant_id, name, prefix, secret_hash, created_at, expires_at, revoked_at ON api_keys
BEGIN UPDATE tenancy_version SET version = version + 1; END;
CREATE TRIGGER api_keys_deleted AFTER DELETE ON api_keys
BEGIN UPDATE tenancy_version SET version = version + 1; END;
"""
