"""ClusterConnection against a real 3-master, 3-replica Redis Cluster: routing, pipelines,
scripts, MOVED and ASK while a slot migrates, and a master killed -9 mid-use."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.crc import key_slot

from decision_engine.errors import StoreUnavailableError
from decision_engine.store.cluster import (
    ClusterConnection,
    connect,
    is_cluster_url,
    node_url,
    startup_nodes,
    sync_client,
)
from decision_engine.store.connection import PipelinedConnection, ReplyError, Script
from tests.cluster.redis_cluster import LocalCluster, Node

pytestmark = pytest.mark.cluster

INCRBY = Script("return redis.call('INCRBY', KEYS[1], ARGV[1])")


def key_per_master(cluster: LocalCluster, prefix: str = "key") -> dict[int, str]:
    """One key for each master: {master port: key}."""
    keys: dict[int, str] = {}
    i = 0
    while len(keys) < len(cluster.masters()):
        key = f"{prefix}:{i}"
        keys.setdefault(cluster.master_for(key).port, key)
        i += 1
    return keys


def start_migration(cluster: LocalCluster, key: str) -> tuple[int, Node, Node]:
    """Move `key` (only) to another master, its slot left MIGRATING / IMPORTING."""
    slot = key_slot(key.encode())
    source = cluster.slot_owner(slot)
    target = next(m for m in cluster.masters() if m is not source)
    cluster.command(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", source.id)
    cluster.command(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", target.id)
    cluster.command(source, "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", key)
    return slot, source, target


def finish_migration(cluster: LocalCluster, slot: int, target: Node) -> None:
    # The new owner first, as the cluster spec says, then every other master.
    for master in sorted(cluster.masters(), key=lambda m: m is not target):
        cluster.command(master, "CLUSTER", "SETSLOT", slot, "NODE", target.id)


def test_each_key_goes_to_its_slots_master(redis_cluster: LocalCluster) -> None:
    keys = key_per_master(redis_cluster)

    async def scenario() -> None:
        connection = ClusterConnection(redis_cluster.url)
        try:
            for port, key in keys.items():
                assert await connection.call("SET", key, f"on-{port}") == "OK"
        finally:
            await connection.aclose()

    asyncio.run(scenario())
    client = sync_client(redis_cluster.url, decode_responses=True)
    try:
        for port, key in keys.items():
            assert client.get(key) == f"on-{port}"
            # On that master itself, not just somewhere redis-py can find it.
            assert redis_cluster.client(redis_cluster.by_port(port)).get(key) == f"on-{port}"
    finally:
        client.close()


def test_a_pipeline_across_masters_answers_in_order(redis_cluster: LocalCluster) -> None:
    keys = list(key_per_master(redis_cluster).values())
    assert len(keys) == 3

    async def scenario() -> list[object]:
        connection = ClusterConnection(redis_cluster.url)
        try:
            await connection.pipeline([("SET", k, f"v-{k}") for k in keys])
            return await connection.pipeline(
                [("GET", keys[2]), ("INCR", keys[0]), ("GET", keys[0]), ("PING",),
                 ("RPUSH", "{list}", "a", "b"), ("GET", keys[1]), ("LLEN", "{list}")]
            )  # fmt: skip
        finally:
            await connection.aclose()

    replies = asyncio.run(scenario())
    assert replies[0] == f"v-{keys[2]}"
    assert isinstance(replies[1], ReplyError) and "not an integer" in str(replies[1])
    assert replies[2:] == [f"v-{keys[0]}", "PONG", 2, f"v-{keys[1]}", 2]


def test_scripts_run_on_every_master(redis_cluster: LocalCluster) -> None:
    keys = list(key_per_master(redis_cluster, "counter").values())

    async def scenario() -> tuple[list[object], list[object]]:
        connection = ClusterConnection(redis_cluster.url)
        try:
            # No master has the script yet: each answers NOSCRIPT, and EVAL follows.
            first = [await INCRBY(connection, [k], [i + 1]) for i, k in enumerate(keys)]
            many = await INCRBY.many(connection, [([k], [10]) for k in keys])
            return first, many
        finally:
            await connection.aclose()

    first, many = asyncio.run(scenario())
    assert first == [1, 2, 3]
    assert many == [11, 12, 13]


def test_send_nowait_on_an_open_connection(redis_cluster: LocalCluster) -> None:
    async def scenario() -> object:
        connection = ClusterConnection(redis_cluster.url)
        try:
            with pytest.raises(StoreUnavailableError):  # no slot map, no connection yet
                connection.send_nowait("GET", "greeting")
            await connection.call("SET", "greeting", "hello")
            return await connection.send_nowait("GET", "greeting")
        finally:
            await connection.aclose()

    assert asyncio.run(scenario()) == "hello"


def test_moved_slot_is_followed(redis_cluster: LocalCluster) -> None:
    key = "moving:{a}"

    async def scenario() -> None:
        connection = ClusterConnection(redis_cluster.url)
        try:
            await connection.call("SET", key, "before")
            slot, source, target = start_migration(redis_cluster, key)
            finish_migration(redis_cluster, slot, target)
            assert redis_cluster.master_for(key) is target
            # The connection's map still says `source`, which answers MOVED.
            assert await connection.call("GET", key) == "before"
            assert await connection.call("SET", key, "after") == "OK"
            assert await connection.pipeline([("GET", key), ("INCR", "moving:{a}:n")]) == [
                "after",
                1,
            ]
            assert redis_cluster.client(target).get(key) == "after"
            assert redis_cluster.command(source, "DBSIZE") == 0
        finally:
            await connection.aclose()

    asyncio.run(scenario())


def test_ask_during_a_migration(redis_cluster: LocalCluster) -> None:
    key = "half:{b}"

    async def scenario() -> None:
        connection = ClusterConnection(redis_cluster.url)
        slot, target = -1, None
        try:
            await connection.call("SET", key, "migrated")
            slot, source, target = start_migration(redis_cluster, key)
            # `source` still owns the slot, but no longer has the key: ASK to `target`.
            assert redis_cluster.slot_owner(slot) is source
            assert await connection.call("GET", key) == "migrated"
            assert await connection.pipeline([("GET", key), ("SET", "half:{b}:new", "x")]) == [
                "migrated",
                "OK",
            ]
            assert redis_cluster.command(target, "DBSIZE") == 2
            # ASK changes no map: the slot is still `source`'s.
            assert redis_cluster.slot_owner(slot) is source
        finally:
            if target is not None:
                finish_migration(redis_cluster, slot, target)
            await connection.aclose()

    asyncio.run(scenario())


@pytest.mark.slow
def test_a_master_killed_fails_over_without_wrong_answers(fresh_cluster: LocalCluster) -> None:
    cluster = fresh_cluster
    keys = key_per_master(cluster)
    victim = cluster.by_port(next(iter(keys)))
    doomed = [k for k in (f"doomed:{i}" for i in range(200)) if cluster.master_for(k) is victim]
    doomed = doomed[:20]
    master = cluster.client(victim)
    for key in doomed:
        master.set(key, f"v-{key}")
    assert master.wait(1, 1000) == 1  # on the replica before the kill

    async def scenario() -> tuple[int, int]:
        connection = ClusterConnection(cluster.url, connect_timeout=0.5)
        try:
            assert await connection.call("GET", doomed[0]) == f"v-{doomed[0]}"
            cluster.kill_master(victim)
            failover = asyncio.ensure_future(asyncio.to_thread(cluster.wait_failover, victim.port))
            answered = unavailable = 0
            while not failover.done():
                key = doomed[answered % len(doomed)]
                try:
                    value = await connection.call("GET", key)
                except StoreUnavailableError:
                    unavailable += 1
                else:
                    assert value == f"v-{key}"  # never a wrong value, never a missing one
                    answered += 1
                await asyncio.sleep(0.05)
            await failover
            # The same connection, after the failover: every slot answers again.
            assert await connection.pipeline([("GET", k) for k in doomed]) == [
                f"v-{k}" for k in doomed
            ]
            for key in keys.values():
                assert await connection.call("SET", key, "later") == "OK"
                assert await connection.call("GET", key) == "later"
            return answered, unavailable
        finally:
            await connection.aclose()

    _, unavailable = asyncio.run(scenario())
    assert unavailable > 0  # (the victim's slots were out for the failover's length)
    assert cluster.slot_owner(key_slot(doomed[0].encode())).port != victim.port


def test_a_cluster_with_a_password(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, password="s3cret")
    try:
        assert ":s3cret@" in cluster.url
        keys = list(key_per_master(cluster).values())

        async def scenario() -> list[object]:
            connection = ClusterConnection(cluster.url)
            try:
                await connection.pipeline([("SET", k, k.upper()) for k in keys])
                return await connection.pipeline([("GET", k) for k in keys])
            finally:
                await connection.aclose()

        assert asyncio.run(scenario()) == [k.upper() for k in keys]
    finally:
        cluster.stop()


def test_connect_picks_the_connection_by_scheme() -> None:
    assert isinstance(connect("redis://127.0.0.1:6379/0"), PipelinedConnection)
    cluster = connect("redis+cluster://u:p@10.0.0.1:7000,10.0.0.2:7001", connect_timeout=0.3)
    assert isinstance(cluster, ClusterConnection)
    assert is_cluster_url(cluster.url) and not is_cluster_url("redis://h:1")
    assert startup_nodes(cluster.url) == [("10.0.0.1", 7000), ("10.0.0.2", 7001)]
    assert node_url(cluster.url, "10.0.0.3", 7002) == "redis://u:p@10.0.0.3:7002"
    assert node_url("redis+cluster://:pw@h:1", "h", 2) == "redis://:pw@h:2"
    assert node_url("redis+cluster://h:1", "h", 2) == "redis://h:2"
    with pytest.raises(ValueError):
        startup_nodes("redis+cluster://h")
