"""The gRPC stack's own cost: asyncio's server against the synchronous one with a thread
pool, each serving Ping and a Decide that reads a profile from Redis and decides.

    python -m bench.grpc_stack [--rounds 3] [--duration 8]

Both servers run the same handler code (one process each, the load generator in this
one): the profile read is `redis.asyncio` awaited on the event loop, or the blocking
client on a pool thread; the decision is `decide()` on a 1,000-offer generated ruleset
and the reply is the service's own `decision_response`. What differs is the stack a
call travels on, so the ratios say which stack leaves Decide closer to Ping.
"""

from __future__ import annotations

import argparse
import asyncio
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import redis

from bench.gen_rules import demo_schema_values, write_ruleset
from bench.load import max_throughput, measured, open_channels
from bench.micro import NOW, population
from bench.serve import free_port
from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from decision_engine.decide.engine import decide
from decision_engine.ruleset.compiled import CompiledRuleset, load_compiled
from decision_engine.server.convert import decision_response
from decision_engine.store.embedded import EmbeddedRedis

CUSTOMERS = 5000
STACKS = ("aio", "aio-in-memory", "aio-blocking", "sync")


def _answer(ruleset: CompiledRuleset, blob: bytes | None) -> pb.DecideResponse:
    state, context = pickle.loads(blob) if blob else (None, None)
    decision = decide(ruleset, state=state, context=context, now=NOW, decision_id="d")
    return decision_response(decision)


def serve_aio(port: int, url: str, ruleset: CompiledRuleset, *, read: str) -> None:
    import redis.asyncio as aredis

    # In memory: the profiles read once at start, so a Decide awaits nothing; blocking:
    # read with the synchronous client on the event loop's thread, so nothing is awaited
    # either, but the loop waits for Redis.
    blobs = _all_profiles(url) if read == "in-memory" else {}
    blocking = redis.Redis.from_url(url)

    class Service(pb_grpc.DecisionServiceServicer):
        def __init__(self) -> None:
            self.redis = aredis.from_url(url)

        async def Ping(self, request: Any, context: Any) -> pb.PingResponse:
            return pb.PingResponse()

        async def Decide(self, request: Any, context: Any) -> pb.DecideResponse:
            if read == "in-memory":
                return _answer(ruleset, blobs.get(request.customer_id))
            if read == "blocking":
                blob = blocking.get(request.customer_id)
                return _answer(ruleset, blob if isinstance(blob, bytes) else None)
            return _answer(ruleset, await self.redis.get(request.customer_id))

    async def main() -> None:
        server = grpc.aio.server()
        pb_grpc.add_DecisionServiceServicer_to_server(Service(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


def _all_profiles(url: str) -> dict[str, bytes]:
    client = redis.Redis.from_url(url)
    keys = [f"c{i}" for i in range(CUSTOMERS)]
    return {k: v for k, v in zip(keys, client.mget(keys), strict=True) if isinstance(v, bytes)}


def serve_sync(port: int, url: str, ruleset: CompiledRuleset, threads: int) -> None:
    class Service(pb_grpc.DecisionServiceServicer):
        def __init__(self) -> None:
            self.redis = redis.Redis.from_url(url, max_connections=threads)

        def Ping(self, request: Any, context: Any) -> pb.PingResponse:
            return pb.PingResponse()

        def Decide(self, request: Any, context: Any) -> pb.DecideResponse:
            blob = self.redis.get(request.customer_id)
            return _answer(ruleset, blob if isinstance(blob, bytes) else None)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads))
    pb_grpc.add_DecisionServiceServicer_to_server(Service(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


async def _phase(target: str, method: str, pid: int, duration: float) -> dict[str, Any]:
    channels = open_channels(target, 8)
    stubs = [pb_grpc.DecisionServiceStub(c) for c in channels]
    ping = pb.PingRequest()
    requests = [pb.DecideRequest(customer_id=f"c{i}") for i in range(CUSTOMERS)]
    for stub in stubs:  # the server is up and every connection open
        for _ in range(200):
            try:
                await stub.Ping(ping, timeout=1)
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.05)

    async def call(i: int) -> None:
        stub = stubs[i % len(stubs)]
        if method == "Ping":
            await stub.Ping(ping, timeout=5)
        else:
            await stub.Decide(requests[int(time.perf_counter() * 1e6) % CUSTOMERS], timeout=5)

    try:
        return await measured(max_throughput(call, 32, duration), [pid])
    finally:
        for channel in channels:
            await channel.close()


def run(rounds: int, duration: float, threads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="grpc-stack-") as tmp:
        work = Path(tmp)
        write_ruleset(work / "rules", offers=1000, routes=100)
        intents = demo_schema_values()[0]
        with EmbeddedRedis(data_dir=work / "redis", fsync="everysec") as store:
            client = redis.Redis.from_url(store.url)
            for i, case in enumerate(population(CUSTOMERS, intents)):
                client.set(f"c{i}", pickle.dumps(case))
            results: dict[str, list[dict[str, Any]]] = {}
            for _ in range(rounds):
                for stack in STACKS:
                    port = free_port()
                    args = [sys.executable, "-m", "bench.grpc_stack", "--serve", stack,
                            "--port", str(port), "--redis", store.url,
                            "--rules", str(work / "rules"), "--threads", str(threads)]  # fmt: skip
                    server = subprocess.Popen(args)
                    try:
                        for method in ("Decide", "Ping"):
                            phase = _phase(f"127.0.0.1:{port}", method, server.pid, duration)
                            results.setdefault(f"{stack} {method}", []).append(asyncio.run(phase))
                    finally:
                        server.terminate()
                        server.wait()
    return results


def report(results: dict[str, list[dict[str, Any]]]) -> None:
    def median(key: str, field: str) -> float:
        return statistics.median(r[field] for r in results[key])

    print("| stack | Decide req/s | Ping req/s | ratio | CPU µs, Decide / Ping | CPU × | rounds |")
    print("|---|---|---|---|---|---|---|")
    for stack in STACKS:
        d, p = median(f"{stack} Decide", "rps"), median(f"{stack} Ping", "rps")
        dc = median(f"{stack} Decide", "server_cpu_us_per_req")
        pc = median(f"{stack} Ping", "server_cpu_us_per_req")
        spread = "; ".join(
            f"{m} " + "/".join(f"{r['rps']:.0f}" for r in results[f"{stack} {m}"])
            for m in ("Decide", "Ping")
        )
        print(f"| {stack} | {d:,.0f} | {p:,.0f} | {d / p:.2f} | {dc:.0f} / {pc:.0f} | "
              f"{dc / pc:.2f} | {spread} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=16, help="the sync server's pool")
    parser.add_argument("--serve", choices=STACKS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    parser.add_argument("--rules", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        ruleset = load_compiled(args.rules)
        if args.serve.startswith("aio"):
            serve_aio(args.port, args.redis, ruleset, read=args.serve.partition("-")[2])
        else:
            serve_sync(args.port, args.redis, ruleset, args.threads)
        return
    report(run(args.rounds, args.duration, args.threads))


if __name__ == "__main__":
    main()
