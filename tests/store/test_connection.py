"""The pipelined request-path connection, against a real redis-server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis

from decision_engine.errors import StoreUnavailableError
from decision_engine.store.connection import Fate, PipelinedConnection, ReplyError, encode
from decision_engine.store.embedded import EmbeddedRedis
from decision_engine.store.profiles import ProfileStore

NOW = 1_750_000_000.0


def test_encode_is_the_redis_protocol() -> None:
    assert encode("SET", "k", 1.5) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n1.5\r\n"


def test_many_concurrent_calls_get_their_own_replies(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        client.mset({f"k{i}": f"v{i}" for i in range(500)})

    async def scenario() -> list[object]:
        connection = PipelinedConnection(redis_url)
        try:
            return await asyncio.gather(*(connection.call("GET", f"k{i}") for i in range(500)))
        finally:
            await connection.aclose()

    assert asyncio.run(scenario()) == [f"v{i}" for i in range(500)]


def test_error_replies_are_raised_to_their_caller_only(redis_url: str) -> None:
    async def scenario() -> None:
        connection = PipelinedConnection(redis_url)
        try:
            bad, good = await asyncio.gather(
                connection.call("NOSUCHCOMMAND"), connection.call("PING"), return_exceptions=True
            )
            assert isinstance(bad, ReplyError) and "unknown command" in str(bad)
            assert good == "PONG"
        finally:
            await connection.aclose()

    asyncio.run(scenario())


def test_database_and_password_from_the_url(tmp_path: Path) -> None:
    with EmbeddedRedis(data_dir=tmp_path) as server:
        with redis.Redis.from_url(server.url) as client:
            client.config_set("requirepass", "s3cret")
        url = f"redis://:s3cret@127.0.0.1:{server.port}/3"
        with redis.Redis.from_url(url) as client:
            client.set("where", "db3")

        async def scenario() -> object:
            connection = PipelinedConnection(url)
            try:
                return await connection.call("GET", "where")
            finally:
                await connection.aclose()

        assert asyncio.run(scenario()) == "db3"


def test_reconnects_after_a_restart_and_reloads_the_script(tmp_path: Path) -> None:
    server = EmbeddedRedis(data_dir=tmp_path).start()

    async def load(store: ProfileStore) -> bool:
        return (await store.load("C-1", interaction=None, now=NOW)).profile is not None

    async def scenario() -> None:
        store = ProfileStore.from_url(server.url)
        try:
            await store.client.hset("nba:{C-1}:profile", mapping={"clv": "10"})
            await store.client.save()
            assert await load(store)
            server.stop()
            with pytest.raises(StoreUnavailableError):
                await load(store)
            port = server.port
            again = EmbeddedRedis(data_dir=tmp_path, port=port).start()
            try:
                # New server: the connection was lost and the script cache is empty.
                assert await load(store)
            finally:
                again.stop()
        finally:
            await store.aclose()

    asyncio.run(scenario())


def test_the_fate_of_an_unanswered_command_tells_redis_slow_from_us_too_busy(
    redis_url: str,
) -> None:
    """UNSENT and ANSWERED are this process's doing (the event loop did not get to the
    command or its reply), WAITING is Redis's."""

    async def scenario() -> None:
        connection = PipelinedConnection(redis_url)
        try:
            await connection.call("PING")  # connected
            # Queued, but the event loop has not run since: not written yet.
            mark = connection.mark()
            future = connection.send_nowait("PING")
            assert connection.fate(mark) == (Fate.UNSENT, 0.0)
            await future
            # Written and answered, but the loop is held up (synchronously) and has not
            # read the reply that waits in the socket.
            mark = connection.mark()
            future = connection.send_nowait("PING")
            await asyncio.sleep(0)  # one turn: the command is written
            deadline = time.monotonic() + 10
            while connection.fate(mark)[0] is not Fate.ANSWERED:
                assert time.monotonic() < deadline, "Redis never answered"
                time.sleep(0.01)
            assert not future.done()
            assert await future == "PONG"
            # Written, and Redis does not answer (paused far longer than we wait).
            with redis.Redis.from_url(redis_url) as admin:
                admin.execute_command("CLIENT", "PAUSE", "3000", "ALL")
            mark = connection.mark()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(connection.call("PING"), 0.2)
            fate, held = connection.fate(mark)
            assert fate is Fate.WAITING and held >= 0.2
        finally:
            with redis.Redis.from_url(redis_url) as admin:
                admin.execute_command("CLIENT", "UNPAUSE")
            await connection.aclose()

    asyncio.run(scenario())
