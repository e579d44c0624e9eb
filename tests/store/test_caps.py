"""Daily caps in Redis: the day's budget and each customer's share of it."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import redis

from decision_engine.ruleset.compiled import DailyCap
from decision_engine.store.keys import cap_key, customer_caps_key
from decision_engine.store.outcomes import release_caps, reserve_caps
from decision_engine.store.profiles import ProfileStore, cap_day

NOW = 1_750_000_000.0
DAY = cap_day(NOW)


def test_a_customer_takes_at_most_their_share_of_a_budget(redis_url: str) -> None:
    cap = [("offer", DailyCap(total=3, per_customer=2))]

    async def scenario() -> list[tuple[frozenset[str], frozenset[str], frozenset[str]]]:
        async with aclosing(ProfileStore.from_url(redis_url)) as store:
            replies = []
            for customer in ("C-1", "C-1", "C-1", "C-2", "C-3"):
                r = await reserve_caps(store.connection, customer, cap, day=DAY)
                replies.append((r.granted, r.spent, r.customer_spent))
            return replies

    got, none = frozenset({"offer"}), frozenset()
    assert asyncio.run(scenario()) == [
        (got, none, none),
        (got, none, none),
        (none, none, got),  # C-1 had their two units
        (got, none, none),
        (none, got, none),  # the day's three units are gone
    ]
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        assert client.get(cap_key("offer", DAY)) == "3"
        assert client.hgetall(customer_caps_key("C-1", DAY)) == {"offer": "2"}
        assert 0 < client.ttl(customer_caps_key("C-1", DAY)) <= 2 * 86_400


def test_released_units_are_given_back_to_the_customer_too(redis_url: str) -> None:
    cap = [("offer", DailyCap(total=10, per_customer=1))]

    async def scenario() -> bool:
        async with aclosing(ProfileStore.from_url(redis_url)) as store:
            await reserve_caps(store.connection, "C-1", cap, day=DAY)
            release_caps(store.connection, "C-1", ["offer"], day=DAY)
            again = await reserve_caps(store.connection, "C-1", cap, day=DAY)
            return "offer" in again.granted

    assert asyncio.run(scenario())
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        assert client.get(cap_key("offer", DAY)) == "1"


def test_the_load_says_which_budgets_are_spent_and_for_whom(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        client.set(cap_key("spent", DAY), "5")
        client.set(cap_key("junk", DAY), "x")
        client.hset(customer_caps_key("C-1", DAY), mapping={"had": "1", "twice": "1"})
    caps = {
        "spent": DailyCap(5, 1),
        "junk": DailyCap(5, 1),
        "had": DailyCap(10, 1),
        "twice": DailyCap(10, 2),
        "open": DailyCap(10, 1),
    }

    async def scenario() -> None:
        async with aclosing(ProfileStore.from_url(redis_url)) as store:
            loaded = await store.load_for_decision("C-1", interaction=None, now=NOW, caps=caps)
        assert loaded.exhausted == {"spent", "junk"}
        assert loaded.customer_spent == {"had"}
        assert loaded.skipped == {"cap_counter": 1}

    asyncio.run(scenario())
