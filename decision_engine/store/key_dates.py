"""The key-date sweep: business events raised from profile dates (a contract that ends
within 60 days), once a day, by one process at a time.

The sweep scans every profile, and for each key-date event type of the ruleset (`date:`
and `days_before:` under `notices: events`) raises an event for every customer whose
date is 0..days_before days ahead. The event id names the customer and the date, so a
second sweep (another replica, or a retried one) raises a duplicate, which counts once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, date, datetime

from decision_engine.decide.notices import BusinessEvent
from decision_engine.ruleset.compiled import CompiledRuleset
from decision_engine.ruleset.spec import EventType
from decision_engine.store.connection import Connection
from decision_engine.store.keys import PREFIX, SWEEP_LOCK, profile_key, sweep_done_key
from decision_engine.store.notices import ACCEPTED, publish

SCAN_COUNT = 1000
PUBLISH_BATCH = 500
LOCK_TTL_S = 3600
DONE_TTL_S = 3 * 86_400
_PROFILE_MATCH = f"{PREFIX}:{{*}}:profile"


@dataclass
class SweepReport:
    """What one sweep did."""

    day: str
    profiles: int = 0
    raised: int = 0
    duplicates: int = 0


def key_date_events(ruleset: CompiledRuleset) -> list[EventType]:
    """The ruleset's event types raised from a profile date."""
    rules = ruleset.source.notices
    if rules is None:
        return []
    return [e for e in rules.events.values() if e.date_field is not None]


async def claim_sweep(durable: Connection, owner: str, *, now: float) -> str | None:
    """Today's sweep for `owner` (the day), unless it is done or another process has it."""
    day = _day(now)
    if await durable.call("EXISTS", sweep_done_key(day)):
        return None
    if not await durable.call("SET", SWEEP_LOCK, owner, "NX", "EX", LOCK_TTL_S):
        return None
    return day


async def finish_sweep(durable: Connection, owner: str, day: str) -> None:
    """Mark the day swept and let go of the lock (if it is still ours)."""
    await durable.call("SET", sweep_done_key(day), owner, "EX", DONE_TTL_S)
    if await durable.call("GET", SWEEP_LOCK) == owner:
        await durable.call("DEL", SWEEP_LOCK)


async def sweep(
    decision: Connection,
    durable: Connection,
    ruleset: CompiledRuleset,
    *,
    now: float,
) -> SweepReport:
    """Raise today's key-date events onto the events stream; the notice processes do the rest."""
    report = SweepReport(_day(now))
    types = key_date_events(ruleset)
    if not types:
        return report
    today = datetime.fromtimestamp(now, UTC).date()
    fields = sorted({t.date_field for t in types if t.date_field is not None})
    pending: list[BusinessEvent] = []
    cursor = 0
    while True:
        reply = await decision.call("SCAN", cursor, "MATCH", _PROFILE_MATCH, "COUNT", SCAN_COUNT)
        cursor = int(reply[0])
        customers = [c for key in reply[1] if (c := _customer_of(str(key)))]
        values = await asyncio.gather(
            *(decision.call("HMGET", profile_key(c), *fields) for c in customers)
        )
        report.profiles += len(customers)
        for customer, row in zip(customers, values, strict=True):
            dates = dict(zip(fields, row, strict=True))
            for event_type in types:
                assert event_type.date_field is not None
                due = _date(dates.get(event_type.date_field))
                if due is not None and 0 <= (due - today).days <= event_type.days_before:
                    pending.append(_event(event_type, customer, due, now))
        while len(pending) >= PUBLISH_BATCH or (cursor == 0 and pending):
            batch, pending = pending[:PUBLISH_BATCH], pending[PUBLISH_BATCH:]
            await _publish(durable, batch, report, now=now)
        if cursor == 0:
            return report


async def _publish(
    durable: Connection, events: list[BusinessEvent], report: SweepReport, *, now: float
) -> None:
    statuses = await publish(durable, events, now=now)
    accepted = sum(1 for s in statuses if s == ACCEPTED)
    report.raised += accepted
    report.duplicates += len(statuses) - accepted


def _event(event_type: EventType, customer: str, due: date, now: float) -> BusinessEvent:
    return BusinessEvent(
        event_id=f"sweep:{event_type.name}:{customer}:{due.isoformat()}",
        type=event_type.name,
        occurred_at=now,
        attributes={},
        customer_id=customer,
    )


def _customer_of(key: str) -> str:
    """`nba:{C-1001}:profile` → `C-1001`."""
    start, end = key.find("{"), key.rfind("}:profile")
    return key[start + 1 : end] if 0 <= start < end else ""


def _date(raw: object) -> date | None:
    if raw is None:
        return None
    try:
        return date.fromisoformat(str(raw)[:10])
    except ValueError:
        return None


def _day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).date().isoformat()


async def run_sweep(
    decision: Connection,
    durable: Connection,
    ruleset: CompiledRuleset,
    *,
    owner: str,
    now: float,
) -> SweepReport | None:
    """Today's sweep, if no process has done it or is doing it; None when not ours to do.
    A sweep that fails lets go of the lock, for the next try."""
    day = await claim_sweep(durable, owner, now=now)
    if day is None:
        return None
    try:
        report = await sweep(decision, durable, ruleset, now=now)
    except BaseException:
        if await durable.call("GET", SWEEP_LOCK) == owner:
            await durable.call("DEL", SWEEP_LOCK)
        raise
    await finish_sweep(durable, owner, day)
    return report
