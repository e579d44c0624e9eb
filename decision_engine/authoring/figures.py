"""How the simulation reports write figures: money, signed counts, shares, offer lists and
the instant, the same in the terminal tables and the HTML page."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime


def money(value: float) -> str:
    """Whole euros from EUR 100 on, cents below (a mean per customer is often small)."""
    sign = "-" if value < 0 else ""
    amount = abs(value)
    return f"{sign}EUR {amount:,.0f}" if amount >= 100 else f"{sign}EUR {amount:,.2f}"


def signed(n: int) -> str:
    """A change in a count: +12, -3, or 0."""
    return f"{n:+,}" if n else "0"


def pct(share: float) -> str:
    return f"{share:.1%}"


def offer_list(ids: Iterable[str]) -> str:
    return ", ".join(ids) or "(none)"


def iso_instant(now: float) -> str:
    """Epoch seconds as an ISO 8601 UTC time."""
    return datetime.fromtimestamp(now, UTC).isoformat()
