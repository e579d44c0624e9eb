"""A real Redis Cluster (tests/cluster/redis_cluster.py): one per module, emptied before
each test; `fresh_cluster` is a test's own, for tests that kill a node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.redis_cluster import LocalCluster


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_cluster(shared_cluster: LocalCluster) -> LocalCluster:
    shared_cluster.flushall()
    return shared_cluster


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path / "redis-cluster")
    try:
        yield cluster
    finally:
        cluster.stop()
