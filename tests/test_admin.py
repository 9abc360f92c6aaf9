"""The admin API and CLI: auth, tenants, keys (revocation, expiry, rotation), usage, and the
audit log of every change."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Gateway, in_process_gateway
from tests.test_quotas import FakeClock

ADMIN = {"Authorization": "Bearer admin-secret"}
PRO = {"model": "flux-kontext-pro", "prompt": "a quiet harbour"}


def _client(gateway: Gateway, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=gateway.url, transport=gateway.client._transport,
        headers={"Authorization": f"Bearer {key}"},
    )


async def _create(gateway: Gateway, name: str, limits: dict[str, Any] | None = None) -> dict[str, Any]:
    response = await gateway.client.post(
        "/admin/tenants", json={"name": name, "limits": limits or {}}, headers=ADMIN
    )
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def _key(gateway: Gateway, tenant: str, **body: Any) -> dict[str, Any]:
    response = await gateway.client.post(f"/admin/tenants/{tenant}/keys", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_admin_api_is_off_without_a_token(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path) as gateway:
        response = await gateway.client.get("/admin/tenants", headers=ADMIN)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "admin_disabled"
        assert "GATEWAY_ADMIN_TOKEN" in response.json()["error"]["message"]


async def test_admin_auth_refuses_missing_wrong_and_tenant_keys(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path, admin_token="admin-secret") as gateway:
        tenant = await gateway.new_tenant()
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Bearer {tenant.key}"}):
            response = await gateway.client.get("/admin/tenants", headers=headers)
            assert response.status_code == 401, headers
            assert response.json()["error"]["code"] == "invalid_admin_token"
        # and the admin token is not a tenant key
        assert (await gateway.client.get("/v1/jobs", headers=ADMIN)).status_code == 401


async def test_tenants_create_list_get_update_with_validation(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path, admin_token="admin-secret") as gateway:
        created = await _create(gateway, "team-a", {"images_per_day": 100, "usd_per_month": 250})
        assert created["limits"]["usd_per_month"] == "250.00"
        assert created["limits"]["requests_per_minute"] is None
        dup = await gateway.client.post("/admin/tenants", json={"name": "team-a"}, headers=ADMIN)
        assert dup.status_code == 409 and dup.json()["error"]["code"] == "tenant_exists"
        for bad_name in ("bad name", "ten_x", "key_x", "", "x" * 65, 7):
            bad = await gateway.client.post(
                "/admin/tenants", json={"name": bad_name}, headers=ADMIN
            )
            assert bad.status_code == 422, bad_name
            assert [d["field"] for d in bad.json()["error"]["details"]] == ["name"], bad_name
        bad_limits = await gateway.client.post(
            "/admin/tenants",
            json={"name": "ok", "limits": {"images_per_day": -1, "usd_per_day": "lots", "x": 1}},
            headers=ADMIN,
        )
        fields = {d["field"] for d in bad_limits.json()["error"]["details"]}
        assert fields == {"limits.images_per_day", "limits.usd_per_day", "limits.x"}
        listed = (await gateway.client.get("/admin/tenants", headers=ADMIN)).json()["data"]
        assert [t["name"] for t in listed] == ["team-a"]
        by_name = await gateway.client.get("/admin/tenants/team-a", headers=ADMIN)
        by_id = await gateway.client.get(f"/admin/tenants/{created['id']}", headers=ADMIN)
        assert by_name.json() == by_id.json()
        assert (await gateway.client.get("/admin/tenants/nobody", headers=ADMIN)).status_code == 404
        renamed = await gateway.client.patch(
            "/admin/tenants/team-a", json={"name": "team-b", "limits": {"usd_per_month": None}},
            headers=ADMIN,
        )
        assert renamed.json()["name"] == "team-b"
        assert renamed.json()["limits"]["usd_per_month"] is None
        assert renamed.json()["limits"]["images_per_day"] == 100


async def test_keys_secret_shown_once_hashed_at_rest_and_revoked_at_once(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path, admin_token="admin-secret") as gateway:
        tenant = await _create(gateway, "team-a")
        issued = await _key(gateway, tenant["id"], name="ci")
        secret = issued["key"]
        assert secret.startswith("kgw_live_") and secret.startswith(issued["prefix"])
        async with _client(gateway, secret) as client:
            assert (await client.post("/v1/jobs", json=PRO)).status_code == 202
            listed = (await gateway.client.get(f"/admin/tenants/{tenant['id']}/keys", headers=ADMIN)).json()
            assert "key" not in listed["data"][0] and listed["data"][0]["status"] == "active"
            # The database holds no secret, only its hash.
            raw = await asyncio.to_thread(Path(gateway.settings.database_path).read_bytes)
            assert secret.encode() not in raw
            for _ in range(50):
                if (await gateway.services.store.get_api_key(issued["id"])).last_used_at:  # type: ignore[union-attr]
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("last_used_at was never recorded")
            revoked = await gateway.client.delete(f"/admin/keys/{issued['id']}", headers=ADMIN)
            assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
            refused = await client.get("/v1/jobs")
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "api_key_revoked"
            assert secret not in refused.text


async def test_key_expiry_and_rotation_overlap(tmp_path: Path) -> None:
    start = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
    clock = FakeClock(start)
    async with in_process_gateway(tmp_path, clock=clock, admin_token="admin-secret") as gateway:
        tenant = await _create(gateway, "team-a")
        expires = (start + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
        short = await _key(gateway, tenant["id"], expires_at=expires)
        past = await gateway.client.post(
            f"/admin/tenants/{tenant['id']}/keys", json={"expires_at": "2020-01-01T00:00:00Z"},
            headers=ADMIN,
        )
        assert past.status_code == 422 and past.json()["error"]["details"][0]["field"] == "expires_at"
        old = await _key(gateway, tenant["id"], name="service")
        rotated = await gateway.client.post(
            f"/admin/keys/{old['id']}/rotate", json={"overlap_seconds": 600}, headers=ADMIN
        )
        assert rotated.status_code == 201
        new = rotated.json()
        assert new["name"] == "service" and new["previous"]["id"] == old["id"]
        async with _client(gateway, short["key"]) as c_short, _client(gateway, old["key"]) as c_old, \
                _client(gateway, new["key"]) as c_new:
            for client in (c_short, c_old, c_new):
                assert (await client.get("/v1/jobs")).status_code == 200
            clock.jump_to(start + timedelta(minutes=11))  # past the overlap
            assert (await c_old.get("/v1/jobs")).json()["error"]["code"] == "api_key_expired"
            assert (await c_new.get("/v1/jobs")).status_code == 200
            assert (await c_short.get("/v1/jobs")).status_code == 200
            clock.jump_to(start + timedelta(hours=1, seconds=1))
            assert (await c_short.get("/v1/jobs")).json()["error"]["code"] == "api_key_expired"


async def test_usage_jobs_across_tenants_and_the_audit_log(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path, admin_token="admin-secret") as gateway:
        tenant = await gateway.new_tenant(limits={"images_per_day": 10})
        job = (await tenant.client.post("/v1/jobs", json=PRO)).json()
        usage = await gateway.client.get(f"/admin/tenants/{tenant.id}/usage", headers=ADMIN)
        assert usage.status_code == 200
        assert usage.json()["reserved_usd"] == "0.04" and usage.json()["remaining"]["images_per_day"] == 9
        seen = await gateway.client.get(f"/admin/jobs/{job['id']}", headers=ADMIN)
        assert seen.json()["tenant_id"] == tenant.id and seen.json()["events"][0]["to"] == "queued"
        bad_range = await gateway.client.get(
            f"/admin/tenants/{tenant.id}/usage", params={"from": "2027-02-30"}, headers=ADMIN
        )
        assert bad_range.status_code == 422

        actor = {**ADMIN, "X-Actor": "alice"}
        created = await gateway.client.post("/admin/tenants", json={"name": "audited"}, headers=actor)
        tid = created.json()["id"]
        await gateway.client.patch(
            f"/admin/tenants/{tid}", json={"limits": {"images_per_day": 5}}, headers=actor
        )
        key = (await gateway.client.post(f"/admin/tenants/{tid}/keys", json={}, headers=actor)).json()
        await gateway.client.delete(f"/admin/keys/{key['id']}", headers=actor)
        await gateway.client.patch(f"/admin/tenants/{tid}", json={"disabled": True}, headers=actor)
        log = (await gateway.client.get("/admin/audit", headers=ADMIN)).json()["data"]
        assert [e["action"] for e in log][:5] == [
            "tenant.disable", "key.revoke", "key.create", "tenant.update", "tenant.create"
        ]
        assert {e["actor"] for e in log[:5]} == {"admin:alice"}
        update = log[3]
        assert update["before"]["limits"] == {} and update["after"]["limits"] == {"images_per_day": 5}
        assert log[1]["before"]["revoked_at"] is None and log[1]["after"]["revoked_at"] is not None
        assert key["key"] not in str(log)
        assert all("webhook_secret" not in str(e["after"]) for e in log)
        page = await gateway.client.get("/admin/audit", params={"limit": 2}, headers=ADMIN)
        rest = await gateway.client.get(
            "/admin/audit", params={"limit": 10, "cursor": page.json()["next_cursor"]}, headers=ADMIN
        )
        ids = [e["id"] for e in page.json()["data"] + rest.json()["data"]]
        assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids) == 5


def test_cli_prints_id_and_secret_last_and_audits(tmp_path: Path) -> None:
    env = {**os.environ, "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}

    def gateway(*args: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, "-m", "gateway", *args], env=env, capture_output=True, text=True,
            timeout=60, check=True,
        )
        return done.stdout.strip().splitlines()

    tenant_id = gateway("tenants", "create", "cli-team", "--limits", '{"images_per_day": 3}')[-1]
    assert tenant_id.startswith("ten_")
    secret = gateway("keys", "create", "cli-team", "--name", "deploy")[-1]
    assert secret.startswith("kgw_live_")
    assert tenant_id in "\n".join(gateway("keys", "list", tenant_id))
    assert secret not in "\n".join(gateway("keys", "list", "cli-team"))
    audit = "\n".join(gateway("audit"))
    assert '"tenant.create"' in audit and '"key.create"' in audit and '"cli:' in audit
    failed = subprocess.run(
        [sys.executable, "-m", "gateway", "tenants", "create", "cli-team"], env=env,
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert failed.returncode == 1 and "exists" in failed.stderr
