"""Quotas and money: per-tenant limits, a reservation when a job is accepted, settlement when
it ends.

Every check and counter change runs inside the store's single-writer transaction that accepts
or ends the job, so concurrent requests cannot overshoot a limit: each reservation sees every
reservation committed or batched before it. Counters (``quota_counters``), per tenant:

    d:YYYY-MM-DD, m:YYYY-MM   images and USD reserved or charged for jobs accepted that UTC
                              day / month (a release gives them back)
    open                      jobs not yet ended (images = their count) and the USD they hold

A job that has not ended is its own reservation: one image and its price (``jobs.price_micros``),
counted in its creation day's and month's counters and in ``open``. When it ends, the ledger
gets one row, unique per job: ``charge`` (completed) or ``release`` (failed, cancelled, whose
image and price go back to the counters), so nothing is charged or given back twice, whatever
retries happen. The request rate is a GCRA per tenant over job submissions (one timestamp of
state).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from gateway.errors import FieldError, Forbidden, InvalidRequest, QuotaExceeded
from gateway.jobs import Transition
from gateway.money import decimal_text, to_micros
from gateway.store import Job, Tx
from gateway.tenancy import Principal

COUNT_LIMITS = ("requests_per_minute", "max_concurrent_jobs", "images_per_day", "images_per_month")
USD_LIMITS = ("usd_per_day", "usd_per_month")
LIMIT_NAMES = COUNT_LIMITS + USD_LIMITS
OPEN = "open"


@dataclass(frozen=True)
class Limits:
    requests_per_minute: int | None = None
    max_concurrent_jobs: int | None = None
    images_per_day: int | None = None
    images_per_month: int | None = None
    usd_per_day: Decimal | None = None
    usd_per_month: Decimal | None = None

    @classmethod
    def from_stored(cls, raw: dict[str, Any]) -> Limits:
        if not raw:  # most tenants: no limit set (read twice per accepted job)
            return _NO_LIMITS
        values: dict[str, Any] = {}
        for name in COUNT_LIMITS:
            if raw.get(name) is not None:
                values[name] = int(raw[name])
        for name in USD_LIMITS:
            if raw.get(name) is not None:
                values[name] = Decimal(str(raw[name]))
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """Every limit, None where unset; money as a decimal string."""
        out: dict[str, Any] = {}
        for name, value in asdict(self).items():
            out[name] = decimal_text(value) if isinstance(value, Decimal) else value
        return out

    def stored(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_json().items() if v is not None}


_NO_LIMITS = Limits()


def parse_limits(raw: Any, base: Limits | None = None) -> Limits:
    """Validate a ``limits`` object; keys absent keep ``base``'s value, null removes a limit."""
    if raw is None:
        return base or Limits()
    if not isinstance(raw, dict):
        raise InvalidRequest([FieldError("limits", "must be an object")])
    errors: list[FieldError] = []
    values = (base or Limits()).stored()
    for name, value in raw.items():
        field = f"limits.{name}"
        if name not in LIMIT_NAMES:
            errors.append(FieldError(field, f"unknown limit; known: {', '.join(LIMIT_NAMES)}"))
        elif value is None:
            values.pop(name, None)
        elif name in COUNT_LIMITS:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                errors.append(FieldError(field, "must be a whole number >= 0, or null"))
            else:
                values[name] = value
        else:
            amount = _decimal(value)
            if amount is None or amount < 0:
                errors.append(FieldError(field, 'must be an amount in USD >= 0 (e.g. "25.00"), or null'))
            else:
                values[name] = str(amount)
    if errors:
        raise InvalidRequest(errors)
    return Limits.from_stored(values)


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None


