"""Admin routes (bearer GATEWAY_ADMIN_TOKEN): tenants, keys, usage, jobs across tenants, and
the audit log. Each change is audited by gateway.admin."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.admin import AdminService
from gateway.api.admin_auth import require_admin
from gateway.api.common import iso, job_view, json_response, read_json, read_optional_json, services
from gateway.errors import FieldError, InvalidRequest
from gateway.normalize import json_object
from gateway.quota import Limits
from gateway.store import ApiKey, AuditEntry, Tenant
from gateway.usage import parse_range, usage_report


def tenant_view(tenant: Tenant) -> dict[str, Any]:
    return {
        "id": tenant.id,
        "name": tenant.name,
        "created_at": iso(tenant.created_at),
        "disabled": tenant.disabled_at is not None,
        "disabled_at": iso(tenant.disabled_at),
        "limits": Limits.from_stored(tenant.limits).to_json(),
    }


def key_view(key: ApiKey, now: float) -> dict[str, Any]:
    if key.revoked_at is not None and key.revoked_at <= now:
        status = "revoked"
    elif key.expires_at is not None and key.expires_at <= now:
        status = "expired"
    else:
        status = "active"
    return {
        "id": key.id,
        "tenant_id": key.tenant_id,
        "name": key.name,
        "prefix": key.prefix,
        "status": status,
        "created_at": iso(key.created_at),
        "last_used_at": iso(key.last_used_at),
        "expires_at": iso(key.expires_at),
        "revoked_at": iso(key.revoked_at),
    }


def audit_view(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id, "at": iso(entry.at), "actor": entry.actor, "action": entry.action,
        "target_type": entry.target_type, "target_id": entry.target_id,
        "before": entry.before, "after": entry.after,
    }


def _admin(request: Request) -> tuple[AdminService, str]:
    actor = require_admin(request)
    return services(request).admin, actor


async def create_tenant(request: Request) -> Response:
    admin, actor = _admin(request)
    body = json_object(await read_json(request))
    tenant = await admin.create_tenant(actor, body.get("name"), body.get("limits"))
    return json_response(tenant_view(tenant), 201, {"Location": f"/admin/tenants/{tenant.id}"})


async def list_tenants(request: Request) -> Response:
    admin, _ = _admin(request)
    return json_response({"data": [tenant_view(t) for t in await admin.store.list_tenants()]})


async def get_tenant(request: Request) -> Response:
    admin, _ = _admin(request)
    return json_response(tenant_view(await admin.get_tenant(request.path_params["tenant"])))


async def update_tenant(request: Request) -> Response:
    admin, actor = _admin(request)
    body = await read_json(request)
    tenant = await admin.update_tenant(actor, request.path_params["tenant"], body)
    return json_response(tenant_view(tenant))


async def create_key(request: Request) -> Response:
    admin, actor = _admin(request)
    issued = await admin.create_key(actor, request.path_params["tenant"], await read_optional_json(request))
    view = key_view(issued.key, admin.clock())
    return json_response({**view, "key": issued.secret}, 201)


async def list_keys(request: Request) -> Response:
    admin, _ = _admin(request)
    tenant = await admin.get_tenant(request.path_params["tenant"])
    now = admin.clock()
    return json_response({"data": [key_view(k, now) for k in await admin.store.list_keys(tenant.id)]})


async def revoke_key(request: Request) -> Response:
    admin, actor = _admin(request)
    key = await admin.revoke_key(actor, request.path_params["key_id"])
    return json_response(key_view(key, admin.clock()))


async def rotate_key(request: Request) -> Response:
    admin, actor = _admin(request)
    issued, old = await admin.rotate_key(
        actor, request.path_params["key_id"], await read_optional_json(request)
    )
    now = admin.clock()
    view = {**key_view(issued.key, now), "key": issued.secret, "previous": key_view(old, now)}
    return json_response(view, 201)


async def tenant_usage(request: Request) -> Response:
    admin, _ = _admin(request)
    tenant = await admin.get_tenant(request.path_params["tenant"])
    now = admin.clock()
    first, last = parse_range(request.query_params.get("from"), request.query_params.get("to"), now)
    return json_response(await usage_report(admin.store, tenant, first, last, now))


async def get_job(request: Request) -> Response:
    _admin(request)
    svc = services(request)
    job = await svc.jobs.get_job(None, request.path_params["job_id"])
    view = job_view(job, await svc.jobs.get_events(job.id))
    return json_response({**view, "tenant_id": job.tenant_id})


async def audit_log(request: Request) -> Response:
    admin, _ = _admin(request)
    params = request.query_params
    errors: list[FieldError] = []
    limit, before = 50, None
    try:
        limit = int(params.get("limit", "50"))
        if not 1 <= limit <= 500:
            raise ValueError
    except ValueError:
        errors.append(FieldError("limit", "must be an integer from 1 to 500"))
    if params.get("cursor"):
        try:
            before = int(params["cursor"])
        except ValueError:
            errors.append(FieldError("cursor", "is not a cursor returned by this endpoint"))
    if errors:
        raise InvalidRequest(errors)
    entries = await admin.store.list_audit(
        limit=limit + 1, before_id=before, target_id=params.get("target_id") or None
    )
    page = entries[:limit]
    return json_response({
        "data": [audit_view(e) for e in page],
        "next_cursor": str(page[-1].id) if len(entries) > limit and page else None,
    })


routes = [
    Route("/admin/tenants", create_tenant, methods=["POST"]),
    Route("/admin/tenants", list_tenants, methods=["GET"]),
    Route("/admin/tenants/{tenant}", get_tenant, methods=["GET"]),
    Route("/admin/tenants/{tenant}", update_tenant, methods=["PATCH"]),
    Route("/admin/tenants/{tenant}/keys", create_key, methods=["POST"]),
    Route("/admin/tenants/{tenant}/keys", list_keys, methods=["GET"]),
    Route("/admin/tenants/{tenant}/usage", tenant_usage, methods=["GET"]),
    Route("/admin/keys/{key_id}", revoke_key, methods=["DELETE"]),
    Route("/admin/keys/{key_id}/rotate", rotate_key, methods=["POST"]),
    Route("/admin/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/admin/audit", audit_log, methods=["GET"]),
]
