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
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.gen_rules import demo_schema_values
from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from decision_engine.channels import ClientTls, aio_channel

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
    other_pids: str = ""
    """...and of what else serves the calls (a load balancer, Redis), counted apart."""
    phases: str = "decide,ping,overload,crowd"
    """Which phases to run, in this order."""
    overload_factor: float = 3.0
    """Overload phase: Decide open loop at this multiple of the measured max..."""
    overload_rate: float = 0.0
    """...or at this rate (req/s) when set."""
    overload_duration: float = 30.0
    overload_clients: int = 2
    """Processes offering the overload (one Python process tops out below it)."""
    crowd: int = 1024
    """Last phase: Decide closed loop with this many calls in flight."""
    rounds: int = 3
    """Decide and Ping take turns this many times at the fixed rate and the maximum."""
    tls_ca: str = ""
    """Speak TLS to the server, trusting this CA (PEM)."""
    token: str = ""
    """Bearer token sent with every call."""


def open_channels(target: str, count: int, tls_ca: str = "") -> list[grpc.aio.Channel]:
    """Channels that do not share a connection (one subchannel pool and user agent each)."""
    tls = ClientTls(Path(tls_ca)) if tls_ca else None
    return [
        aio_channel(
            target,
            tls,
            options=[
                ("grpc.primary_user_agent", f"bench-{i}"),
                ("grpc.use_local_subchannel_pool", 1),
            ],
        )
        for i in range(count)
    ]


