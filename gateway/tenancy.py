"""Tenants and their API keys: secrets with a visible prefix, stored only as SHA-256 hashes.

Keys are 190-bit random secrets, so a fast hash is the right one (no password stretching is
needed); the lookup is by hash, which also makes the comparison independent of the secret.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.errors import Conflict, Forbidden, NotFound, Unauthorized
from gateway.ids import new_id
from gateway.store import ApiKey, Store, Tenant, Tx
from gateway.webhooks.secrets import new_secret

KEY_PREFIX = "kgw_live_"
_ALPHABET = string.ascii_letters + string.digits
_VISIBLE = len(KEY_PREFIX) + 8


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_key_secret() -> str:
    return KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(32))


@dataclass(frozen=True)
class Principal:
    tenant: Tenant
    key: ApiKey


@dataclass(frozen=True)
class IssuedKey:
    key: ApiKey
    secret: str


def create_tenant(name: str, limits: dict[str, Any], now: float) -> Callable[[Tx], Tenant]:
    """A transaction script that creates a tenant (names are unique)."""

    def script(tx: Tx) -> Tenant:
        if tx.get_tenant(name) is not None:
            raise Conflict(f"a tenant named {name!r} exists", code="tenant_exists")
        tenant = Tenant(
            id=new_id("ten"), name=name, created_at=now,
            webhook_secret=new_secret(), limits=dict(limits),
        )
        tx.insert_tenant(tenant)
        return tenant

    return script


def issue_key(
    tenant_ref: str, name: str | None, expires_at: float | None, now: float
) -> Callable[[Tx], IssuedKey]:
    """A transaction script that issues a key for a tenant given by id or name."""
    secret = generate_key_secret()

    def script(tx: Tx) -> IssuedKey:
        tenant = tx.get_tenant(tenant_ref)
        if tenant is None:
            raise NotFound(f"no tenant {tenant_ref!r}", code="tenant_not_found")
        key = ApiKey(
            id=new_id("key"), tenant_id=tenant.id, prefix=secret[:_VISIBLE],
            created_at=now, name=name, expires_at=expires_at,
        )
        tx.insert_api_key(key, hash_key(secret))
        return IssuedKey(key=key, secret=secret)

    return script


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def authenticate(store: Store, authorization: str | None, now: float) -> Principal:
    """The tenant behind a bearer key, read from the store on every request (so a revocation
    or a disabled tenant takes effect at once)."""
    token = bearer_token(authorization)
    if token is None:
        raise Unauthorized("missing bearer token", code="missing_api_key")
    found = await store.find_key(hash_key(token))
    if found is None:
        raise Unauthorized("unknown API key", code="invalid_api_key")
    tenant, key = found
    if key.revoked_at is not None and key.revoked_at <= now:
        raise Unauthorized("API key revoked", code="api_key_revoked")
    if key.expires_at is not None and key.expires_at <= now:
        raise Unauthorized("API key expired", code="api_key_expired")
    if tenant.disabled_at is not None:
        raise Forbidden("tenant is disabled", code="tenant_disabled")
    return Principal(tenant=tenant, key=key)
