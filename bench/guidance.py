"""Live guidance under load: many concurrent interactions publishing events, Decide beside.

Each simulated interaction starts, watches its guidance (WatchGuidance), sends one event
per second (utterances, sentiment, a hold; now and then a phrase a demo moment reacts
to) and ends unresolved; a new one takes its place, so `interactions` stay live. At the
same time Decide runs open loop at `decide_rate`. Measured:

- event → guidance: from the moment PublishEvents was sent for the event that completed
  a moment to the moment the watcher received that moment's guidance item;
- Decide's latency in this run, and in a run just before with Decide alone at the same
  rate (the same server), so the ratio says what the interaction load costs Decide.

    python -m bench.guidance --target 127.0.0.1:50051 --out guidance.json
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from bench.load import Calls, Options, latency_summary, open_channels, open_loop, percentile
from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from decision_engine.server.limits import DEFAULT_LIMITS

WATCHES_PER_CHANNEL = DEFAULT_LIMITS.max_concurrent_streams // 2
"""A connection carries at most this many watches: past the server's stream limit a
client queues every further call on that connection (Decide and PublishEvents behind
streams that last the whole interaction), as 1,000 watches on 8 connections did."""

# Lines a customer says; the trigger lines are what the demo moments react to.
SMALL_TALK = (
    "hello, I have a question about my bill",
    "can you check my last invoice",
    "my internet was slow yesterday evening",
    "ok, thank you",
    "what does this charge mean",
)
TRIGGERS = (
    ("I want to cancel my contract", ("cancel",)),
    ("I think I lost my card", ()),
    ("I already called about this twice", ()),
    ("when does my contract end", ()),
)


@dataclass
class GuidanceOptions:
    target: str
    interactions: int = 1000
    event_interval_s: float = 1.0
    events_per_interaction: int = 12
    decide_rate: float = 500.0
    duration: float = 20.0
    warmup: float = 5.0
    customers: int = 100_000
    channels: int = 8
    seed: int = 7


@dataclass
class Tally:
    sent_at: dict[str, float] = field(default_factory=dict)
    """event id → when PublishEvents was sent for it (perf_counter)."""
    latencies_ms: list[float] = field(default_factory=list)
    guidance: int = 0
    by_moment: dict[str, int] = field(default_factory=dict)
    published: int = 0
    publish_errors: dict[str, int] = field(default_factory=dict)
    watch_errors: dict[str, int] = field(default_factory=dict)
    interactions: int = 0
    measuring: bool = False


def _ts(at: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(at * 1e9))
    return stamp


def _event(interaction: str, n: int, **kind: Any) -> pb.InteractionEvent:
    return pb.InteractionEvent(
        event_id=f"{interaction}-e{n}", interaction_id=interaction, occurred_at=_ts(time.time()),
        **kind,
    )  # fmt: skip


def _script(rng: random.Random, count: int) -> list[dict[str, Any]]:
    """The kinds of one interaction's events after `started`, ending with `ended`."""
    trigger_at = rng.randrange(1, max(2, count - 2))
    out: list[dict[str, Any]] = []
    for i in range(count - 1):
        if i == trigger_at:
            text, keywords = rng.choice(TRIGGERS)
            out.append(
                {"utterance": pb.Utterance(speaker=pb.SPEAKER_CUSTOMER, text=text,
                                           keywords=list(keywords))}
            )  # fmt: skip
        elif rng.random() < 0.25:
            out.append({"sentiment": pb.SentimentChanged(
                value=rng.uniform(-0.8, 0.6), speaker=pb.SPEAKER_CUSTOMER)})  # fmt: skip
        else:
            out.append(
                {"utterance": pb.Utterance(speaker=pb.SPEAKER_CUSTOMER,
                                           text=rng.choice(SMALL_TALK))}
            )  # fmt: skip
    out.append({"ended": pb.InteractionEnded(resolved=rng.random() < 0.5)})
    return out


