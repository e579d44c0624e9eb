"""The cap budget gauge's reading: what is left of each capped offer's day."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

from decision_engine.ruleset.compiled import DailyCap
from decision_engine.server.budgets import read_budgets
from decision_engine.store.outcomes import reserve_caps
from decision_engine.store.profiles import ProfileStore

DAY = "20261203"


def test_the_budget_left_is_the_total_less_what_was_taken_that_day(redis_url: str) -> None:
    caps = {"device": DailyCap(total=5, per_customer=1), "gift": DailyCap(total=2, per_customer=9)}

    async def scenario() -> tuple[dict[str, int], dict[str, int]]:
        async with aclosing(ProfileStore.from_url(redis_url)) as store:
            for customer in ("C-1", "C-2", "C-3"):
                await reserve_caps(store.connection, customer, sorted(caps.items()), day=DAY)
            # The gift's budget is spent by now; further tries must not show a negative left.
            await reserve_caps(store.connection, "C-4", [("gift", caps["gift"])], day=DAY)
            today = await read_budgets(store.connection, caps, day=DAY)
            tomorrow = await read_budgets(store.connection, caps, day="20261204")
            return today, tomorrow

    today, tomorrow = asyncio.run(scenario())
    assert today == {"device": 2, "gift": 0}
    assert tomorrow == {"device": 5, "gift": 2}


def test_no_capped_offer_reads_nothing(redis_url: str) -> None:
    async def scenario() -> dict[str, int]:
        async with aclosing(ProfileStore.from_url(redis_url)) as store:
            return await read_budgets(store.connection, {}, day=DAY)

    assert asyncio.run(scenario()) == {}
