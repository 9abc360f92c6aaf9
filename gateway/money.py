"""Money: kept as integer micro-dollars (prices, charges, counters), shown as decimal strings.

A shown amount has two decimals when it is whole cents (nearly always: "0.08", "10.00") and
as many as it needs otherwise ("0.085"), so a price or a limit set finer than a cent is shown
as it is, never rounded.
"""

from __future__ import annotations

from decimal import Decimal

MICROS = Decimal(1_000_000)


def to_micros(usd: Decimal) -> int:
    return int((usd * MICROS).to_integral_value())


def usd_text(micros: int) -> str:
    """Micro-dollars as a decimal string."""
    if micros % 10_000 == 0:  # whole cents: integer arithmetic, no Decimal
        cents = abs(micros) // 10_000
        return f"{'-' if micros < 0 else ''}{cents // 100}.{cents % 100:02d}"
    return format((Decimal(micros) / MICROS).normalize(), "f")


def decimal_text(usd: Decimal) -> str:
    """An amount in dollars as a decimal string (to the micro-dollar)."""
    return usd_text(to_micros(usd))
