"""gRPC load generator: open-loop latency at a fixed rate, then closed-loop max throughput.

For Decide and for Ping (the floor of the stack) on the same server:

- fixed rate: sends are scheduled by the clock (k / rate after the start) whether or not
  earlier calls have answered, and latency counts from the *scheduled* time, so a stall
  shows up in the percentiles instead of silently slowing the sender (no coordinated
  omission);
- max throughput: `concurrency` calls kept in flight across the channels.

Several channels with distinct options make distinct TCP connections, so the kernel's
SO_REUSEPORT balancing spreads them over the server's worker processes.

    python -m bench.load --target 127.0.0.1:50051 --out load.json
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.gen_rules import demo_schema_values
from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc

INTENTS = demo_schema_values()[0]
Call = Callable[[int], Awaitable[Any]]
"""Makes call number i (which picks its channel)."""


@dataclass
class Options:
    target: str
    channels: int = 8
    rate: float = 1000.0
    duration: float = 20.0
    warmup: float = 3.0
    max_duration: float = 10.0
    concurrency: int = 96
    customers: int = 100_000
    interaction_share: float = 0.2
    timeout: float = 1.0
    seed: int = 1
    server_pids: str = ""
    """Comma-separated pids of the server's workers, for CPU time per request (Linux)."""


def open_channels(target: str, count: int) -> list[grpc.aio.Channel]:
    """Channels that do not share a connection (one subchannel pool and user agent each)."""
    return [
        grpc.aio.insecure_channel(
            target,
            options=[
                ("grpc.primary_user_agent", f"bench-{i}"),
                ("grpc.use_local_subchannel_pool", 1),
            ],
        )
        for i in range(count)
    ]


async def wait_serving(target: str, timeout: float, channels: int = 4) -> None:
    """Until the health service says SERVING on several connections (TimeoutError if not)."""
    opened = open_channels(target, channels)
    deadline = time.monotonic() + timeout
    try:
        for channel in opened:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.aio.AioRpcError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{target} not SERVING after {timeout:g} s")
                await asyncio.sleep(0.1)
    finally:
        for channel in opened:
            await channel.close()


class Calls:
    """Random customers, intents and channels; `decide(i)` goes over channel i (mod n)."""

    def __init__(self, channels: list[grpc.aio.Channel], opts: Options) -> None:
        self.stubs = [pb_grpc.DecisionServiceStub(c) for c in channels]
        self.rng = random.Random(opts.seed)
        self.opts = opts
        self.sequence = itertools.count()

    def decide(self, i: int) -> Awaitable[Any]:
        rng, opts = self.rng, self.opts
        request = pb.DecideRequest(
            customer_id=f"C-{rng.randint(1, opts.customers):06d}",
            context=pb.InteractionContext(
                channel=rng.randint(1, 7),  # type: ignore[arg-type]
                intent=rng.choice(INTENTS),
            ),
        )
        if rng.random() < opts.interaction_share:
            request.interaction_id = f"bench-{opts.seed}-{next(self.sequence)}"
        stub = self.stubs[i % len(self.stubs)]
        reply: Awaitable[Any] = stub.Decide(request, timeout=opts.timeout)
        return reply

    def ping(self, i: int) -> Awaitable[Any]:
        reply: Awaitable[Any] = self.stubs[i % len(self.stubs)].Ping(
            pb.PingRequest(), timeout=self.opts.timeout
        )
        return reply


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of processes so far, from /proc (0 for a vanished one)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


