"""The request path's connection to a Redis Cluster, chosen with figures: our slot-routing
`ClusterConnection` against redis-py's asyncio `RedisCluster`, on the same local cluster
(3 masters + 3 replicas), doing the decision's read (the load script) for 1,000 customers
spread over every slot, 64 reads in flight.

    python -m bench.cluster_client [--reads 20000]

Reports the client's CPU per read (this process's CPU time over the reads: what a gRPC
worker would pay) and reads per second; medians of 3 interleaved rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from decision_engine.store.cluster import ClusterConnection, async_client
from decision_engine.store.profiles import _LOAD, ProfileStore
from tests.cluster.redis_cluster import LocalCluster

CUSTOMERS = [f"C-{i:05d}" for i in range(1000)]
IN_FLIGHT = 64


async def run(read: Callable[[str], Awaitable[Any]], reads: int) -> tuple[float, float]:
    """(CPU µs per read, reads per second) of `reads` reads, IN_FLIGHT at a time."""
    queue = iter(range(reads))

    async def worker() -> None:
        for i in queue:
            await read(CUSTOMERS[i % len(CUSTOMERS)])

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu / reads * 1e6, reads / wall


async def bench(url: str, reads: int) -> dict[str, list[tuple[float, float]]]:
    store = ProfileStore.from_url(url)
    await store.put_profiles((c, {"clv": "100", "segment": "gold"}) for c in CUSTOMERS)
    ours = ClusterConnection(url)
    theirs = async_client(url, decode_responses=True)
    # The same work for both: the decision's load script, as store/profiles.py sends it.
    sha = _LOAD.sha
    await theirs.script_load(_LOAD.source)

    def keys(c: str) -> list[str]:
        return [f"nba:{{{c}}}:{k}" for k in ("profile", "contacts", "history", "notices:log")] + [
            f"nba:{{{c}}}:caps:20261202"
        ]

    args: list[str | float] = [time.time(), 86400, "", "", 3600, 20]

    async def with_ours(c: str) -> Any:
        return await _LOAD(ours, keys(c), args)

    async def with_theirs(c: str) -> Any:
        return await theirs.evalsha(sha, 5, *keys(c), *args)

    results: dict[str, list[tuple[float, float]]] = {"ours": [], "redis-py": []}
    await run(with_ours, 2000)  # warm up: connections, slot maps
    await run(with_theirs, 2000)
    for _ in range(3):
        results["ours"].append(await run(with_ours, reads))
        results["redis-py"].append(await run(with_theirs, reads))
    await ours.aclose()
    await theirs.aclose()
    await store.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reads", type=int, default=20000)
    args = parser.parse_args()
    cluster = LocalCluster(Path(tempfile.mkdtemp(prefix="bench-cluster-client-")))
    try:
        results = asyncio.run(bench(cluster.url, args.reads))
    finally:
        cluster.stop()
    medians = {
        name: (statistics.median(c for c, _ in runs), statistics.median(r for _, r in runs))
        for name, runs in results.items()
    }
    for name, (cpu, rate) in medians.items():
        print(f"{name:10} {cpu:7.1f} µs CPU per read   {rate:9,.0f} reads/s")
    print(f"redis-py / ours: ×{medians['redis-py'][0] / medians['ours'][0]:.1f} CPU per read")


if __name__ == "__main__":
    main()
