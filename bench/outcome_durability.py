"""What it costs RecordOutcome to keep an acknowledged outcome through a failover, on a
real Redis Cluster (3 masters + 3 replicas on this machine).

    python -m bench.outcome_durability [--outcomes 400]

One `serve` (1 worker) per setting, the same decisions' outcomes recorded one after
another; the latency of each RecordOutcome call as the client sees it:

- fsync always, no WAIT: survives a restart of the master, not a failover (replication
  is asynchronous: the last writes may not have reached the replica);
- fsync always + WAIT 1: on the replica's memory before the answer, so a failover keeps it;
- fsync every second + WAIT 1: the replica has it, the disk a second later.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import grpc
import redis

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from tests.cluster.redis_cluster import LocalCluster
from tests.server.conftest import RULES, load_demo, start_server

SETTINGS = [
    ("fsync always, no WAIT", "always", 0),
    ("fsync always + WAIT 1", "always", 1),
    ("fsync every second + WAIT 1", "everysec", 1),
]


def measure(target: str, count: int) -> list[float]:
    """Milliseconds per RecordOutcome, for `count` outcomes of fresh decisions."""
    latencies = []
    with grpc.insecure_channel(target) as ch:
        stub = pb_grpc.DecisionServiceStub(ch)
        context = pb.InteractionContext(channel=pb.CHANNEL_VOICE, intent="general_inquiry")
        for i in range(count):
            decision = stub.Decide(
                pb.DecideRequest(customer_id="C-1007", context=context, interaction_id=f"i{i}"),
                timeout=5,
            )
            request = pb.RecordOutcomeRequest(
                decision_id=decision.decision_id,
                offer_id=decision.offers[0].offer_id,
                outcome=pb.OUTCOME_PRESENTED,
            )
            start = time.perf_counter()
            stub.RecordOutcome(request, timeout=5)
            latencies.append((time.perf_counter() - start) * 1000)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--outcomes", type=int, default=400)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-durability-"))
    cluster = LocalCluster(tmp / "cluster")
    results = {}
    try:
        load_demo(cluster.url, generated=0)
        for name, fsync, replicas in SETTINGS:
            for node in cluster.nodes:
                redis.Redis(port=node.port).config_set("appendfsync", fsync)
            server = start_server(tmp, "--rules", str(RULES), "--redis-url", cluster.url,
                                  "--outcomes-wait-replicas", str(replicas), workers=1)  # fmt: skip
            try:
                measure(server.target, 50)  # warm up
                ms = sorted(measure(server.target, args.outcomes))
            finally:
                server.stop()
            results[name] = {
                "p50_ms": round(statistics.median(ms), 3),
                "p99_ms": round(ms[int(len(ms) * 0.99) - 1], 3),
                "outcomes": len(ms),
            }
            print(f"{name:32} p50 {results[name]['p50_ms']:7.3f} ms   "
                  f"p99 {results[name]['p99_ms']:7.3f} ms")  # fmt: skip
    finally:
        cluster.stop()
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
