"""The store: records, the transaction interface that service code writes through, and the
read interface. ``SQLiteStore`` (gateway.store.sqlite) implements it; PostgreSQL can join.

Writes are transaction scripts: plain functions of a ``Tx`` that the store runs atomically
(each script in its own savepoint of a group commit) and that return when committed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from gateway.store.callbacks import CallbackReads, CallbackWrites

T = TypeVar("T")


@dataclass
class Tenant:
    id: str
    name: str
    created_at: float
    webhook_secret: str
    limits: dict[str, Any] = field(default_factory=dict)
    disabled_at: float | None = None


@dataclass
class ApiKey:
    id: str
    tenant_id: str
    prefix: str
    created_at: float
    name: str | None = None
    expires_at: float | None = None
    revoked_at: float | None = None
    last_used_at: float | None = None


@dataclass
class Job:
    id: str
    tenant_id: str
    model: str
    task: str
    wavespeed_id: str
    status: str
    inputs: dict[str, Any]
    price_micros: int
    created_at: float
    updated_at: float
    callback_url: str | None = None
    metadata: dict[str, Any] | None = None
    cost_micros: int | None = None
    upstream_id: str | None = None
    outputs: list[str] = field(default_factory=list)
    has_nsfw_contents: list[bool] = field(default_factory=list)
    error_code: str | None = None
    error_message: str | None = None
    upstream_timings: dict[str, Any] | None = None
    submit_attempted_at: float | None = None
    submitted_at: float | None = None
    finished_at: float | None = None
    last_heard_at: float | None = None
    next_poll_at: float | None = None
    not_before: float | None = None
    surface: str = "v1"  # which API accepted it: "v1" or "wavespeed" (gateway.compat)


@dataclass(frozen=True)
class JobEvent:
    seq: int
    from_status: str | None
    to_status: str
    source: str
    at: float
    detail: dict[str, Any] | None


@dataclass(frozen=True)
class Idempotency:
    fingerprint: str
    job_id: str
    created_at: float


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: float
    actor: str
    action: str
    target_type: str
    target_id: str
    before: Any
    after: Any


@dataclass(frozen=True)
class UsageRow:
    day: str
    model: str
    images: int
    usd_micros: int


class Tx(CallbackWrites, Protocol):
    """What a transaction script may do; every call runs inside the script's transaction."""

    def get_job(self, job_id: str) -> Job | None: ...
    def insert_job(self, job: Job) -> None: ...
    def update_job(self, job_id: str, **fields: Any) -> None: ...
    def insert_event(
        self, job_id: str, from_status: str | None, to_status: str, source: str, at: float,
        detail: dict[str, Any] | None, seq: int | None = None,
    ) -> int:
        """Append an event; ``seq`` when the caller knows it (1 for a new job), else the next."""
        ...
    def get_idempotency(self, tenant_id: str, key: str) -> Idempotency | None: ...
    def put_idempotency(self, tenant_id: str, key: str, record: Idempotency) -> None: ...
    def insert_receipt(
        self, webhook_id: str, job_id: str, at: float, status: str | None, result: str
    ) -> bool: ...
    def insert_tenant(self, tenant: Tenant) -> None: ...
    def get_tenant(self, ref: str) -> Tenant | None: ...
    def insert_api_key(self, key: ApiKey, secret_hash: str) -> None: ...
    def update_tenant(self, tenant_id: str, **changes: Any) -> None: ...
    def get_api_key(self, key_id: str) -> ApiKey | None: ...
    def update_api_key(self, key_id: str, **changes: Any) -> None: ...
    def insert_audit(
        self, at: float, actor: str, action: str, target_type: str, target_id: str,
        before: Any, after: Any,
    ) -> None: ...
    def get_counter(self, tenant_id: str, period: str) -> tuple[int, int]: ...
    def add_counters(
        self, tenant_id: str, periods: Sequence[str], images: int, usd_micros: int
    ) -> None:
        """Add the same amounts to each of the tenant's counters ``periods``."""
        ...
    def get_rate(self, tenant_id: str) -> float | None: ...
    def set_rate(self, tenant_id: str, tat: float) -> None: ...
    def insert_ledger(
        self, tenant_id: str, job_id: str, model: str, kind: str, images: int, usd_micros: int,
        day: str, at: float,
    ) -> bool: ...


# Called with (True, the script's value) once its batch is committed, or (False, the
# exception) when the script or the commit failed; see SQLiteStore.write.
Settled = Callable[[bool, Any], None]


class Store(CallbackReads, Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def migrate(self) -> list[int]: ...
    async def schema_version(self) -> int: ...
    async def write(
        self, script: Callable[[Tx], T], *, durable: bool = True, settled: Settled | None = None
    ) -> T: ...

    async def get_job(self, job_id: str) -> Job | None: ...
    async def get_events(self, job_id: str) -> list[JobEvent]: ...
    async def job_statuses(self, job_ids: list[str]) -> dict[str, str]: ...
    async def list_jobs(
        self, tenant_id: str, *, status: str | None, model: str | None, limit: int,
        before_id: str | None,
    ) -> list[Job]: ...
    async def jobs_in_status(self, statuses: tuple[str, ...]) -> list[Job]: ...
    async def due_polls(self, now: float, limit: int) -> list[Job]: ...
    async def expired_submits(self, attempted_before: float) -> list[Job]: ...
    async def unsent_jobs(self, limit: int) -> list[Job]: ...
    async def active_job_counts(self) -> dict[tuple[str, str], int]: ...
    async def poll_backlog(self, now: float) -> tuple[int, float | None]: ...
    async def get_tenant(self, ref: str) -> Tenant | None: ...
    async def find_key(self, secret_hash: str) -> tuple[Tenant, ApiKey] | None: ...
    async def get_idempotency(self, tenant_id: str, key: str) -> Idempotency | None: ...
    async def list_tenants(self) -> list[Tenant]: ...
    async def list_keys(self, tenant_id: str) -> list[ApiKey]: ...
    async def get_api_key(self, key_id: str) -> ApiKey | None: ...
    async def list_audit(
        self, *, limit: int, before_id: int | None, target_id: str | None
    ) -> list[AuditEntry]: ...
    async def usage_by_model(self, tenant_id: str, first_day: str, last_day: str) -> list[UsageRow]: ...
    async def counters(self, tenant_id: str, periods: tuple[str, ...]) -> dict[str, tuple[int, int]]: ...
    async def rate_tat(self, tenant_id: str) -> float | None: ...
