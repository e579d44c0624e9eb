"""The reconciler on a real Redis: what reached the log but was not applied is applied,
once, however stale its cursor."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import redis

from decision_engine.ruleset.spec import Learning
from decision_engine.store.connection import PipelinedConnection
from decision_engine.store.keys import APPLIED_CURSOR, OFFER_STATS, OUTCOME_STREAM, history_key
from decision_engine.store.outcomes import DecisionRecord, log_outcome, record_outcome
from decision_engine.store.reconcile import Reconciler

T = TypeVar("T")
LEARNING = Learning(enabled=True, prior_strength=20, half_life_days=30, by=None, exploration=0)


def decision(n: int) -> DecisionRecord:
    return DecisionRecord(f"d-{n}", f"C-{n % 3}", ("a", "b"), "", "voice", "v1", "champion", 0)


def with_connection(redis_url: str, scenario: Callable[[PipelinedConnection], Awaitable[T]]) -> T:
    async def run() -> T:
        connection = PipelinedConnection(redis_url)
        try:
            return await scenario(connection)
        finally:
            await connection.aclose()

    return asyncio.run(run())


async def outcomes(connection: PipelinedConnection, *, applied: int, logged_only: int) -> None:
    """`applied` outcomes recorded in full, then `logged_only` that never got applied."""
    now = time.time()
    for n in range(applied + logged_only):
        if n < applied:
            await record_outcome(
                connection, connection, decision=decision(n), offer_id="a", outcome="declined",
                channel="", reason="", at=now, learning=LEARNING,
            )  # fmt: skip
        else:
            await log_outcome(
                connection, decision=decision(n), offer_id="a", outcome="declined",
                channel="", reason="", at=now,
            )  # fmt: skip


def reconciler(
    connection: PipelinedConnection, *, settle_s: float = 0.0, decision_ttl_s: float = 86_400
) -> Reconciler:
    return Reconciler(
        connection,
        connection,
        learning=lambda arm: LEARNING,
        settle_s=settle_s,
        decision_ttl_s=decision_ttl_s,
        batch=4,  # several batches per run
    )


def history_events(client: redis.Redis) -> int:
    return sum(
        len(events.split(";"))
        for n in range(3)
        for events in client.hgetall(history_key(f"C-{n}")).values()
    )


def test_logged_outcomes_are_applied_once_however_stale_the_cursor(redis_url: str) -> None:
    async def scenario(connection: PipelinedConnection) -> list[int]:
        await outcomes(connection, applied=5, logged_only=6)
        r = reconciler(connection)
        first = await r.run_once()
        again = await r.run_once()
        # A stale cursor (a restart of Redis lost its last writes), then none at all.
        entries = await connection.call("XRANGE", OUTCOME_STREAM, "-", "+")
        await connection.call("SET", APPLIED_CURSOR, entries[2][0])
        stale = await r.run_once()
        await connection.call("DEL", APPLIED_CURSOR)
        lost = await r.run_once()
        return [first, again, stale, lost]

    # Only the six that were never applied; replays apply nothing.
    assert with_connection(redis_url, scenario) == [6, 0, 0, 0]
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        assert client.hget(OFFER_STATS, "a|declined") == "11"
        assert history_events(client) == 11
        last_id = client.xrevrange(OUTCOME_STREAM, count=1)[0][0]
        assert client.get(APPLIED_CURSOR) == last_id


def test_young_entries_are_left_to_their_own_call(redis_url: str) -> None:
    async def scenario(connection: PipelinedConnection) -> tuple[int, object]:
        await outcomes(connection, applied=0, logged_only=3)
        applied = await reconciler(connection, settle_s=60).run_once()
        return applied, await connection.call("GET", APPLIED_CURSOR)

    assert with_connection(redis_url, scenario) == (0, None)


def test_entries_older_than_the_decision_ttl_are_not_replayed(redis_url: str) -> None:
    """Their markers may have expired: applying them again could count them twice."""
    day_ms = 86_400_000
    now_ms = int(time.time() * 1000)
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        for age_days, customer in ((8, "C-old"), (6, "C-recent")):
            client.xadd(
                OUTCOME_STREAM,
                {"decision": f"d-{customer}", "customer": customer, "offer": "a",
                 "outcome": "presented", "at": (now_ms - age_days * day_ms) / 1000,
                 "arm": "champion", "interaction": ""},
                id=f"{now_ms - age_days * day_ms}-0",
            )  # fmt: skip

    async def scenario(connection: PipelinedConnection) -> int:
        return await reconciler(connection, decision_ttl_s=7 * 86_400).run_once()

    assert with_connection(redis_url, scenario) == 1
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        assert not client.exists(history_key("C-old"))
        assert client.exists(history_key("C-recent"))


def test_one_reconciler_leads_at_a_time(redis_url: str) -> None:
    async def scenario(connection: PipelinedConnection) -> list[bool]:
        first, second = reconciler(connection), reconciler(connection)
        steps = [await first.lead(), await second.lead(), await first.lead()]
        await first.release()
        return [*steps, await second.lead(), await first.lead()]

    assert with_connection(redis_url, scenario) == [True, False, True, True, False]


def test_an_entry_that_is_not_an_outcome_is_skipped(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        client.xadd(OUTCOME_STREAM, {"note": "written by hand"})

    async def scenario(connection: PipelinedConnection) -> int:
        await outcomes(connection, applied=0, logged_only=1)
        return await reconciler(connection).run_once()

    assert with_connection(redis_url, scenario) == 1
    assert "is not an outcome; skipped" in caplog.text


def test_each_outcome_is_applied_with_its_arms_learning(redis_url: str) -> None:
    """As RecordOutcome does: the challenger's outcomes with the challenger's settings."""

    def arm_decision(n: int, arm: str) -> DecisionRecord:
        return DecisionRecord(f"d-{arm}-{n}", f"C-{n}", ("a",), "", "voice", "v1", arm, 0)

    async def scenario(connection: PipelinedConnection) -> list[str]:
        now = time.time()
        for arm in ("champion", "challenger"):
            await log_outcome(
                connection, decision=arm_decision(1, arm), offer_id="a", outcome="accepted",
                channel="", reason="", at=now,
            )  # fmt: skip
        seen: list[str] = []

        def learning(arm: str) -> Learning | None:
            seen.append(arm)
            return LEARNING if arm == "challenger" else None

        r = Reconciler(connection, connection, learning=learning, settle_s=0,
                       decision_ttl_s=86_400)  # fmt: skip
        await r.run_once()
        return seen

    seen = with_connection(redis_url, scenario)
    assert sorted(seen) == ["challenger", "champion"]
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        # Only the challenger learns; both outcomes are counted.
        assert client.hget("nba:learning", "a") is not None
        assert client.hget(OFFER_STATS, "a|accepted") == "2"
