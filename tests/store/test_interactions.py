"""Interaction events and guidance in a real Redis: idempotency, seqs, holding before
`started`, the shards' work streams and their consumer group."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import redis

from decision_engine.errors import InteractionStateError
from decision_engine.moments.model import InteractionEvent
from decision_engine.store.connection import PipelinedConnection
from decision_engine.store.interactions import (
    MOMENT_SHARDS,
    GuidanceRecord,
    end_guidance,
    guidance_cursor,
    interaction_done,
    live_interactions,
    publish_events,
    read_all_events,
    read_guidance,
    shard_of,
    write_guidance,
)
from decision_engine.store.keys import interaction_events_key, moment_work_key
from decision_engine.store.work_queue import (
    acknowledge,
    claim_pending,
    ensure_groups,
    pending_count,
    read_work,
    trim_acknowledged,
)

T = TypeVar("T")
NOW = time.time()


def run(redis_url: str, scenario: Callable[[PipelinedConnection], Awaitable[T]]) -> T:
    async def main() -> T:
        connection = PipelinedConnection(redis_url)
        try:
            return await scenario(connection)
        finally:
            await connection.aclose()

    return asyncio.run(main())


def event(
    interaction: str, event_id: str, kind: str = "utterance", *, seq: int = 0, at: float = NOW,
    **data: object,
) -> InteractionEvent:  # fmt: skip
    if kind == "started":
        data = {"customer_id": "C-1001", "channel": "voice", "intent": "", "queue": "",
                "agent_id": "", **data}  # fmt: skip
    if kind == "utterance":
        data = {"speaker": "customer", "text": "hello", "keywords": (), "phrases": (), **data}
    return InteractionEvent(event_id, interaction, at, seq, kind, data)  # type: ignore[arg-type]


def record(interaction: str, guidance_id: str, **kw: object) -> GuidanceRecord:
    fields: dict[str, object] = {
        "moment_id": "m", "kind": "coaching", "title": "t", "text": "x", "severity": "info",
        "event_ids": ("e1",), "at": NOW, **kw,
    }  # fmt: skip
    return GuidanceRecord(guidance_id=guidance_id, interaction_id=interaction, **fields)  # type: ignore[arg-type]


def test_events_are_stored_once_in_seq_order_and_queued_for_their_shard(redis_url: str) -> None:
    async def scenario(c: PipelinedConnection) -> None:
        first = await publish_events(
            c, [event("I-1", "e1", "started"), event("I-1", "e2", text="I want to cancel")],
            now=NOW,
        )  # fmt: skip
        assert [(p.status, p.seq) for p in first] == [("accepted", 1), ("accepted", 2)]
        # A retry counts once, with the seq it got the first time; the next is assigned on.
        again = await publish_events(c, [event("I-1", "e2"), event("I-1", "e3")], now=NOW)
        assert [(p.status, p.seq) for p in again] == [("duplicate", 2), ("accepted", 3)]
        stored = await read_all_events(c, "I-1")
        assert [(s.event.event_id, s.event.seq, s.event.kind) for s in stored] == [
            ("e1", 1, "started"), ("e2", 2, "utterance"), ("e3", 3, "utterance"),
        ]  # fmt: skip
        assert stored[1].event.data["text"] == "I want to cancel"
        assert stored[1].event.data["keywords"] == ()
        assert stored[0].published_at == pytest.approx(NOW)
        assert await live_interactions(c, shard_of("I-1")) == ["I-1"]
        await ensure_groups(c, [shard_of("I-1")])
        items = await read_work(c, [shard_of("I-1")], "moments-0", pending=False)
        assert [(i.interaction_id, i.seq) for i in items] == [("I-1", 1), ("I-1", 2), ("I-1", 3)]

    run(redis_url, scenario)
    with redis.Redis.from_url(redis_url) as client:
        ttl = client.pttl(interaction_events_key("I-1"))
        assert 86_000_000 < ttl <= 86_400_000


def test_a_publishers_seq_must_increase_and_nothing_comes_after_ended(redis_url: str) -> None:
    async def scenario(c: PipelinedConnection) -> None:
        published = await publish_events(
            c, [event("I-2", "a", "started", seq=10), event("I-2", "b", seq=20)], now=NOW
        )
        assert [p.seq for p in published] == [10, 20]
        with pytest.raises(
            InteractionStateError, match=r"events\[0\]: seq 15 is not after 20"
        ) as e:
            await publish_events(c, [event("I-2", "c", seq=15)], now=NOW)
        assert e.value.reason == "stale_seq"
        # Without a seq: the next one after the publisher's.
        assert (await publish_events(c, [event("I-2", "d")], now=NOW))[0].seq == 21
        with pytest.raises(InteractionStateError, match="started already"):
            await publish_events(c, [event("I-2", "x", "started")], now=NOW)
        await publish_events(c, [event("I-2", "end", "ended", resolved=True)], now=NOW)
        with pytest.raises(InteractionStateError, match="has ended") as e:
            await publish_events(c, [event("I-2", "late")], now=NOW)
        assert e.value.reason == "ended"
        # The refused events were not stored; a retry of a stored one is still a duplicate.
        assert [s.event.event_id for s in await read_all_events(c, "I-2")] == [
            "a", "b", "d", "end",
        ]  # fmt: skip
        assert (await publish_events(c, [event("I-2", "b")], now=NOW))[0].status == "duplicate"

    run(redis_url, scenario)


def test_events_before_started_are_held_within_bounds(redis_url: str) -> None:
    async def scenario(c: PipelinedConnection) -> None:
        shard = shard_of("I-3")
        await ensure_groups(c, [shard])
        held = await publish_events(
            c, [event("I-3", f"h{n}") for n in range(3)], now=NOW, max_held=3
        )
        assert {p.status for p in held} == {"held"}
        assert await read_work(c, [shard], "moments-0", pending=False) == []
        assert await live_interactions(c, shard) == []
        with pytest.raises(InteractionStateError, match="at most 3 events are held") as e:
            await publish_events(c, [event("I-3", "h3")], now=NOW, max_held=3)
        assert e.value.reason == "held_full"
        # `started` is always taken, and releases the interaction to moments.
        started = await publish_events(c, [event("I-3", "s", "started")], now=NOW, max_held=3)
        assert (started[0].status, started[0].seq) == ("accepted", 4)
        assert [i.seq for i in await read_work(c, [shard], "moments-0", pending=False)] == [4]
        assert await live_interactions(c, shard) == ["I-3"]
        # Too long before `started`: refused once the first held event is too old.
        await publish_events(c, [event("I-4", "o1")], now=NOW - 100, max_hold_s=60)
        with pytest.raises(InteractionStateError, match="held for at most 60 s") as e:
            await publish_events(c, [event("I-4", "o2")], now=NOW, max_hold_s=60)
        assert e.value.reason == "held_too_long"

    run(redis_url, scenario)
    with redis.Redis.from_url(redis_url) as client:
        assert client.pttl(interaction_events_key("I-4")) <= 600_000


def test_guidance_is_written_once_with_its_own_seq_and_ends_once(redis_url: str) -> None:
    async def scenario(c: PipelinedConnection) -> None:
        await publish_events(c, [event("I-5", "s", "started")], now=NOW)
        assert await write_guidance(c, record("I-5", "g1"), now=NOW) == (1, True)
        assert await write_guidance(c, record("I-5", "g2", decision='{"arm": "x"}'), now=NOW) == (
            2, True,
        )  # fmt: skip
        assert await write_guidance(c, record("I-5", "g1"), now=NOW) == (1, False)
        entries = await read_guidance(c, "I-5", after=guidance_cursor(0))
        assert [(e.entry_id, e.record and e.record.guidance_id) for e in entries] == [
            ("1-0", "g1"), ("2-0", "g2"),
        ]  # fmt: skip
        assert entries[1].record is not None and entries[1].record.decision == '{"arm": "x"}'
        assert entries[0].record is not None and entries[0].record.event_ids == ("e1",)
        await end_guidance(c, "I-5", now=NOW)
        await end_guidance(c, "I-5", now=NOW)  # once
        after_one = await read_guidance(c, "I-5", after=guidance_cursor(1))
        assert [(e.entry_id, e.record is None) for e in after_one] == [
            ("2-0", False),
            ("2-1", True),
        ]
        assert await interaction_done(c, "I-5")
        assert await live_interactions(c, shard_of("I-5")) == []
        # Nothing after the end; and the interaction takes no more events.
        assert await write_guidance(c, record("I-5", "g3"), now=NOW) == (0, False)
        with pytest.raises(InteractionStateError, match="has ended"):
            await publish_events(c, [event("I-5", "late")], now=NOW)

    run(redis_url, scenario)


def test_unacknowledged_work_stays_pending_for_its_consumer_and_can_be_claimed(
    redis_url: str,
) -> None:
    interaction = "I-6"
    shard = shard_of(interaction)

    async def scenario(c: PipelinedConnection) -> None:
        await ensure_groups(c, [shard])
        await ensure_groups(c, [shard])  # made once
        await publish_events(
            c, [event(interaction, "s", "started"), event(interaction, "u1")], now=NOW
        )
        read = await read_work(c, [shard], "moments-0", pending=False)
        assert len(read) == 2
        # "Crashed" before acknowledging: the entries come back as its pending ones.
        again = await read_work(c, [shard], "moments-0", pending=True)
        assert [i.entry_id for i in again] == [i.entry_id for i in read]
        # Another consumer (the shard's new owner) claims them.
        assert await claim_pending(c, shard, "moments-1") == 2
        assert await read_work(c, [shard], "moments-0", pending=True) == []
        mine = await read_work(c, [shard], "moments-1", pending=True)
        assert len(mine) == 2
        await acknowledge(c, mine)
        assert await pending_count(c, shard) == 0
        await trim_acknowledged(c, shard)
        # New work still arrives after a trim.
        await publish_events(c, [event(interaction, "u2")], now=NOW)
        assert [i.seq for i in await read_work(c, [shard], "moments-1", pending=False)] == [3]

    run(redis_url, scenario)
    with redis.Redis.from_url(redis_url) as client:
        assert client.xlen(moment_work_key(shard)) <= 2


def test_shards_are_stable_and_spread() -> None:
    assert shard_of("I-1") == shard_of("I-1")
    shards = {shard_of(f"call-{n}") for n in range(500)}
    assert shards == set(range(MOMENT_SHARDS))
