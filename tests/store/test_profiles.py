from __future__ import annotations

import asyncio
import socket
from contextlib import aclosing

import pytest
import redis

from decision_engine.decide.values import Contact, OfferEvent
from decision_engine.errors import StoreUnavailableError
from decision_engine.store.keys import contacts_key, history_key, profile_key
from decision_engine.store.profiles import (
    MAX_CONTACTS_PER_DAY,
    UNKNOWN_CUSTOMER_RETENTION_S,
    ProfileStore,
)

NOW = 1_750_000_000.0
DAY = 86400.0


def call(cid: str, at: float, channel: str = "voice", intent: str = "cancel") -> Contact:
    return Contact(interaction_id=cid, channel=channel, intent=intent, at=at)


def test_keys_of_one_customer_share_a_hash_tag() -> None:
    assert profile_key("C-1") == "nba:{C-1}:profile"
    assert contacts_key("C-1") == "nba:{C-1}:contacts"


def test_load_known_customer_returns_the_profile(redis_url: str) -> None:
    async def scenario() -> None:
        async with aclosing(ProfileStore.from_url(redis_url)) as store:
            await store.put_profiles([("C-1", {"clv": "48000", "segment": "platinum"})])
            state = await store.load("C-1", interaction=None, now=NOW)
        assert state.profile == {"clv": "48000", "segment": "platinum"}
        assert state.contacts == ()

    asyncio.run(scenario())


def test_load_unknown_customer_has_no_profile_but_records_the_contact(redis_url: str) -> None:
    async def scenario() -> None:
        async with aclosing(ProfileStore.from_url(redis_url)) as store:
            state = await store.load("nobody", interaction=call("i-1", NOW), now=NOW)
        assert state.profile is None
        assert state.contacts == (call("i-1", NOW),)

    asyncio.run(scenario())
    with redis.Redis.from_url(redis_url) as client:
        # Kept briefly: made-up ids must not cost a key each for the contact retention.
        assert 0 < client.ttl(contacts_key("nobody")) <= UNKNOWN_CUSTOMER_RETENTION_S
        assert not client.exists(profile_key("nobody"))


def test_contacts_of_a_known_customer_expire_past_retention(redis_url: str) -> None:
    async def scenario() -> None:
        async with aclosing(ProfileStore.from_url(redis_url)) as store:
            await store.put_profiles([("C-1", {"clv": "1"})])
            await store.load("C-1", interaction=call("i-1", NOW), now=NOW)

    asyncio.run(scenario())
    with redis.Redis.from_url(redis_url) as client:
        # The contact list expires once its newest entry is past retention.
        assert 29 * DAY < client.ttl(contacts_key("C-1")) <= 30 * DAY


def test_new_contacts_per_customer_and_day_are_bounded(redis_url: str) -> None:
    async def scenario() -> None:
        async with aclosing(ProfileStore.from_url(redis_url)) as store:
            await store.put_profiles([("C-1", {"clv": "1"})])
            loads = [
                await store.load_for_decision(
                    "C-1", interaction=call(f"i-{n}", NOW + n), now=NOW + n
                )
                for n in range(MAX_CONTACTS_PER_DAY + 3)
            ]
            assert [x.contact_refused for x in loads] == [False] * MAX_CONTACTS_PER_DAY + [True] * 3
            assert len(loads[-1].state.contacts) == MAX_CONTACTS_PER_DAY
            # A retry of a recorded interaction is not a new contact; a day later there is room.
            retry = await store.load_for_decision("C-1", interaction=call("i-0", NOW), now=NOW)
            later = NOW + DAY + MAX_CONTACTS_PER_DAY
            next_day = await store.load_for_decision(
                "C-1", interaction=call("i-next", later), now=later
            )
        assert not retry.contact_refused
        assert not next_day.contact_refused
        assert "i-next" in {c.interaction_id for c in next_day.state.contacts}

    asyncio.run(scenario())


