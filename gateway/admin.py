"""Admin operations on tenants and keys; each change writes an audit row (who, what, when,
before and after) in the same transaction as the change itself."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from gateway.errors import Conflict, FieldError, InvalidRequest, NotFound
from gateway.normalize import json_object
from gateway.quota import Limits, parse_limits
from gateway.store import ApiKey, Store, Tenant, Tx
from gateway.tenancy import IssuedKey, create_tenant, issue_key
from gateway.times import parse_time

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DEFAULT_ROTATION_OVERLAP = 24 * 3600.0


def tenant_record(tenant: Tenant) -> dict[str, Any]:
    """What the audit log keeps of a tenant: everything but its webhook secret."""
    record = asdict(tenant)
    record.pop("webhook_secret")
    return record


def parse_name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value) or value.startswith(("ten_", "key_")):
        raise InvalidRequest([FieldError(
            "name", "must be 1-64 letters, digits, '.', '_' or '-', not starting with ten_ or key_"
        )])
    return value


@dataclass
class AdminService:
    store: Store
    clock: Callable[[], float] = time.time

    async def get_tenant(self, ref: str) -> Tenant:
        tenant = await self.store.get_tenant(ref)
        if tenant is None:
            raise NotFound(f"no tenant {ref!r}", code="tenant_not_found")
        return tenant

    async def create_tenant(self, actor: str, name: Any, limits: Any) -> Tenant:
        now = self.clock()
        make = create_tenant(parse_name(name), parse_limits(limits).stored(), now)

        def script(tx: Tx) -> Tenant:
            tenant = make(tx)
            tx.insert_audit(now, actor, "tenant.create", "tenant", tenant.id, None, tenant_record(tenant))
            return tenant

        return await self.store.write(script)

    async def update_tenant(self, actor: str, ref: str, body: Any) -> Tenant:
        body = json_object(body)
        unknown = set(body) - {"name", "limits", "disabled"}
        if unknown:
            raise InvalidRequest([FieldError(k, "cannot be changed here") for k in sorted(unknown)])
        if "disabled" in body and not isinstance(body["disabled"], bool):
            raise InvalidRequest([FieldError("disabled", "must be true or false")])
        name = parse_name(body["name"]) if "name" in body else None
        now = self.clock()

        def script(tx: Tx) -> Tenant:
            tenant = tx.get_tenant(ref)
            if tenant is None:
                raise NotFound(f"no tenant {ref!r}", code="tenant_not_found")
            before = tenant_record(tenant)
            changes: dict[str, Any] = {}
            if "limits" in body:
                merged = parse_limits(body["limits"], Limits.from_stored(tenant.limits))
                changes["limits"] = merged.stored()
            if "disabled" in body:
                changes["disabled_at"] = (tenant.disabled_at or now) if body["disabled"] else None
            if name is not None and name != tenant.name:
                other = tx.get_tenant(name)
                if other is not None and other.id != tenant.id:
                    raise Conflict(f"a tenant named {name!r} exists", code="tenant_exists")
                changes["name"] = name
            if changes:
                tx.update_tenant(tenant.id, **changes)
            updated = tx.get_tenant(tenant.id)
            assert updated is not None
            action = "tenant.disable" if body.get("disabled") is True else "tenant.update"
            tx.insert_audit(now, actor, action, "tenant", tenant.id, before, tenant_record(updated))
            return updated

        return await self.store.write(script)

    async def create_key(self, actor: str, ref: str, body: Any) -> IssuedKey:
        body = json_object(body if body is not None else {})
        now = self.clock()
        name = body.get("name")
        if name is not None and (not isinstance(name, str) or len(name) > 64):
            raise InvalidRequest([FieldError("name", "must be a string of at most 64 characters")])
        expires_at = parse_time(body.get("expires_at"), "expires_at", after=now)
        make = issue_key(ref, name, expires_at, now)

        def script(tx: Tx) -> IssuedKey:
            issued = make(tx)
            tx.insert_audit(
                now, actor, "key.create", "key", issued.key.id, None, asdict(issued.key)
            )
            return issued

        return await self.store.write(script)

    async def revoke_key(self, actor: str, key_id: str) -> ApiKey:
        now = self.clock()

        def script(tx: Tx) -> ApiKey:
            key = tx.get_api_key(key_id)
            if key is None:
                raise NotFound(f"no key {key_id!r}", code="key_not_found")
            before = asdict(key)
            if key.revoked_at is None:
                tx.update_api_key(key_id, revoked_at=now)
                key.revoked_at = now
            tx.insert_audit(now, actor, "key.revoke", "key", key_id, before, asdict(key))
            return key

        return await self.store.write(script)

    async def rotate_key(self, actor: str, key_id: str, body: Any) -> tuple[IssuedKey, ApiKey]:
        """A new key for the same tenant; the old one keeps working until the overlap ends."""
        body = json_object(body if body is not None else {})
        now = self.clock()
        overlap = body.get("overlap_seconds", DEFAULT_ROTATION_OVERLAP)
        if isinstance(overlap, bool) or not isinstance(overlap, int | float) or overlap < 0:
            raise InvalidRequest([FieldError("overlap_seconds", "must be a number of seconds >= 0")])
        old_expiry = now + float(overlap)
        current = await self.store.get_api_key(key_id)
        if current is None:
            raise NotFound(f"no key {key_id!r}", code="key_not_found")
        make = issue_key(current.tenant_id, current.name, current.expires_at, now)

        def script(tx: Tx) -> tuple[IssuedKey, ApiKey]:
            key = tx.get_api_key(key_id)
            if key is None:
                raise NotFound(f"no key {key_id!r}", code="key_not_found")
            if key.revoked_at is not None:
                raise Conflict("a revoked key cannot be rotated", code="key_revoked")
            before = asdict(key)
            expiry = min(old_expiry, key.expires_at) if key.expires_at is not None else old_expiry
            tx.update_api_key(key_id, expires_at=expiry)
            key.expires_at = expiry
            issued = make(tx)
            tx.insert_audit(now, actor, "key.rotate", "key", key_id, before, {
                "old": asdict(key), "new": asdict(issued.key)
            })
            return issued, key

        return await self.store.write(script)