async def measured(phase: Awaitable[dict[str, Any]], server_pids: list[int]) -> dict[str, Any]:
    """A phase's result plus CPU µs per request (server, this process) and machine load.

    `other_cpu_cores` is what everything else on the machine (Redis included) used
    meanwhile, in cores: the noise indicator of a shared machine.
    """
    server, client, (busy, total) = cpu_seconds(server_pids), time.process_time(), machine_cpu()
    result = await phase
    calls = result["requests"]
    client_cpu = time.process_time() - client
    server_cpu = cpu_seconds(server_pids) - server
    busy_after, total_after = machine_cpu()
    wall = (total_after - total) / (os.cpu_count() or 1)
    result["client_cpu_us_per_req"] = round(client_cpu / calls * 1e6)
    if server_pids:
        result["server_cpu_us_per_req"] = round(server_cpu / calls * 1e6)
    if wall > 0:
        result["other_cpu_cores"] = round((busy_after - busy - server_cpu - client_cpu) / wall, 2)
    return result


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def fixed_rate(call: Call, rate: float, duration: float) -> dict[str, Any]:
    """Open loop: the k-th call is due at start + k / rate; latency from that due time."""
    total = int(rate * duration)
    latencies: list[float] = []
    by_second: list[list[float]] = [[] for _ in range(math.ceil(duration))]
    errors: Counter[str] = Counter()
    tasks: set[asyncio.Task[None]] = set()

    async def one(k: int, due: float) -> None:
        # A failed call counts in the percentiles too, at the time it failed.
        try:
            await call(k)
        except grpc.aio.AioRpcError as exc:
            errors[exc.code().name] += 1
        latency = (time.perf_counter() - due) * 1000
        latencies.append(latency)
        by_second[int(k / rate)].append(latency)

    start = time.perf_counter() + 0.01
    sent = 0
    while sent < total:
        now = time.perf_counter()
        # Everything due by now goes out now, even if the loop fell behind.
        due_count = min(total, int((now - start) * rate) + 1)
        for k in range(sent, due_count):
            task = asyncio.create_task(one(k, start + k / rate))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        sent = max(sent, due_count)
        await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))
    send_end = time.perf_counter()
    if tasks:
        await asyncio.wait(tasks)
    ms = sorted(latencies)
    return {
        "offered_rate": rate,
        "achieved_rate": round(total / (send_end - start), 1),
        "requests": total,
        "ok": total - sum(errors.values()),
        "errors": dict(errors),
        "p50_ms": round(percentile(ms, 50), 3),
        "p90_ms": round(percentile(ms, 90), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "p999_ms": round(percentile(ms, 99.9), 3),
        "max_ms": round(ms[-1], 3) if ms else None,
        "p99_ms_by_second": [round(percentile(sorted(s), 99), 2) for s in by_second if s],
    }


async def max_throughput(call: Call, concurrency: int, duration: float) -> dict[str, Any]:
    """Closed loop: `concurrency` callers back to back; completions per second.

    Each caller keeps to one channel, so a worker process that got more connections
    gets more callers and no worker idles while another is the bottleneck.
    """
    done = 0
    errors: Counter[str] = Counter()
    stop = time.perf_counter() + duration

    async def caller(i: int) -> None:
        nonlocal done
        while time.perf_counter() < stop:
            try:
                await call(i)
                done += 1
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] += 1

    start = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - start
    return {
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "requests": done + sum(errors.values()),
        "ok": done,
        "errors": dict(errors),
        "rps": round(done / elapsed, 1),
    }


async def run(opts: Options) -> dict[str, Any]:
    channels = open_channels(opts.target, opts.channels)
    calls = Calls(channels, opts)
    results: dict[str, Any] = {"options": vars(opts)}
    pids = [int(p) for p in opts.server_pids.split(",") if p]
    try:
        for name, call in (("decide", calls.decide), ("ping", calls.ping)):
            print(f"[load] {name}: warm-up {opts.warmup:g} s", flush=True)
            await fixed_rate(call, opts.rate, opts.warmup)
            print(f"[load] {name}: {opts.rate:g} req/s for {opts.duration:g} s", flush=True)
            latency = await measured(fixed_rate(call, opts.rate, opts.duration), pids)
            print(f"[load] {name}: closed loop x{opts.concurrency}", flush=True)
            throughput = await measured(
                max_throughput(call, opts.concurrency, opts.max_duration), pids
            )
            results[name] = {"fixed_rate": latency, "max_throughput": throughput}
    finally:
        for channel in channels:
            await channel.close()
    ping_rps = results["ping"]["max_throughput"]["rps"]
    results["decide_over_ping"] = round(results["decide"]["max_throughput"]["rps"] / ping_rps, 3)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description="Decide/Ping load generator")
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--wait", type=float, default=0.0, help="wait up to N s for SERVING")
    defaults = Options(target="")
    for name, value in vars(defaults).items():
        if name != "target":
            parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = vars(parser.parse_args())
    out, wait = args.pop("out"), args.pop("wait")
    opts = Options(**args)

    async def session() -> dict[str, Any]:
        if wait:
            await wait_serving(opts.target, wait)
        return await run(opts)

    results = asyncio.run(session())
    text = json.dumps(results, indent=2)
    if out:
        out.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