def day_key(ts: float) -> str:
    """The UTC day of ``ts``, YYYY-MM-DD."""
    return _day_text(int(ts // 86_400))


@functools.lru_cache(maxsize=64)
def _day_text(day_number: int) -> str:
    # Once per day (every accepted and every finished job asks).
    return datetime.fromtimestamp(day_number * 86_400, UTC).date().isoformat()


@functools.lru_cache(maxsize=64)
def periods(day: str) -> tuple[str, str]:
    """The counter keys of a UTC day (YYYY-MM-DD): its own, and its month's."""
    return f"d:{day}", f"m:{day[:7]}"


def seconds_to_next_day(ts: float) -> float:
    now = datetime.fromtimestamp(ts, UTC)
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (tomorrow - now).total_seconds()


def seconds_to_next_month(ts: float) -> float:
    now = datetime.fromtimestamp(ts, UTC)
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (first + timedelta(days=32)).replace(day=1)
    return (following - now).total_seconds()


def _exceeded(
    limit: str, message: str, retry_after: float, extra: dict[str, str] | None = None
) -> QuotaExceeded:
    headers = {"Retry-After": str(max(1, math.ceil(retry_after))), **(extra or {})}
    return QuotaExceeded(message, code=f"{limit}_exceeded", headers=headers, limit=limit)


@dataclass(frozen=True)
class RateState:
    """The GCRA view of requests_per_minute for the RateLimit-* headers."""

    limit: int
    remaining: int
    reset_seconds: int

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }


def rate_state(rpm: int, tat: float | None, now: float) -> RateState:
    interval = 60.0 / rpm
    backlog = max(0.0, (tat or now) - now)
    remaining = max(0, math.floor((60.0 - backlog) / interval))
    return RateState(rpm, min(rpm, remaining), math.ceil(backlog))


def _take_rate(tx: Tx, tenant_id: str, rpm: int, now: float) -> None:
    if rpm == 0:
        raise _exceeded("requests_per_minute", "requests_per_minute is 0", 60)
    interval = 60.0 / rpm
    tolerance = 60.0 - interval
    tat = max(tx.get_rate(tenant_id) or now, now)
    if tat - now > tolerance:
        wait = tat - now - tolerance
        state = rate_state(rpm, tat, now)
        raise _exceeded(
            "requests_per_minute", f"over {rpm} job submissions per minute", wait, state.headers()
        )
    tx.set_rate(tenant_id, tat + interval)


def reserve(tx: Tx, job: Job, limits: Limits, now: float) -> None:
    """Check every limit for one more job, then reserve its image and price. Raises
    QuotaExceeded naming the first limit hit; nothing is written then. Only the limits that
    are set are read: a tenant without limits pays for the counters' updates alone."""
    tenant, price = job.tenant_id, job.price_micros
    if limits.requests_per_minute is not None:
        _take_rate(tx, tenant, limits.requests_per_minute, now)
    day, month = periods(day_key(now))
    if limits is not _NO_LIMITS:  # most tenants: nothing to check
        _check_counts(tx, tenant, price, limits, now, day, month)
    tx.add_counters(tenant, (OPEN, day, month), 1, price)


def _check_counts(
    tx: Tx, tenant: str, price: int, limits: Limits, now: float, day: str, month: str
) -> None:
    """The limits on jobs running, images and money: QuotaExceeded at the first one hit."""
    if limits.max_concurrent_jobs is not None:
        open_images, _ = tx.get_counter(tenant, OPEN)
        if open_images + 1 > limits.max_concurrent_jobs:
            raise _exceeded(
                "max_concurrent_jobs", f"{limits.max_concurrent_jobs} jobs already running", 1
            )
    windows = (
        (day, "day", limits.images_per_day, limits.usd_per_day, seconds_to_next_day),
        (month, "month", limits.images_per_month, limits.usd_per_month, seconds_to_next_month),
    )
    for period, unit, image_limit, usd_limit, reset in windows:
        if image_limit is None and usd_limit is None:
            continue
        images, micros = tx.get_counter(tenant, period)
        if image_limit is not None and images + 1 > image_limit:
            raise _exceeded(
                f"images_per_{unit}", f"{image_limit} images per {unit} reached", reset(now)
            )
        if usd_limit is not None and micros + price > to_micros(usd_limit):
            raise _exceeded(
                f"usd_per_{unit}", f"USD {decimal_text(usd_limit)} per {unit} would be exceeded", reset(now)
            )


def settle(tx: Tx, moved: Transition) -> None:
    """TransitionHook: at a terminal state, charge (completed) or release (failed, cancelled)
    what the job reserved when it was accepted, once."""
    if moved.to_status not in ("completed", "failed", "cancelled"):
        return
    job = moved.job
    images, micros, day = 1, job.price_micros, day_key(job.created_at)
    kind = "charge" if moved.to_status == "completed" else "release"
    if not tx.insert_ledger(job.tenant_id, job.id, job.model, kind, images, micros, day, moved.at):
        return
    # A charge keeps the day's and month's counts; a release gives them back.
    given_back = (OPEN, *periods(day)) if kind == "release" else (OPEN,)
    tx.add_counters(job.tenant_id, given_back, -images, -micros)


def reserve_for_accept(tx: Tx, job: Job, principal: Principal) -> None:
    """AcceptHook: re-read the tenant inside the accepting transaction (a tenant disabled or a
    limit lowered a moment ago counts at once), then reserve."""
    tenant = tx.get_tenant(job.tenant_id)
    if tenant is None or tenant.disabled_at is not None:
        raise Forbidden("tenant is disabled", code="tenant_disabled")
    reserve(tx, job, Limits.from_stored(tenant.limits), job.created_at)