async def _interaction(
    opts: GuidanceOptions,
    publish: pb_grpc.GuidanceServiceStub,
    watch: pb_grpc.GuidanceServiceStub,
    name: str,
    rng: random.Random,
    tally: Tally,
) -> None:
    customer = f"C-{rng.randint(1, opts.customers):06d}"
    started = pb.InteractionStarted(
        customer_id=customer, channel=pb.CHANNEL_VOICE, intent="general_inquiry"
    )
    events = [{"started": started}, *_script(rng, opts.events_per_interaction)]

    async def follow() -> None:
        try:
            async for item in watch.WatchGuidance(
                pb.WatchGuidanceRequest(interaction_id=name), timeout=120
            ):
                received = time.perf_counter()
                if not tally.measuring:
                    continue
                tally.guidance += 1
                tally.by_moment[item.moment_id] = tally.by_moment.get(item.moment_id, 0) + 1
                sent = [tally.sent_at[e] for e in item.event_ids if e in tally.sent_at]
                if sent:
                    tally.latencies_ms.append((received - max(sent)) * 1000)
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
            tally.watch_errors[code] = tally.watch_errors.get(code, 0) + 1

    watcher = asyncio.create_task(follow())
    next_at = time.perf_counter()
    for n, kind in enumerate(events):
        event = _event(name, n, **kind)
        sent = time.perf_counter()
        tally.sent_at[event.event_id] = sent
        try:
            await publish.PublishEvents(pb.PublishEventsRequest(events=[event]), timeout=5)
            tally.published += 1
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
            tally.publish_errors[code] = tally.publish_errors.get(code, 0) + 1
        next_at += opts.event_interval_s
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    # The watch ends with the interaction; one whose `ended` was lost would wait forever.
    try:
        await asyncio.wait_for(watcher, timeout=15)
    except TimeoutError:
        tally.watch_errors["not ended in 15 s"] = tally.watch_errors.get("not ended in 15 s", 0) + 1
    for n in range(len(events)):
        tally.sent_at.pop(f"{name}-e{n}", None)
    tally.interactions += 1


async def _interactions(
    opts: GuidanceOptions,
    channels: list[grpc.aio.Channel],
    watch_channels: list[grpc.aio.Channel],
    tally: Tally,
    stop: asyncio.Event,
) -> None:
    """`opts.interactions` live at once, each replaced by a new one when it ends; events
    go over `channels`, the watches over `watch_channels`."""
    stubs = [pb_grpc.GuidanceServiceStub(c) for c in channels]
    watches = [pb_grpc.GuidanceServiceStub(c) for c in watch_channels]
    rng = random.Random(opts.seed)
    names = (f"bench-{opts.seed}-{time.time_ns()}-{i}" for i in itertools.count())

    async def lane(i: int) -> None:
        # Spread the starts over one event interval so events do not come in bursts.
        await asyncio.sleep(opts.event_interval_s * i / opts.interactions)
        while not stop.is_set():
            publish, watch = stubs[i % len(stubs)], watches[i % len(watches)]
            await _interaction(opts, publish, watch, next(names), rng, tally)

    await asyncio.gather(*(lane(i) for i in range(opts.interactions)))


def decide_summary(samples: Any) -> dict[str, Any]:
    """Decide in one open-loop phase: calls, errors, degraded answers, p50 / p99."""
    ok = sorted(samples.by_outcome.get("OK", []))
    errors = {k: len(v) for k, v in samples.by_outcome.items() if k != "OK"}
    return {
        "requests": samples.sent,
        "errors": errors,
        "degraded": samples.degraded,
        "p50_ms": round(percentile(ok, 50), 3),
        "p99_ms": round(percentile(ok, 99), 3),
    }


async def run(opts: GuidanceOptions) -> dict[str, Any]:
    channels = open_channels(opts.target, opts.channels)
    watch_channels = open_channels(
        opts.target, max(opts.channels, math.ceil(opts.interactions / WATCHES_PER_CHANNEL))
    )
    workload = Calls(channels, Options(target=opts.target, customers=opts.customers))
    try:
        alone = await open_loop(workload.decide, opts.decide_rate, opts.duration)
        tally = Tally()
        stop = asyncio.Event()
        load = asyncio.create_task(_interactions(opts, channels, watch_channels, tally, stop))
        await asyncio.sleep(opts.warmup)
        tally.measuring = True
        begin, published_before = time.perf_counter(), tally.published
        together = await open_loop(workload.decide, opts.decide_rate, opts.duration)
        seconds = time.perf_counter() - begin
        published = tally.published - published_before
        tally.measuring = False
        stop.set()
        await load
    finally:
        for channel in [*channels, *watch_channels]:
            await channel.close()
    decide_alone, decide_together = decide_summary(alone), decide_summary(together)
    return {
        "options": asdict(opts),
        "events_per_second": round(published / seconds, 1),
        "event_to_guidance": latency_summary(tally.latencies_ms),
        "guidance_items": tally.guidance,
        "by_moment": dict(sorted(tally.by_moment.items())),
        "interactions_completed": tally.interactions,
        "publish_errors": tally.publish_errors,
        "watch_errors": tally.watch_errors,
        "decide_alone": decide_alone,
        "decide_with_interactions": decide_together,
        "decide_p99_ratio": round(decide_together["p99_ms"] / decide_alone["p99_ms"], 3)
        if decide_alone["p99_ms"]
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--out", type=Path)
    for name, value in asdict(GuidanceOptions(target="")).items():
        if name != "target":
            parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args()
    opts = GuidanceOptions(**{k: v for k, v in vars(args).items() if k != "out"})
    result = asyncio.run(run(opts))
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
