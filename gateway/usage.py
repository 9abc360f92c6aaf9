"""Usage reports: what a tenant spent (the ledger's charges) by day and model, what it holds
reserved, and what remains of each limit now."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from gateway.errors import FieldError, InvalidRequest
from gateway.money import to_micros, usd_text
from gateway.quota import OPEN, Limits, day_key, periods, rate_state
from gateway.store import Store, Tenant

MAX_RANGE_DAYS = 366


def parse_range(first: str | None, last: str | None, now: float) -> tuple[str, str]:
    """``from``/``to`` as UTC dates (YYYY-MM-DD): a missing bound equals the other one, and
    both missing mean today."""
    errors: list[FieldError] = []
    today = datetime.fromtimestamp(now, UTC).date()
    start, end = _date(first, "from", errors), _date(last, "to", errors)
    start = start or end or today
    end = end or start
    if not errors and end < start:
        errors.append(FieldError("to", "must not be before from"))
    if not errors and (end - start) > timedelta(days=MAX_RANGE_DAYS):
        errors.append(FieldError("to", f"the range is at most {MAX_RANGE_DAYS} days"))
    if errors:
        raise InvalidRequest(errors)
    return start.isoformat(), end.isoformat()


def _date(text: str | None, field: str, errors: list[FieldError]) -> date | None:
    if text is None or text == "":
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        errors.append(FieldError(field, "must be a UTC date, YYYY-MM-DD"))
        return None


async def usage_report(store: Store, tenant: Tenant, first: str, last: str, now: float) -> dict[str, Any]:
    rows = await store.usage_by_model(tenant.id, first, last)
    day, month = periods(day_key(now))
    counters = await store.counters(tenant.id, (OPEN, day, month))
    limits = Limits.from_stored(tenant.limits)
    by_model: dict[str, list[int]] = {}
    for row in rows:
        totals = by_model.setdefault(row.model, [0, 0])
        totals[0] += row.images
        totals[1] += row.usd_micros
    open_jobs, reserved = counters[OPEN]
    return {
        "tenant_id": tenant.id,
        "from": first,
        "to": last,
        "images": sum(r.images for r in rows),
        "cost_usd": usd_text(sum(r.usd_micros for r in rows)),
        "reserved_usd": usd_text(reserved),
        "open_jobs": open_jobs,
        "by_model": [
            {"model": model, "images": images, "cost_usd": usd_text(micros)}
            for model, (images, micros) in sorted(by_model.items())
        ],
        "by_day": [
            {"day": r.day, "model": r.model, "images": r.images, "cost_usd": usd_text(r.usd_micros)}
            for r in rows
        ],
        "limits": limits.to_json(),
        "remaining": await _remaining(store, tenant, limits, counters, now),
    }


async def _remaining(
    store: Store, tenant: Tenant, limits: Limits, counters: dict[str, tuple[int, int]], now: float
) -> dict[str, Any]:
    day_period, month_period = periods(day_key(now))
    day, month = counters[day_period], counters[month_period]
    out: dict[str, Any] = {}
    if limits.requests_per_minute is not None:
        tat = await store.rate_tat(tenant.id)
        out["requests_per_minute"] = rate_state(limits.requests_per_minute, tat, now).remaining
    if limits.max_concurrent_jobs is not None:
        out["max_concurrent_jobs"] = max(0, limits.max_concurrent_jobs - counters[OPEN][0])
    if limits.images_per_day is not None:
        out["images_per_day"] = max(0, limits.images_per_day - day[0])
    if limits.images_per_month is not None:
        out["images_per_month"] = max(0, limits.images_per_month - month[0])
    if limits.usd_per_day is not None:
        out["usd_per_day"] = _money_left(limits.usd_per_day, day[1])
    if limits.usd_per_month is not None:
        out["usd_per_month"] = _money_left(limits.usd_per_month, month[1])
    return out


def _money_left(limit: Decimal, used_micros: int) -> str:
    return usd_text(max(0, to_micros(limit) - used_micros))


def rate_headers(limits: Limits, tat: float | None, now: float) -> dict[str, str]:
    if limits.requests_per_minute is None or limits.requests_per_minute == 0:
        return {}
    return rate_state(limits.requests_per_minute, tat, now).headers()


