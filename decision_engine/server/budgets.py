"""Today's budget left of every capped offer, as the `cap_budget_left` gauge.

Worker 0 of every replica reads the day's cap counters every few seconds (one
pipeline, one command per capped offer, routed by slot on a Redis Cluster), so the
dashboard shows how much of each budget is left before `cap_exhausted_total` starts
counting. Every replica reads the same counters: the dashboard takes the minimum.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from decision_engine.errors import StoreError
from decision_engine.ruleset.compiled import DailyCap
from decision_engine.server import metrics
from decision_engine.server.rulesets import ActiveRuleset
from decision_engine.server.throttle import Outage
from decision_engine.store.connection import Connection, ReplyError
from decision_engine.store.keys import cap_key
from decision_engine.store.profiles import cap_day

log = logging.getLogger(__name__)

READ_EVERY_S = 5.0
_REDIS_ERRORS = (StoreError, ReplyError, OSError, TimeoutError)


async def read_budgets(
    connection: Connection, caps: Mapping[str, DailyCap], *, day: str
) -> dict[str, int]:
    """Capped offer id → units of the day's budget left (never below 0)."""
    if not caps:
        return {}
    offers = sorted(caps)
    used = await connection.pipeline([("GET", cap_key(o, day)) for o in offers])
    return {o: max(caps[o].total - int(u or 0), 0) for o, u in zip(offers, used, strict=True)}


async def run_budget_gauge(
    connection: Connection, rulesets: list[ActiveRuleset], *, every_s: float = READ_EVERY_S
) -> None:
    """Set the gauge now and every `every_s` until cancelled. An offer whose cap a reload
    took away keeps its last value until the worker restarts: prometheus_client cannot
    remove a labelled child in multiprocess mode."""
    outage = Outage(
        log,
        failing=f"reading the cap budgets failed (%s), %d time(s); retrying every {every_s:g} s",
        back="reading the cap budgets works again after %d failure(s)",
    )
    while True:
        try:
            caps = {o: cap for arm in rulesets for o, cap in arm.current.daily_caps.items()}
            left = await read_budgets(connection, caps, day=cap_day(time.time()))
        except _REDIS_ERRORS as exc:
            outage.failed(str(exc) or type(exc).__name__)
        else:
            outage.recovered()
            for offer_id, units in left.items():
                metrics.CAP_BUDGET_LEFT.labels(offer_id).set(units)
        await asyncio.sleep(every_s)