def test_stored_entries_that_do_not_parse_are_skipped_and_counted(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        client.hset(
            contacts_key("C-1"),
            mapping={"hex": "0x7fffffff|voice|x", "inf": "1e999|voice|x", "ok": f"{NOW}|chat|x"},
        )
        client.hset(
            history_key("C-1"),
            "offer-a",
            f"{NOW}|declined|i-1;{NOW}|declined|i;x|declined;abc|presented|;{NOW}|",
        )

    async def scenario() -> None:
        async with aclosing(ProfileStore.from_url(redis_url)) as store:
            loaded = await store.load_for_decision("C-1", interaction=None, now=NOW)
        assert [c.interaction_id for c in loaded.state.contacts] == ["ok"]
        assert loaded.state.history["offer-a"] == (
            OfferEvent(NOW, "declined", "i-1"),
            OfferEvent(NOW, "declined", "i"),
        )
        assert loaded.skipped == {"contact": 2, "offer_event": 3}

    asyncio.run(scenario())


def test_load_without_interaction_writes_nothing(redis_url: str) -> None:
    async def scenario() -> None:
        async with aclosing(ProfileStore.from_url(redis_url)) as store:
            await store.load("C-1", interaction=None, now=NOW)

    asyncio.run(scenario())
    with redis.Redis.from_url(redis_url) as client:
        assert client.dbsize() == 0


def test_retried_interaction_counts_once_and_keeps_the_first_entry(redis_url: str) -> None:
    async def scenario() -> None:
        async with aclosing(ProfileStore.from_url(redis_url)) as store:
            await store.load("C-1", interaction=call("i-1", NOW - 60, "chat", "billing"), now=NOW)
            first = await store.load("C-1", interaction=call("i-2", NOW - 30), now=NOW)
            retry = await store.load("C-1", interaction=call("i-2", NOW, "app", "other"), now=NOW)
        assert retry.contacts == first.contacts
        assert retry.contacts == (
            call("i-1", NOW - 60, "chat", "billing"),
            call("i-2", NOW - 30),
        )

    asyncio.run(scenario())


def test_contacts_older_than_retention_are_dropped(redis_url: str) -> None:
    async def scenario() -> None:
        async with aclosing(ProfileStore.from_url(redis_url)) as store:
            await store.load("C-1", interaction=call("old", NOW - 31 * DAY), now=NOW - 31 * DAY)
            await store.load("C-1", interaction=call("recent", NOW - 2 * DAY), now=NOW - 2 * DAY)
            state = await store.load("C-1", interaction=None, now=NOW)
            short = await store.load("C-1", interaction=None, now=NOW, retention_s=DAY)
        assert [c.interaction_id for c in state.contacts] == ["recent"]
        assert short.contacts == ()

    asyncio.run(scenario())
    with redis.Redis.from_url(redis_url) as client:
        # Trimmed in Redis too, not just filtered: the emptied hash is gone.
        assert not client.exists(contacts_key("C-1"))


def test_load_is_one_round_trip(redis_url: str) -> None:
    async def scenario() -> None:
        async with aclosing(ProfileStore.from_url(redis_url)) as store:
            # Warm up: the connection is open and the script cached before counting.
            await store.put_profiles([("C-1", {"clv": "1"})])
            await store.load("C-1", interaction=None, now=NOW)
            with redis.Redis.from_url(redis_url) as admin:
                admin.config_resetstat()
                await store.load("C-1", interaction=call("i-1", NOW), now=NOW)
                stats = admin.info("commandstats")
        calls = {name.removeprefix("cmdstat_"): s["calls"] for name, s in stats.items()}
        # Commands run inside the script are counted too (HGETALL ×4: profile, contacts,
        # offer history, notice log; HSET, PEXPIRE);
        # CONFIG is the reset itself. Any other entry would be a second round trip.
        assert calls == {"config": 1, "evalsha": 1, "hgetall": 4, "hset": 1, "pexpire": 1}

    asyncio.run(scenario())


def test_load_reloads_the_script_after_a_flush(redis_url: str) -> None:
    async def scenario() -> None:
        async with aclosing(ProfileStore.from_url(redis_url)) as store:
            await store.put_profiles([("C-1", {"clv": "1"})])
            await store.load("C-1", interaction=None, now=NOW)
            with redis.Redis.from_url(redis_url) as admin:
                admin.script_flush()
            state = await store.load("C-1", interaction=None, now=NOW)
        assert state.profile == {"clv": "1"}

    asyncio.run(scenario())


def test_put_profiles_replaces_the_whole_hash(redis_url: str) -> None:
    async def scenario() -> None:
        async with aclosing(ProfileStore.from_url(redis_url)) as store:
            rows = [(f"C-{n}", {"clv": str(n), "plan": "basic"}) for n in range(5)]
            assert await store.put_profiles(rows, batch_size=2) == 5
            await store.put_profiles([("C-3", {"clv": "99"})])
            replaced = await store.load("C-3", interaction=None, now=NOW)
            kept = await store.load("C-4", interaction=None, now=NOW)
        assert replaced.profile == {"clv": "99"}
        assert kept.profile == {"clv": "4", "plan": "basic"}

    asyncio.run(scenario())


def test_redis_down_raises_store_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there

    async def scenario() -> None:
        store = ProfileStore.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=0.5)
        async with aclosing(store):
            with pytest.raises(StoreUnavailableError) as caught:
                await store.load("C-1", interaction=None, now=NOW)
            assert isinstance(caught.value.__cause__, redis.RedisError | OSError)
            with pytest.raises(StoreUnavailableError):
                await store.put_profiles([("C-1", {"clv": "1"})])

    asyncio.run(scenario())
