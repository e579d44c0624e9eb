"""The dashboard's picture: every panel of ops/grafana/decision-engine.json, plotted from
its own queries against a real Prometheus that scraped a real `serve`. `make dashboard`.

    .venv/bin/python -m bench.dashboard [--minutes 3] [--out docs/dashboard.png]

Grafana cannot run here (no container registry, no Debian package), so the panels'
PromQL is run with Prometheus' query_range API and drawn with matplotlib (the `dev`
extra): the same series Grafana would draw. The traffic is the demo's, open loop:

- Decide at ~60 a second over the demo and 2,000 generated customers, mixed intents;
  outcomes for most answers (presented, then accepted, declined or no response);
- business events (card compromised, payment failed) that raise notices;
- an incident at 40 % of the run: Redis is paused three times for 1.5 s
  (`DEBUG SLEEP`), so decisions degrade, and answer again;
- a rule change at 60 % that goes live and a broken one at 70 % that is rejected.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import grpc
import redis

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from decision_engine.store.embedded import EmbeddedRedis
from tests.ops.prometheus import dashboard_panels, query, running_prometheus
from tests.server.conftest import RULES, Server, load_demo, start_server

OUT = Path(__file__).resolve().parents[1] / "docs" / "dashboard.png"
INTENTS = ("cancel", "payment", "lost_card", "complaint", "general", "general")
ANSWERS = (pb.OUTCOME_ACCEPTED, pb.OUTCOME_DECLINED, pb.OUTCOME_NO_RESPONSE)
RATE = 60.0


@contextmanager
def running(tmp: Path) -> Iterator[tuple[Server, EmbeddedRedis, Path, int]]:
    rules = tmp / "rules"
    shutil.copytree(RULES, rules)
    with EmbeddedRedis(data_dir=tmp / "redis", fsync="everysec") as store:
        load_demo(store.url, generated=2000)
        server = start_server(tmp, "--rules", str(rules), "--redis-url", store.url,
                              "--data-dir", str(tmp), moment_workers=1,
                              notice_workers=1)  # fmt: skip
        try:
            with running_prometheus(tmp, [f"127.0.0.1:{server.metrics_port}"]) as port:
                yield server, store, rules, port
        finally:
            server.stop()


async def one_call(stub: pb_grpc.DecisionServiceStub, rng: random.Random) -> None:
    customer = f"C-{rng.randrange(1, 2000):06d}" if rng.random() < 0.9 else "C-1001"
    context = pb.InteractionContext(channel=pb.CHANNEL_VOICE, intent=rng.choice(INTENTS))
    try:
        answer = await stub.Decide(
            pb.DecideRequest(customer_id=customer, context=context), timeout=0.5
        )
        if not answer.offers or rng.random() < 0.2:
            return
        offer = answer.offers[0].offer_id
        for outcome in (pb.OUTCOME_PRESENTED, rng.choice(ANSWERS)):
            request = pb.RecordOutcomeRequest(
                decision_id=answer.decision_id, offer_id=offer, outcome=outcome
            )
            await stub.RecordOutcome(request, timeout=1.0)
    except grpc.aio.AioRpcError:
        pass  # the incident's failures are what the error panel shows


async def one_event(stub: pb_grpc.NoticeServiceStub, rng: random.Random, n: int) -> None:
    kind = rng.choice(("card_compromised", "payment_failed"))
    attributes = (
        {"card_last4": f"{rng.randrange(10_000):04d}", "merchant": "Shop"}
        if kind == "card_compromised"
        else {"amount": f"{rng.randrange(10, 300)}", "due_date": "2026-12-31"}
    )
    event = pb.BusinessEvent(
        event_id=f"dash-{n}",
        type=kind,
        customer_id=f"C-{rng.randrange(1, 2000):06d}",
        attributes=attributes,
    )
    with suppress(grpc.aio.AioRpcError):
        await stub.PublishEvent(event, timeout=1.0)


async def drive(server: Server, store: EmbeddedRedis, rules: Path, seconds: float) -> None:
    rng = random.Random(7)
    pending: set[asyncio.Task[None]] = set()
    incident, change, broken = 0.4 * seconds, 0.6 * seconds, 0.7 * seconds
    offers = rules / "offers.yaml"
    good = offers.read_text()
    async with grpc.aio.insecure_channel(server.target) as channel:
        decide = pb_grpc.DecisionServiceStub(channel)
        notices = pb_grpc.NoticeServiceStub(channel)
        start = time.monotonic()
        n = 0
        while (elapsed := time.monotonic() - start) < seconds:
            # The wave: busier mid-run, as a contact center's morning.
            rate = RATE * (0.6 + 0.8 * min(elapsed, seconds - elapsed) / seconds)
            task = asyncio.create_task(one_call(decide, rng))
            if n % 40 == 0:
                task = asyncio.create_task(one_event(notices, rng, n))
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
            if incident <= elapsed:
                incident = float("inf")
                pending.add(asyncio.create_task(pause_redis(store.url)))
            if change <= elapsed:
                change = float("inf")
                offers.write_text(good + "\n# reviewed for the dashboard run\n")
            if broken <= elapsed:
                broken = float("inf")
                offers.write_text(good + "\n  - id: [\n")
                asyncio.get_running_loop().call_later(5, offers.write_text, good)
            await asyncio.sleep(rng.expovariate(rate))
        await asyncio.gather(*pending)


async def pause_redis(url: str) -> None:
    for _ in range(3):
        await asyncio.to_thread(_sleep_redis, url)
        await asyncio.sleep(3)


def _sleep_redis(url: str) -> None:
    with redis.Redis.from_url(url) as client:
        client.execute_command("DEBUG", "SLEEP", "1.5")


def ranges(port: int, start: float, end: float) -> list[tuple[dict[str, Any], list[Any]]]:
    """Each panel with, per target, the query_range result."""
    step = str(max(int((end - start) / 120), 2))
    out = []
    for panel in dashboard_panels():
        results = [
            query(port, "/api/v1/query_range", query=t["expr"], start=str(start),
                  end=str(end), step=step)["result"]
            for t in panel["targets"]
        ]  # fmt: skip
        out.append((panel, results))
    return out


def _label(metric: dict[str, str], legend: str, fallback: str) -> str:
    if legend and legend != "__auto":
        for key, value in metric.items():
            legend = legend.replace("{{" + key + "}}", value)
        return legend
    return ", ".join(f"{v}" for k, v in metric.items() if k != "__name__") or fallback


def plot(data: list[tuple[dict[str, Any], list[Any]]], start: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = (len(data) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(15, 2.6 * rows), squeeze=False)
    for ax, (panel, results) in zip(axes.flat, data, strict=False):
        ax.set_title(panel["title"], fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
        if panel["type"] == "heatmap":
            _heatmap(ax, results[0], start)
            continue
        for target, result in zip(panel["targets"], results, strict=True):
            for series in result:
                xs = [(float(t) - start) / 60 for t, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                label = _label(series["metric"], target.get("legendFormat", ""), target["refId"])
                ax.plot(xs, ys, linewidth=1, label=label)
        if ax.lines:
            ax.legend(fontsize=6, loc="upper left", ncol=3)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        unit = panel["fieldConfig"]["defaults"].get("unit", "")
        ax.set_ylabel({"s": "seconds", "percentunit": "share", "reqps": "per second"}.get(unit, ""),
                      fontsize=7)  # fmt: skip
    for ax in axes.flat[len(data) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("minutes into the run", fontsize=7)
    fig.suptitle("Decision engine dashboard (ops/grafana/decision-engine.json), "
                 "plotted from its queries on a live Prometheus", fontsize=11)  # fmt: skip
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)


def _heatmap(ax: Any, result: list[dict[str, Any]], start: float) -> None:
    bounds = sorted({float(s["metric"]["le"]) for s in result})
    if not result:
        return
    by_le = {float(s["metric"]["le"]): dict(s["values"]) for s in result}
    times = sorted({t for s in result for t, _ in s["values"]})
    grid = []
    for le_below, le in zip([0.0, *bounds], bounds, strict=False):
        row = []
        for t in times:
            above = float(by_le[le].get(t, 0))
            below = float(by_le[le_below].get(t, 0)) if le_below in by_le else 0.0
            row.append(max(above - below, 0.0))
        grid.append(row)
    shown = [b for b in bounds if b != float("inf")]
    ax.imshow(grid[: len(shown)], aspect="auto", origin="lower", cmap="viridis",
              extent=((float(times[0]) - start) / 60, (float(times[-1]) - start) / 60,
                      0, len(shown)))  # fmt: skip
    ax.set_yticks([i + 0.5 for i in range(len(shown))])
    ax.set_yticklabels([f"≤{b * 1000:g} ms" for b in shown], fontsize=6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running(Path(tmp)) as (server, store, rules, port):
        start = time.time()
        asyncio.run(drive(server, store, rules, args.minutes * 60))
        time.sleep(5)  # the last scrapes
        plot(ranges(port, start, time.time()), start, args.out)
        reloads = query(port, "/api/v1/query", query="sum(ruleset_reloads_total)")["result"]
    print(f"wrote {args.out} ({args.minutes:g} min of traffic); reloads seen: {reloads}")


if __name__ == "__main__":
    main()
