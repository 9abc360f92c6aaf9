"""Key lookups are kept per process while nothing that decides a key's validity changes: the
tenancy version, raised by triggers (migration 5), is read once per event-loop iteration, so a
change made by any connection, another process's included, counts from the next request;
recording a key's use does not invalidate anything."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.errors import Forbidden, Unauthorized
from gateway.store import Tenant
from gateway.store.migrations import statements
from gateway.store.sqlite import SQLiteStore
from gateway.tenancy import IssuedKey, authenticate, create_tenant, hash_key, issue_key


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[tuple[SQLiteStore, SQLiteStore]]:
    """Two stores on one file: the serving process and another one (an admin CLI, a worker)."""
    path = str(tmp_path / "store.db")
    serving, other = SQLiteStore(path), SQLiteStore(path)
    await serving.open()
    await serving.migrate()
    await other.open()
    try:
        yield serving, other
    finally:
        await other.close()
        await serving.close()


def version(store: SQLiteStore) -> int:
    return int(store._point("SELECT version FROM tenancy_version")[0][0])


async def acme_key(store: SQLiteStore, now: float) -> tuple[Tenant, IssuedKey]:
    """A tenant "acme" and one key of it."""
    tenant = await store.write(create_tenant("acme", {}, now))
    return tenant, await store.write(issue_key(tenant.id, None, None, now))


async def test_a_change_by_another_process_counts_at_once(
    stores: tuple[SQLiteStore, SQLiteStore],
) -> None:
    serving, other = stores
    now = time.time()
    tenant, issued = await acme_key(serving, now)
    bearer = f"Bearer {issued.secret}"
    assert (await authenticate(serving, bearer, now)).tenant.id == tenant.id
    assert (await authenticate(serving, bearer, now)).key.id == issued.key.id  # kept

    def set_limits(tx: object) -> None:
        tx.update_tenant(tenant.id, limits={"images_per_day": 3})  # type: ignore[attr-defined]

    await other.write(set_limits)
    assert (await authenticate(serving, bearer, now)).tenant.limits == {"images_per_day": 3}

    def disable(tx: object) -> None:
        tx.update_tenant(tenant.id, disabled_at=now)  # type: ignore[attr-defined]

    await other.write(disable)
    with pytest.raises(Forbidden):
        await authenticate(serving, bearer, now)

    def enable_and_revoke(tx: object) -> None:
        tx.update_tenant(tenant.id, disabled_at=None)  # type: ignore[attr-defined]
        tx.update_api_key(issued.key.id, revoked_at=now)  # type: ignore[attr-defined]

    await other.write(enable_and_revoke)
    with pytest.raises(Unauthorized):
        await authenticate(serving, bearer, now + 1)


async def test_recording_a_use_keeps_the_lookup(stores: tuple[SQLiteStore, SQLiteStore]) -> None:
    serving, _ = stores
    now = time.time()
    _, issued = await acme_key(serving, now)
    before = version(serving)

    def touch(tx: object) -> None:
        tx.update_api_key(issued.key.id, last_used_at=now)  # type: ignore[attr-defined]

    await serving.write(touch)
    assert version(serving) == before

    def rename(tx: object) -> None:
        tx.update_api_key(issued.key.id, name="renamed")  # type: ignore[attr-defined]

    await serving.write(rename)
    assert version(serving) == before + 1
    found = await serving.find_key(hash_key(issued.secret))
    assert found is not None and found[1].name == "renamed"
    assert await serving.find_key(hash_key("kgw_live_unknown")) is None


async def test_the_version_is_read_once_per_loop_iteration(
    stores: tuple[SQLiteStore, SQLiteStore],
) -> None:
    serving, other = stores
    now = time.time()
    _, issued = await acme_key(serving, now)
    secret_hash = hash_key(issued.secret)
    await asyncio.sleep(0)
    before = serving.version_reads
    # Requests that arrived together are checked in one iteration: one read for all of them.
    found = await asyncio.gather(*(serving.find_key(secret_hash) for _ in range(5)))
    assert all(f is not None and f[1].id == issued.key.id for f in found)
    assert serving.version_reads == before + 1

    def revoke(tx: object) -> None:
        tx.update_api_key(issued.key.id, revoked_at=now)  # type: ignore[attr-defined]

    await other.write(revoke)
    # A later iteration reads again and sees the other process's change.
    found_again = await serving.find_key(secret_hash)
    assert found_again is not None and found_again[1].revoked_at == now
    assert serving.version_reads == before + 2


def test_statements_keep_a_trigger_body_whole() -> None:
    sql = """
    CREATE TABLE t (a INTEGER);
    CREATE TRIGGER t_ins AFTER INSERT ON t BEGIN UPDATE t SET a = a + 1; SELECT 1; END;
    INSERT INTO t VALUES (1);
    """
    found = list(statements(sql))
    assert len(found) == 3
    assert found[1].startswith("CREATE TRIGGER") and found[1].endswith("END;")
    with pytest.raises(ValueError):
        list(statements("CREATE TRIGGER x AFTER INSERT ON t BEGIN SELECT 1;"))