async def wait_serving(target: str, timeout: float, channels: int = 4, tls_ca: str = "") -> None:
    """Until the health service says SERVING on several connections (TimeoutError if not)."""
    opened = open_channels(target, channels, tls_ca)
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
        self.metadata = (("authorization", f"Bearer {opts.token}"),) if opts.token else None

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
        reply: Awaitable[Any] = stub.Decide(request, timeout=opts.timeout, metadata=self.metadata)
        return reply

    def ping(self, i: int) -> Awaitable[Any]:
        reply: Awaitable[Any] = self.stubs[i % len(self.stubs)].Ping(
            pb.PingRequest(), timeout=self.opts.timeout, metadata=self.metadata
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


async def measured(
    phase: Awaitable[dict[str, Any]], server_pids: list[int], helper_pids: list[int] | None = None
) -> dict[str, Any]:
    """A phase's result plus CPU µs per request (server, helpers, this process) and
    machine load.

    `other_cpu_cores` is what everything else on the machine (Redis included, unless
    among the helpers) used meanwhile, in cores: the noise indicator of a shared machine.
    """
    server, client, (busy, total) = cpu_seconds(server_pids), time.process_time(), machine_cpu()
    helper_pids = helper_pids or []
    helpers = cpu_seconds(helper_pids)
    result = await phase
    calls = result["requests"]
    client_cpu = time.process_time() - client
    server_cpu = cpu_seconds(server_pids) - server
    busy_after, total_after = machine_cpu()
    wall = (total_after - total) / (os.cpu_count() or 1)
    result["client_cpu_us_per_req"] = round(client_cpu / calls * 1e6)
    helper_cpu = cpu_seconds(helper_pids) - helpers
    if server_pids:
        result["server_cpu_us_per_req"] = round(server_cpu / calls * 1e6)
    if helper_pids:
        result["helper_cpu_us_per_req"] = round(helper_cpu / calls * 1e6)
    if wall > 0:
        others = busy_after - busy - server_cpu - helper_cpu - client_cpu
        result["other_cpu_cores"] = round(others / wall, 2)
    return result


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


@dataclass
class Samples:
    """Latencies (ms, from each call's due time) of an open-loop run, by outcome."""

    rate: float
    duration: float
    sent: int = 0
    send_seconds: float = 0.0
    by_outcome: dict[str, list[float]] = field(default_factory=dict)
    """"OK" or the status code's name -> latencies."""
    from_send: dict[str, list[float]] = field(default_factory=dict)
    """The same, from when the call was actually sent (the generator's own lag left out)."""
    lag: list[float] = field(default_factory=list)
    """How late each call was sent (the load generator's lag behind its schedule)."""
    degraded: int = 0
    """OK answers made without the profile (`degraded: true`)."""
    messages: dict[str, str] = field(default_factory=dict)
    """The first message seen for each error code."""
    by_second: list[list[float]] = field(default_factory=list)

    def merge(self, other: Samples) -> None:
        self.rate += other.rate
        self.sent += other.sent
        self.send_seconds = max(self.send_seconds, other.send_seconds)
        self.degraded += other.degraded
        self.messages = {**other.messages, **self.messages}
        for outcome, values in other.by_outcome.items():
            self.by_outcome.setdefault(outcome, []).extend(values)
        for outcome, values in other.from_send.items():
            self.from_send.setdefault(outcome, []).extend(values)
        self.lag.extend(other.lag)
        for i, values in enumerate(other.by_second):
            while len(self.by_second) <= i:
                self.by_second.append([])
            self.by_second[i].extend(values)

    def as_json(self) -> dict[str, Any]:
        return {
            "rate": self.rate, "duration": self.duration, "sent": self.sent,
            "send_seconds": self.send_seconds, "by_outcome": self.by_outcome,
            "from_send": self.from_send, "lag": self.lag,
            "degraded": self.degraded, "messages": self.messages, "by_second": self.by_second,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Samples:
        return cls(**data)


async def open_loop(call: Call, rate: float, duration: float, *, start: float = 0.0) -> Samples:
    """The k-th call is due at start + k / rate, whether or not earlier ones answered.

    `start` (time.time(), optional) lets several processes share one schedule.
    """
    total = int(rate * duration)
    samples = Samples(rate, duration, by_second=[[] for _ in range(math.ceil(duration))])
    tasks: set[asyncio.Task[None]] = set()

    async def one(k: int, due: float) -> None:
        # A failed call counts in the percentiles too, at the time it failed.
        sent = time.perf_counter()
        try:
            reply = await call(k)
        except grpc.aio.AioRpcError as exc:
            outcome = exc.code().name
            samples.messages.setdefault(outcome, exc.details() or "")
        else:
            outcome = "OK"
            if getattr(reply, "degraded", False):
                samples.degraded += 1
        done = time.perf_counter()
        latency = (done - due) * 1000
        samples.by_outcome.setdefault(outcome, []).append(latency)
        samples.from_send.setdefault(outcome, []).append((done - sent) * 1000)
        samples.lag.append((sent - due) * 1000)
        samples.by_second[int(k / rate)].append(latency)

    delay = max(0.0, start - time.time()) if start else 0.01
    begin = time.perf_counter() + delay
    sent = 0
    while sent < total:
        now = time.perf_counter()
        # Everything due by now goes out now, even if the loop fell behind.
        due_count = min(total, int((now - begin) * rate) + 1) if now >= begin else 0
        for k in range(sent, due_count):
            task = asyncio.create_task(one(k, begin + k / rate))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        sent = max(sent, due_count)
        await asyncio.sleep(max(0.0, begin + sent / rate - time.perf_counter()))
    samples.send_seconds = time.perf_counter() - begin
    samples.sent = total
    if tasks:
        await asyncio.wait(tasks)
    return samples


def latency_summary(values: list[float]) -> dict[str, Any]:
    ms = sorted(values)
    return {
        "count": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(ms[-1], 3) if ms else None,
    }


async def fixed_rate(call: Call, rate: float, duration: float) -> dict[str, Any]:
    """Open loop at `rate`; latency from each call's due time (no coordinated omission)."""
    samples = await open_loop(call, rate, duration)
    ms = sorted(itertools.chain.from_iterable(samples.by_outcome.values()))
    errors = {k: len(v) for k, v in samples.by_outcome.items() if k != "OK"}
    return {
        "offered_rate": rate,
        "achieved_rate": round(samples.sent / samples.send_seconds, 1),
        "requests": samples.sent,
        "ok": samples.sent - sum(errors.values()),
        "errors": errors,
        "degraded": samples.degraded,
        "messages": samples.messages,
        "p50_ms": round(percentile(ms, 50), 3),
        "p90_ms": round(percentile(ms, 90), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "p999_ms": round(percentile(ms, 99.9), 3),
        "max_ms": round(ms[-1], 3) if ms else None,
        "p99_ms_by_second": [round(percentile(sorted(s), 99), 2) for s in samples.by_second if s],
    }


REFUSED = ("RESOURCE_EXHAUSTED", "CANCELLED", "UNAVAILABLE")
"""How an overloaded server turns a call away: RESOURCE_EXHAUSTED (the server's own
admission control), CANCELLED (gRPC's core, past the queue bound), UNAVAILABLE (a
stream refused past a connection's stream limit)."""


async def max_throughput(
    call: Call, concurrency: int, duration: float, *, backoff_s: float = 0.01
) -> dict[str, Any]:
    """Closed loop: `concurrency` callers back to back; completions per second.

    Each caller keeps to one channel, so a worker process that got more connections
    gets more callers and no worker idles while another is the bottleneck. Latencies
    are kept by outcome; a caller turned away (REFUSED) waits `backoff_s` before its
    next call, as a client should, instead of spinning on refusals.
    """
    by_outcome: dict[str, list[float]] = {"OK": []}
    messages: dict[str, str] = {}
    stop = time.perf_counter() + duration

    async def caller(i: int) -> None:
        while (sent := time.perf_counter()) < stop:
            try:
                await call(i)
                outcome = "OK"
            except grpc.aio.AioRpcError as exc:
                outcome = exc.code().name
                messages.setdefault(outcome, exc.details() or "")
            by_outcome.setdefault(outcome, []).append((time.perf_counter() - sent) * 1000)
            if outcome in REFUSED:
                await asyncio.sleep(backoff_s)

    start = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - start
    done = len(by_outcome["OK"])
    ok = sorted(by_outcome["OK"])
    return {
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "requests": sum(len(v) for v in by_outcome.values()),
        "ok": done,
        "errors": {k: len(v) for k, v in by_outcome.items() if k != "OK"},
        "messages": messages,
        "rps": round(done / elapsed, 1),
        "ok_p50_ms": round(percentile(ok, 50), 3),
        "ok_p99_ms": round(percentile(ok, 99), 3),
        "shed_p99_ms": round(percentile(sorted(by_outcome.get("RESOURCE_EXHAUSTED", [])), 99), 3),
    }


def medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One phase over its rounds: each number the median of the rounds', with its
    (min, max) as `<name>_spread` and every round's value in `<name>_rounds`; the rest
    (error counts, messages) from the round of the median p99 or throughput."""
    key = "p99_ms" if "p99_ms" in rounds[0] else "rps"
    ordered = sorted(rounds, key=lambda r: r[key])
    out = dict(ordered[len(ordered) // 2])
    for name, value in rounds[0].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            values = [r[name] for r in rounds]
            out[name] = statistics.median(values)
            out[f"{name}_spread"] = [min(values), max(values)]
            out[f"{name}_rounds"] = values
    return out


def rss_kib(pids: list[int]) -> dict[str, int]:
    """Resident memory of each process (VmRSS, KiB), from /proc."""
    out: dict[str, int] = {}
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                out[str(pid)] = int(line.split()[1])
    return out


async def probe_health(target: str, stop: asyncio.Event, every_s: float = 0.1) -> dict[str, Any]:
    """Health checks on a connection of their own until `stop`; what they got back."""
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while not stop.is_set():
            sent = time.perf_counter()
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.aio.AioRpcError as exc:
                status = exc.code().name
            latencies.append((time.perf_counter() - sent) * 1000)
            statuses[status] = statuses.get(status, 0) + 1
            await asyncio.sleep(every_s)
    return {"statuses": statuses, **latency_summary(latencies)}


async def overload(opts: Options, rate: float, pids: list[int]) -> dict[str, Any]:
    """Decide, open loop at `rate` for `overload_duration` s, from `overload_clients`
    processes (one Python process cannot offer several thousand calls a second), on
    one shared schedule, with health checks alongside; then the workers' memory once
    the load has stopped."""
    parts = max(1, opts.overload_clients)
    start = time.time() + 2.0  # every client connected before the first call is due
    rss_before = rss_kib(pids)
    stop_probe = asyncio.Event()
    probe = asyncio.create_task(probe_health(opts.target, stop_probe))
    with tempfile.TemporaryDirectory(prefix="overload-") as tmp:
        outs = [Path(tmp) / f"part-{i}.json" for i in range(parts)]
        children = []
        for i, out in enumerate(outs):
            args = [
                "--target", opts.target, "--out", str(out), "--part-of", f"{rate / parts}:{start}",
                "--duration", str(opts.overload_duration), "--seed", str(opts.seed + 100 + i),
                "--customers", str(opts.customers), "--timeout", str(opts.timeout),
                "--channels", str(max(1, opts.channels // parts)),
            ]  # fmt: skip
            children.append(
                await asyncio.create_subprocess_exec(sys.executable, "-m", "bench.load", *args)
            )
        server_cpu, (busy, total) = cpu_seconds(pids), machine_cpu()
        for child in children:
            if await child.wait() != 0:
                raise RuntimeError(f"overload client exited with {child.returncode}")
        server_cpu = cpu_seconds(pids) - server_cpu
        busy_after, total_after = machine_cpu()
        stop_probe.set()
        samples = Samples(0.0, opts.overload_duration)
        for out in outs:
            samples.merge(Samples.from_json(json.loads(out.read_text())))
    health = await probe
    await asyncio.sleep(2.0)  # calls in flight drain, memory settles
    rss_after = rss_kib(pids)
    by, sent = samples.by_outcome, samples.from_send
    requests = sum(len(v) for v in by.values())
    wall = (total_after - total) / (os.cpu_count() or 1)
    refused = [x for code in REFUSED for x in by.get(code, [])]
    refused_sent = [x for code in REFUSED for x in sent.get(code, [])]
    return {
        "offered_rate": round(rate),
        "seconds": opts.overload_duration,
        "clients": parts,
        "achieved_rate": round(samples.sent / samples.send_seconds, 1),
        "requests": requests,
        "by_outcome": {k: latency_summary(v) for k, v in by.items()},
        "from_send": {k: latency_summary(v) for k, v in sent.items()},
        "generator_lag": latency_summary(samples.lag),
        "admitted": latency_summary(by.get("OK", [])),
        "admitted_from_send": latency_summary(sent.get("OK", [])),
        "admitted_rps": round(len(by.get("OK", [])) / opts.overload_duration, 1),
        "refused": latency_summary(refused),
        "refused_from_send": latency_summary(refused_sent),
        "degraded": samples.degraded,
        "health": health,
        "messages": samples.messages,
        "server_cpu_us_per_req": round(server_cpu / max(1, requests) * 1e6),
        "machine_busy_cores": round((busy_after - busy) / wall, 2) if wall > 0 else None,
        "rss_kib_before": rss_before,
        "rss_kib_after": rss_after,
        "p99_ms_by_second": [round(percentile(sorted(s), 99), 2) for s in samples.by_second if s],
    }


GENERATOR_LAG_BOUND_MS = 100.0
"""An overload whose generator sent its calls later than this (p99) measured the
generator: on 2 cores its processes and the server share the CPU, and at 3x a 2,400
req/s maximum the generator fell seconds behind and read every answer ~30 s late,
calls with a 1 s deadline included."""

OVERLOAD_FALLBACK = (1.0, 2 / 3, 1 / 2)
"""Fractions of `overload_factor` tried in turn until the generator keeps its schedule."""


async def overload_within_reach(
    opts: Options, results: dict[str, Any], pids: list[int]
) -> dict[str, Any]:
    """`overload` at `overload_factor` x the measured max, or, when the generator could
    not offer that, at the next lower factor it can; the attempts it could not keep up
    with are kept, summarised, under `generator_bound`."""
    if opts.overload_rate:
        factors: tuple[float | None, ...] = (None,)
    else:
        factors = tuple(opts.overload_factor * f for f in OVERLOAD_FALLBACK)
    bound: list[dict[str, Any]] = []
    for factor in factors:
        rate = factor * results["decide"]["max_throughput"]["rps"] if factor else opts.overload_rate
        what = f"{factor:g}x the max" if factor else "as asked"
        print(
            f"[load] decide: overload, open loop at {rate:.0f} req/s ({what}) "
            f"for {opts.overload_duration:g} s",
            flush=True,
        )
        result = await overload(opts, rate, pids)
        result["factor"] = round(factor, 3) if factor else None
        lag = result["generator_lag"]["p99_ms"]
        result["generator_kept_up"] = lag <= GENERATOR_LAG_BOUND_MS
        if result["generator_kept_up"] or factor == factors[-1]:
            break
        print(f"[load] the generator lagged {lag:.0f} ms at p99: not the server's figure")
        keep = ("factor", "offered_rate", "achieved_rate", "generator_lag", "admitted", "refused")
        bound.append({k: result[k] for k in keep})
    result["generator_bound"] = bound
    return result


async def overload_part(opts: Options, rate: float, start: float) -> Samples:
    """One client process of `overload`: its share of the rate, on the shared schedule."""
    channels = open_channels(opts.target, opts.channels, opts.tls_ca)
    try:
        for channel in channels:  # connect now, not on the first due call
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        calls = Calls(channels, opts)
        return await open_loop(calls.decide, rate, opts.duration, start=start)
    finally:
        for channel in channels:
            await channel.close()


async def run(opts: Options) -> dict[str, Any]:
    channels = open_channels(opts.target, opts.channels, opts.tls_ca)
    calls = Calls(channels, opts)
    results: dict[str, Any] = {"options": vars(opts)}
    pids = [int(p) for p in opts.server_pids.split(",") if p]
    helpers = [int(p) for p in opts.other_pids.split(",") if p]
    results["rss_kib_at_start"] = rss_kib(pids)
    try:
        phases = opts.phases.split(",")
        if "rate" in phases:  # Decide at the fixed rate only (the security A/B)
            print(f"[load] decide: {opts.rate:g} req/s for {opts.duration:g} s", flush=True)
            await fixed_rate(calls.decide, opts.rate, opts.warmup)
            results["rate"] = await measured(
                fixed_rate(calls.decide, opts.rate, opts.duration), pids
            )
        by_round: dict[str, list[dict[str, Any]]] = {}
        for n in range(opts.rounds):
            # Decide and Ping take turns, so a noisy minute lands on both.
            for name, call in (("decide", calls.decide), ("ping", calls.ping)):
                if name not in phases:
                    continue
                if n == 0:
                    print(f"[load] {name}: warm-up {opts.warmup:g} s", flush=True)
                    await fixed_rate(call, opts.rate, opts.warmup)
                what = f"{opts.rate:g} req/s, then closed loop x{opts.concurrency}"
                print(f"[load] {name} ({n + 1}/{opts.rounds}): {what}", flush=True)
                latency = await measured(fixed_rate(call, opts.rate, opts.duration), pids, helpers)
                throughput = await measured(
                    max_throughput(call, opts.concurrency, opts.max_duration), pids, helpers
                )
                by_round.setdefault(name, []).append(
                    {"fixed_rate": latency, "max_throughput": throughput}
                )
        for name, rounds in by_round.items():
            results[name] = {phase: medians([r[phase] for r in rounds]) for phase in rounds[0]} | {
                "rounds": len(rounds)
            }
        if "overload" in phases:
            results["overload"] = await overload_within_reach(opts, results, pids)
        if "crowd" in phases:
            print(f"[load] decide: closed loop x{opts.crowd}", flush=True)
            results["crowd"] = await measured(
                max_throughput(calls.decide, opts.crowd, opts.max_duration), pids
            )
    finally:
        for channel in channels:
            await channel.close()
    if "decide" in results and "ping" in results:
        ping_rps = results["ping"]["max_throughput"]["rps"]
        decide_rps = results["decide"]["max_throughput"]["rps"]
        results["decide_over_ping"] = round(decide_rps / ping_rps, 3)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description="Decide/Ping load generator")
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--wait", type=float, default=0.0, help="wait up to N s for SERVING")
    parser.add_argument("--part-of", default="", help=argparse.SUPPRESS)  # RATE:START
    defaults = Options(target="")
    for name, value in vars(defaults).items():
        if name != "target":
            parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = vars(parser.parse_args())
    out, wait, part_of = args.pop("out"), args.pop("wait"), args.pop("part_of")
    opts = Options(**args)

    async def session() -> dict[str, Any]:
        if part_of:
            rate, start = (float(x) for x in part_of.split(":"))
            return (await overload_part(opts, rate, start)).as_json()
        if wait:
            await wait_serving(opts.target, wait, tls_ca=opts.tls_ca)
        return await run(opts)

    results = asyncio.run(session())
    text = json.dumps(results, indent=2)
    if out:
        out.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
