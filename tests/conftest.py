"""Shared fixtures: one real redis-server per test session, emptied before each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from decision_engine.store.embedded import EmbeddedRedis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A real redis-server on an ephemeral port, in a throwaway data dir."""
    with EmbeddedRedis(data_dir=tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    """URL of the session's server, with every key removed."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url
