"""The pipelined request-path connection, against a real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path

import pytest
import redis

from decision_engine.errors import StoreUnavailableError
from decision_engine.store.connection import Fate, PipelinedConnection, ReplyError, encode
from decision_engine.store.embedded import EmbeddedRedis
from decision_engine.store.profiles import ProfileStore
from tests.conftest import SlowRestart, fill_for_a_slow_load

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


def test_a_redis_busy_with_a_script_is_unavailable_not_an_error(tmp_path: Path) -> None:
    """-BUSY says "not now", like a lost connection; only other error replies are ReplyError."""
    with EmbeddedRedis(data_dir=tmp_path) as server:
        with redis.Redis.from_url(server.url) as client:
            client.config_set("lua-time-limit", 10)
        busy = threading.Thread(
            target=_run_until_killed, args=(server.url, "while true do end"), daemon=True
        )
        busy.start()

        async def scenario() -> BaseException | None:
            connection = PipelinedConnection(server.url)
            try:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    try:
                        await connection.call("GET", "k")
                    except StoreUnavailableError as exc:
                        return exc
                    await asyncio.sleep(0.02)
                return None
            finally:
                await connection.aclose()

        try:
            error = asyncio.run(scenario())
        finally:
            with redis.Redis.from_url(server.url) as client:
                client.script_kill()
            busy.join(10)
        assert error is not None and str(error).startswith("BUSY"), error


def _run_until_killed(url: str, script: str) -> None:
    with redis.Redis.from_url(url) as client, contextlib.suppress(redis.ResponseError):
        client.eval(script, 0)


@pytest.mark.slow
def test_a_loading_redis_is_unavailable_not_an_error(tmp_path: Path) -> None:
    """Regression: -LOADING (a restarted Redis replaying its data) came out of `call` as a
    ReplyError, which the learning refresh did not expect: it stopped for good."""
    server = EmbeddedRedis(data_dir=tmp_path, fsync="everysec").start()
    fill_for_a_slow_load(server.url)
    restart = SlowRestart(server).start()

    async def scenario() -> tuple[set[str], set[str]]:
        connection = PipelinedConnection(server.url)
        store = ProfileStore.from_url(server.url)
        seen, decide_path = set(), set()
        try:
            while restart.loading:
                try:
                    await connection.call("HGETALL", "nba:learning")
                except StoreUnavailableError as exc:
                    seen.add(str(exc).split()[0])
                try:
                    await store.load("C-1", interaction=None, now=NOW)
                except StoreUnavailableError as exc:
                    decide_path.add(str(exc).split()[0])
                await asyncio.sleep(0.02)
        finally:
            await connection.aclose()
            await store.aclose()
        return seen, decide_path

    try:
        seen, decide_path = asyncio.run(scenario())
    finally:
        restart.wait().stop()
    assert "LOADING" in seen, seen
    assert "LOADING" in decide_path, decide_path


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
