"""The profile read's budget tells Redis slow from this worker too busy (real Redis)."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from decision_engine.server.service import ReadWatch
from decision_engine.store.connection import Fate, PipelinedConnection


async def watched_read(
    connection: PipelinedConnection,
    *,
    budget: float,
    grace: float,
    block_s: float = 0.0,
    pause_url: str = "",
) -> tuple[ReadWatch, object]:
    """A PING under a ReadWatch; `block_s` holds the event loop up (synchronously, as a
    busy worker would) after the command is queued and before it is written. With
    `pause_url`, that Redis is paused meanwhile, so no reply can come in the few turns a
    late read is given: otherwise whether it makes it is a race with the machine."""
    watch = ReadWatch(connection, connection.mark(), budget=budget, grace=grace)

    async def read() -> object:
        async with asyncio.timeout(None) as timer:
            watch.start(timer)
            try:
                return await connection.call("PING")
            finally:
                watch.stop()

    task = asyncio.create_task(read())
    await asyncio.sleep(0)  # the task queues its command; it is written next turn
    if pause_url:
        with redis.Redis.from_url(pause_url) as admin:
            admin.execute_command("CLIENT", "PAUSE", "3000", "ALL")
    time.sleep(block_s)
    try:
        return watch, await task
    except TimeoutError as exc:
        return watch, exc


def test_a_read_redis_does_not_answer_ends_at_the_budget_and_is_redis_s(redis_url: str) -> None:
    async def scenario() -> None:
        connection = PipelinedConnection(redis_url)
        try:
            await connection.call("PING")
            with redis.Redis.from_url(redis_url) as admin:
                admin.execute_command("CLIENT", "PAUSE", "3000", "ALL")
            watch, result = await watched_read(connection, budget=0.1, grace=0.5)
            assert isinstance(result, TimeoutError)
            assert watch.fate is Fate.WAITING and not watch.ours
        finally:
            with redis.Redis.from_url(redis_url) as admin:
                admin.execute_command("CLIENT", "UNPAUSE")
            await connection.aclose()

    asyncio.run(scenario())


@pytest.mark.parametrize("block_s", [0.15, 0.6])
def test_a_read_the_worker_was_too_busy_to_send_is_the_worker_s(
    redis_url: str, block_s: float
) -> None:
    """Held up past the budget (0.1 s) before the read went out: within the grace
    (0.5 s) it is answered; past it, it ends, and the delay is counted as ours."""

    async def scenario() -> None:
        connection = PipelinedConnection(redis_url)
        try:
            await connection.call("PING")
            past_grace = block_s >= 0.5
            watch, result = await watched_read(
                connection, budget=0.1, grace=0.5, block_s=block_s,
                pause_url=redis_url if past_grace else "",
            )  # fmt: skip
            if not past_grace:
                assert result == "PONG"
            else:
                assert isinstance(result, TimeoutError)
                assert watch.ours
        finally:
            with redis.Redis.from_url(redis_url) as admin:
                admin.execute_command("CLIENT", "UNPAUSE")
            await connection.aclose()

    asyncio.run(scenario())
