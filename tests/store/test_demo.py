from __future__ import annotations

import asyncio
from contextlib import aclosing
from datetime import date
from pathlib import Path

import redis

from decision_engine.decide.values import CustomerState
from decision_engine.ruleset.schema import FieldSpec
from decision_engine.store.demo import demo_profiles, ensure_demo_data
from decision_engine.store.profiles import ProfileStore

TODAY = date(2025, 6, 15)
NOW = 1_750_000_000.0


def test_demo_data_loads_once(redis_url: str, schema: dict[str, FieldSpec]) -> None:
    async def scenario() -> None:
        async with aclosing(ProfileStore.from_url(redis_url)) as store:
            assert await ensure_demo_data(store, schema=schema, today=TODAY, now=NOW, generated=20)
            assert not await ensure_demo_data(
                store, schema=schema, today=TODAY, now=NOW, generated=20
            )
            alice = await store.load("C-1001", interaction=None, now=NOW)
            dan = await store.load("C-1004", interaction=None, now=NOW)
            generated = await store.load("C-000020", interaction=None, now=NOW)
        assert alice.profile is not None
        assert alice.profile["segment"] == "platinum"
        assert alice.profile["contract_end"] == "2026-01-01"  # today + 200 days
        # Dan's next billing call is his third in a week.
        assert [(c.channel, c.intent) for c in dan.contacts] == [
            ("chat", "billing_dispute"),
            ("email", "billing_dispute"),
        ]
        assert all(NOW - 3 * 86400 < c.at < NOW for c in dan.contacts)
        assert generated.profile is not None

    asyncio.run(scenario())
    with redis.Redis.from_url(redis_url) as client:
        # 7 named + 20 generated profiles, Dan's contacts, the marker.
        assert client.dbsize() == 7 + 20 + 1 + 1


def test_named_customers_match_their_segments() -> None:
    by_id = {p["customer_id"]: p for p in demo_profiles(TODAY)}
    assert len(by_id) == 7
    assert by_id["C-1006"]["last_complaint"] == "2025-06-10"
    assert by_id["C-1005"]["contract_end"] == "2025-07-15"
    assert {p["first_name"] for p in by_id.values()} == {
        "Alice", "Bob", "Chloe", "Dan", "Eva", "Farid", "Grace",
    }  # fmt: skip


def test_another_business_gets_its_own_synthetic_customers_and_no_alice(redis_url: str) -> None:
    from decision_engine.ruleset.load import load_schema
    from decision_engine.store.demo import named_customers_fit

    energy = load_schema(Path(__file__).resolve().parents[2] / "examples" / "energy")
    assert not named_customers_fit(energy, TODAY)

    async def scenario() -> tuple[CustomerState, CustomerState, CustomerState]:
        async with aclosing(ProfileStore.from_url(redis_url)) as store:
            assert await ensure_demo_data(store, schema=energy, today=TODAY, now=NOW, generated=20)
            alice = await store.load("C-1001", interaction=None, now=NOW)
            dan = await store.load("C-1004", interaction=None, now=NOW)
            generated = await store.load("C-000020", interaction=None, now=NOW)
        return alice, dan, generated

    alice, dan, generated = asyncio.run(scenario())
    assert alice.profile is None and dan.contacts == ()
    profile = generated.profile
    assert profile is not None and profile["tariff"] in energy["tariff"].values
    assert "segment" not in profile
    with redis.Redis.from_url(redis_url) as client:
        assert client.dbsize() == 20 + 1  # the synthetic customers and the marker


def test_the_demo_schema_fits_the_named_customers(schema: dict[str, FieldSpec]) -> None:
    from decision_engine.store.demo import named_customers_fit

    assert named_customers_fit(schema, TODAY)
