"""Proactive notices under load: a real `serve` with `notice_workers` notice processes,
delivering to a real signed webhook (bench/webhook_receiver.py, in a process of its own).

- audience: one `service_outage` event for an audience of `audience` customers: seconds
  until every notice is decided (queued on the outbox or held for quiet hours), then
  the webhook's delivery rate while it drains the outbox;
- single events: `card_compromised` PublishEvent calls open loop at `event_rate`/s,
  latency from sending the event to the webhook receiving its notice;
- Decide at `decide_rate` open loop alone, then beside the single events: the p99 ratio.

    python -m bench.notices --out notices.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

from bench.guidance import decide_summary
from bench.load import (
    Calls,
    Options,
    cpu_seconds,
    latency_summary,
    open_channels,
    open_loop,
    wait_serving,
)
from bench.serve import child_pids, compact_aof, free_port, start_server, stop
from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from decision_engine.ruleset.load import load_profile_rules
from decision_engine.store.embedded import EmbeddedRedis
from decision_engine.store.generate import generate_profiles
from decision_engine.store.profiles import ProfileStore

RULES = Path(__file__).resolve().parent.parent / "rules"
SECRET = "bench-webhook-secret"
AUDIENCE_POSTCODE = "9999"


@dataclass
class NoticeOptions:
    audience: int = 100_000
    event_rate: float = 200.0
    decide_rate: float = 1000.0
    duration: float = 20.0
    timeout_s: float = 300.0
    notice_workers: int = 2


@dataclass
class Receiver:
    """The webhook receiver process (bench/webhook_receiver.py), asked what arrived."""

    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def arrived(self, prefix: str) -> dict[str, float]:
        """When each notice whose key starts with `prefix` first arrived (time.time())."""
        address = f"http://127.0.0.1:{self.port}/arrivals?prefix={urllib.parse.quote(prefix)}"
        with urllib.request.urlopen(address, timeout=30) as reply:
            return dict(json.loads(reply.read())["arrived"])


def daytime_zone(now: float) -> str:
    """A fixed-offset zone where it is mid-afternoon at `now`, outside any quiet hours."""
    offset = (14 - time.gmtime(now).tm_hour) % 24
    offset = offset - 24 if offset > 14 else offset
    # Etc/GMT names count the other way round: Etc/GMT-3 is three hours ahead of UTC.
    return "UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"


async def load_audience(url: str, count: int) -> float:
    """`count` generated customers, all in one postcode and a zone where it is day now
    (held for quiet hours, the delivery phase would measure nothing at night); seconds."""
    schema, audiences = load_profile_rules(RULES)
    zone = daytime_zone(time.time())
    store = ProfileStore.from_url(url)
    began = time.perf_counter()
    try:
        rows = (
            (str(p["customer_id"]),
             {**{k: str(v) for k, v in p.items() if k != "customer_id"},
              "postcode": AUDIENCE_POSTCODE, "timezone": zone})
            for p in generate_profiles(count, seed=7, today=date.today(), schema=schema)
        )  # fmt: skip
        await store.put_profiles(rows, batch_size=2000, audiences=audiences)
    finally:
        await store.aclose()
    return time.perf_counter() - began


def metric_sum(metrics_port: int, name: str, *labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(label in line for label in labels):
            total += float(line.rpartition(" ")[2])
    return total


def decided(metrics_port: int) -> float:
    """Customers the service_outage notice was planned for so far."""
    notice = 'notice="service_outage"'
    return metric_sum(metrics_port, "notices_decided_total", notice) + metric_sum(
        metrics_port, "notices_suppressed_total", notice
    )


async def audience_phase(
    target: str, metrics_port: int, receiver: Receiver, opts: NoticeOptions
) -> dict[str, Any]:
    async with open_channels(target, 1)[0] as channel:
        stub = pb_grpc.NoticeServiceStub(channel)
        event = pb.BusinessEvent(
            event_id="bench-outage", type="service_outage",
            audience=pb.Audience(field="postcode", value=AUDIENCE_POSTCODE),
            attributes={"outage_id": "bench-1", "restored_by": "18:00"},
        )  # fmt: skip
        began = time.perf_counter()
        wall = time.time()
        await stub.PublishEvent(event, timeout=10)
    # Every customer decided: one plan each (queued, held or suppressed) for the notice.
    while decided(metrics_port) < opts.audience:
        await asyncio.sleep(0.05)
        if time.perf_counter() - began > opts.timeout_s:
            raise TimeoutError("the audience event was not processed in time")
    decided_s = time.perf_counter() - began
    queued = metric_sum(metrics_port, "notices_decided_total", 'notice="service_outage"',
                        'status="queued"')  # fmt: skip
    held = metric_sum(metrics_port, "notices_decided_total", 'notice="service_outage"',
                      'status="held"')  # fmt: skip
    suppressed = metric_sum(metrics_port, "notices_suppressed_total", 'notice="service_outage"')
    while len(times := sorted(receiver.arrived("bench-outage/").values())) < queued:
        await asyncio.sleep(0.5)
        if time.perf_counter() - began > opts.timeout_s:
            raise TimeoutError("the audience's notices were not delivered in time")
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    return {
        "customers": opts.audience,
        "decided_seconds": round(decided_s, 2),
        "decided_per_s": round(opts.audience / decided_s),
        "queued": int(queued),
        "held_for_quiet_hours": int(held),
        "suppressed": int(suppressed),
        "delivered": len(times),
        "delivery_seconds": round(span, 2),
        "delivered_per_s": round(len(times) / span) if span else None,
        "all_delivered_after_s": round(times[-1] - wall, 2) if times else None,
    }


async def single_events(
    target: str, receiver: Receiver, opts: NoticeOptions, prefix: str
) -> dict[str, Any]:
    channels = open_channels(target, 2)
    stubs = [pb_grpc.NoticeServiceStub(c) for c in channels]
    sent_at: dict[str, float] = {}

    def publish(k: int) -> Any:
        customer = f"C-{k % opts.audience + 1:06d}"
        event_id = f"{prefix}{k}"
        sent_at[f"{event_id}/card_compromised/{customer}/"] = time.time()
        event = pb.BusinessEvent(
            event_id=event_id, type="card_compromised", customer_id=customer,
            attributes={"card_last4": f"{k:04d}"},
        )  # fmt: skip
        return stubs[k % 2].PublishEvent(event, timeout=5)

    try:
        samples = await open_loop(publish, opts.event_rate, opts.duration)
        await asyncio.sleep(2.0)  # the last notices on their way
    finally:
        for channel in channels:
            await channel.close()
    latencies, missing = [], 0
    arrived = {k.rpartition("/")[0] + "/": t for k, t in receiver.arrived(prefix).items()}
    for key, sent in sent_at.items():
        if key in arrived:
            latencies.append((arrived[key] - sent) * 1000)
        else:
            missing += 1  # no consent for any channel: no notice (the planner's choice)
    return {
        "events": samples.sent,
        "publish_errors": {k: len(v) for k, v in samples.by_outcome.items() if k != "OK"},
        "event_to_webhook": latency_summary(latencies),
        "events_without_notice": missing,
    }


def process_names(server_pid: int, receiver_pid: int, redis: dict[str, str]) -> dict[str, int]:
    """The processes whose CPU the phases report, by what they are."""
    import redis as redis_py

    names = {"load generator": os.getpid(), "webhook receiver": receiver_pid}
    for pid in child_pids(server_pid):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        names[comm if comm.startswith("notices") else f"grpc worker {pid}"] = pid
    for name, url in redis.items():
        with redis_py.Redis.from_url(url) as client:
            names[name] = int(client.info("server")["process_id"])
    return names


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds([pid]) for name, pid in pids.items()}


def _cpu_share(
    before: dict[str, float], after: dict[str, float], seconds: float
) -> dict[str, float]:
    """Share of one core each process used over the phase."""
    return {name: round((after[name] - before[name]) / seconds, 2) for name in before}


async def run(
    opts: NoticeOptions,
    target: str,
    metrics_port: int,
    receiver: Receiver,
    pids: dict[str, int],
    redis_urls: tuple[str, ...],
) -> dict[str, Any]:
    results: dict[str, Any] = {"options": asdict(opts)}
    print(f"notices: an audience event for {opts.audience:,} customers", flush=True)
    results["audience"] = await audience_phase(target, metrics_port, receiver, opts)
    # The audience's writes doubled the append-only files: rewrite them now, as an operator
    # would, rather than have Redis fork for it in the middle of the Decide phases.
    for url in redis_urls:
        compact_aof(url)
    channels = open_channels(target, 8)
    workload = Calls(channels, Options(target=target, customers=opts.audience))
    try:
        print(f"notices: Decide alone at {opts.decide_rate:g}/s", flush=True)
        before = _cpu(pids)
        alone = await open_loop(workload.decide, opts.decide_rate, opts.duration)
        results["cpu_share_decide_alone"] = _cpu_share(before, _cpu(pids), opts.duration)
        print(f"notices: events at {opts.event_rate:g}/s, Decide beside", flush=True)
        before = _cpu(pids)
        events = asyncio.create_task(single_events(target, receiver, opts, "bench-card-"))
        together = await open_loop(workload.decide, opts.decide_rate, opts.duration)
        results["cpu_share_with_events"] = _cpu_share(before, _cpu(pids), opts.duration)
        results["single_events"] = await events
    finally:
        for channel in channels:
            await channel.close()
    results["decide_alone"], results["decide_with_events"] = (
        decide_summary(alone),
        decide_summary(together),
    )
    a, b = results["decide_alone"]["p99_ms"], results["decide_with_events"]["p99_ms"]
    results["decide_p99_ratio"] = round(b / a, 3) if a else None
    return results


async def main_async(opts: NoticeOptions, work: Path) -> dict[str, Any]:
    receiver = Receiver(free_port())
    hook = subprocess.Popen(
        [sys.executable, "-m", "bench.webhook_receiver", "--port", str(receiver.port)]
    )
    with (
        EmbeddedRedis(data_dir=work / "redis", fsync="everysec") as decision,
        EmbeddedRedis(data_dir=work / "durable", fsync="always") as durable,
    ):
        print(f"notices: loading {opts.audience:,} profiles", flush=True)
        await load_audience(decision.url, opts.audience)
        port, metrics_port = free_port(), free_port()
        os.environ["DECISION_ENGINE_WEBHOOK_SECRET"] = SECRET
        server = start_server(
            RULES, decision.url, port, work / "serve-notices.log", durable.url, metrics_port,
            extra=("--notice-senders", f"*={receiver.url}"), notice_workers=opts.notice_workers,
        )  # fmt: skip
        try:
            target = f"127.0.0.1:{port}"
            await wait_serving(target, timeout=60)
            await asyncio.sleep(2.0)  # the key-date sweep at start, out of the way
            pids = process_names(
                server.pid, hook.pid, {"redis": decision.url, "durable redis": durable.url}
            )
            return await run(
                opts, target, metrics_port, receiver, pids, (decision.url, durable.url)
            )
        finally:
            stop(server)
            hook.terminate()
            hook.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    for name, value in asdict(NoticeOptions()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args()
    opts = NoticeOptions(**{k: v for k, v in vars(args).items() if k != "out"})
    with tempfile.TemporaryDirectory(prefix="bench-notices-") as work:
        result = asyncio.run(main_async(opts, Path(work)))
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()


AUDIENCE_TARGET_S = 10.0
DELIVERY_TARGET_PER_S = 2000
EVENT_P99_TARGET_MS = 100.0
DECIDE_BUDGET = 0.15


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets for notices, against one run's figures."""
    audience, single = result["audience"], result["single_events"]["event_to_webhook"]
    ratio = result["decide_p99_ratio"]
    return {
        "notices_audience_decided": {
            "target": f"{audience['customers']:,} customers decided <= {AUDIENCE_TARGET_S:g} s",
            "value": f"{audience['decided_seconds']} s ({audience['decided_per_s']:,}/s)",
            "met": audience["decided_seconds"] <= AUDIENCE_TARGET_S,
        },
        "notices_webhook_delivery": {
            "target": f">= {DELIVERY_TARGET_PER_S:,} notices/s to a local webhook",
            "value": audience["delivered_per_s"],
            "met": (audience["delivered_per_s"] or 0) >= DELIVERY_TARGET_PER_S,
        },
        "notices_event_to_webhook_p99": {
            "target": f"p99 <= {EVENT_P99_TARGET_MS:g} ms at "
            f"{result['options']['event_rate']:g} events/s",
            "value": single["p99_ms"],
            "met": single["p99_ms"] <= EVENT_P99_TARGET_MS,
        },
        "notices_decide_cost": {
            "target": f"Decide p99 within {DECIDE_BUDGET:.0%} of Decide alone",
            "value": f"{result['decide_with_events']['p99_ms']} vs "
            f"{result['decide_alone']['p99_ms']} ms (x{ratio})",
            "met": ratio is not None and ratio <= 1 + DECIDE_BUDGET,
        },
    }


def report(result: dict[str, Any]) -> None:
    a, s = result["audience"], result["single_events"]
    print(f"\n== proactive notices ({result['options']['notice_workers']} notice processes) ==")
    print(
        f"audience of {a['customers']:,}: decided in {a['decided_seconds']} s "
        f"({a['queued']:,} queued, {a['held_for_quiet_hours']:,} held, {a['suppressed']:,} "
        f"suppressed); delivered {a['delivered_per_s']}/s, all after {a['all_delivered_after_s']} s"
    )
    lat = s["event_to_webhook"]
    print(
        f"single events at {result['options']['event_rate']:g}/s: event -> webhook p50 "
        f"{lat['p50_ms']} ms, p99 {lat['p99_ms']} ms ({lat['count']:,} notices)"
    )
    print(
        f"Decide at {result['options']['decide_rate']:g}/s p99: alone "
        f"{result['decide_alone']['p99_ms']} ms, beside the events "
        f"{result['decide_with_events']['p99_ms']} ms (x{result['decide_p99_ratio']})"
    )
    share = result["cpu_share_with_events"]
    print("cores used beside the events: " + ", ".join(f"{k} {v}" for k, v in share.items()))
