"""`serve` on a real Redis Cluster (3 masters + 3 replicas): a capped offer hammered from
three replicas gives exactly its budget, a decision is one round trip to the customer's
master, a master killed -9 fails no Decide and loses no acknowledged outcome, and what
cannot run on a cluster yet says so."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
import redis.cluster

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from decision_engine.analytics.counters import read_counters
from decision_engine.config import Settings
from decision_engine.errors import ConfigError
from decision_engine.ruleset.compiled import DailyCap
from decision_engine.ruleset.spec import Learning
from decision_engine.store.cluster import sync_client
from decision_engine.store.keys import LEARNING, OUTCOME_STREAM, cap_key, history_key, profile_key
from decision_engine.store.outcomes import (
    DecisionRecord,
    apply_outcome,
    logged_outcome,
    reserve_caps,
)
from decision_engine.store.profiles import ProfileStore, cap_day
from tests.cluster.fleet import QUESTIONS, channel, running_fleet
from tests.cluster.redis_cluster import LocalCluster
from tests.server.conftest import RULES, load_demo
from tests.server.test_outcomes import UPGRADE, load_upgrade_population, rules_with

pytestmark = pytest.mark.cluster

BUDGET = 25
CUSTOMERS = 300


def admin(cluster: LocalCluster) -> redis.cluster.RedisCluster:
    return sync_client(cluster.url, decode_responses=True)


# --- caps ------------------------------------------------------------------------------


async def _decide_everyone(targets: list[str], customers: list[str]) -> list[Any]:
    """Every customer once, spread over the replicas, 24 calls in flight."""
    channels = [grpc.aio.insecure_channel(t) for t in targets]
    stubs = [pb_grpc.DecisionServiceStub(c) for c in channels]
    queue = list(enumerate(customers))
    results: list[Any] = [None] * len(customers)

    async def worker(n: int) -> None:
        while queue:
            i, customer = queue.pop()
            context = pb.InteractionContext(channel=pb.CHANNEL_VOICE, intent="general_inquiry")
            request = pb.DecideRequest(customer_id=customer, context=context)
            try:
                results[i] = await stubs[(n + i) % len(stubs)].Decide(request, timeout=10)
            except grpc.aio.AioRpcError as exc:
                results[i] = exc

    try:
        await asyncio.gather(*(worker(n) for n in range(24)))
    finally:
        for c in channels:
            await c.close()
    return results


def test_a_capped_offer_hammered_from_three_replicas_gives_exactly_its_budget(
    redis_cluster: LocalCluster, tmp_path: Path
) -> None:
    rules = rules_with(tmp_path, {UPGRADE: {"daily_cap": BUDGET}})
    with admin(redis_cluster) as client:
        customers = load_upgrade_population(client, CUSTOMERS)  # type: ignore[arg-type]
    # Not degraded on a busy machine: a degraded answer takes no budget.
    extra = ("--redis-timeout-ms", "5000")
    with running_fleet(tmp_path, redis_cluster.url, rules=rules, extra=extra) as fleet:
        targets = [s.target for s in fleet.replicas]
        results = asyncio.run(_decide_everyone(targets, customers))
    failed = [r for r in results if not isinstance(r, pb.DecideResponse)]
    assert not failed, failed[:3]
    assert all(r.profile_found and not r.degraded for r in results)
    got = Counter(any(o.offer_id == UPGRADE for o in r.offers) for r in results)
    assert got[True] == BUDGET, got
    with admin(redis_cluster) as client:
        assert client.get(cap_key(UPGRADE, cap_day(time.time()))) == str(BUDGET)
    assert all(r.offers for r in results), "the customers past the budget get other offers"


def test_a_reservation_denied_on_one_side_gives_the_other_back(
    redis_cluster: LocalCluster,
) -> None:
    day = "20261202"
    cap = DailyCap(total=2, per_customer=1)

    async def scenario() -> list[tuple[frozenset[str], frozenset[str], frozenset[str]]]:
        async with aclosing(ProfileStore.from_url(redis_cluster.url)) as store:
            got = []
            for customer in ("C-1", "C-1", "C-2", "C-3", "C-3"):
                r = await reserve_caps(store.connection, customer, [("o", cap)], day=day,
                                       split=True)  # fmt: skip
                got.append((r.granted, r.spent, r.customer_spent))
            await asyncio.sleep(0.2)  # the give-backs are sent without waiting
            return got

    got = asyncio.run(scenario())
    o, none = frozenset({"o"}), frozenset()
    assert got == [
        (o, none, none),  # C-1: the first unit
        (none, none, o),  # C-1 again: its share is spent (the unit of budget given back)
        (o, none, none),  # C-2: the second unit
        (none, o, none),  # C-3: the budget is spent (its share given back)
        (none, o, none),  # C-3 again: still spent, not "share spent"
    ]
    with admin(redis_cluster) as client:
        assert client.get(cap_key("o", day)) == "2"
        assert client.hget(f"nba:{{C-1}}:caps:{day}", "o") == "1"
        assert client.hget(f"nba:{{C-3}}:caps:{day}", "o") == "0"


# --- outcomes --------------------------------------------------------------------------


def test_an_outcome_is_applied_across_slots_once_and_read_back(
    redis_cluster: LocalCluster,
) -> None:
    decision = DecisionRecord("d.sig", "C-1", ("a",), "call-1", "voice", "v1", "champion", 1e9)
    learning = Learning(enabled=True, by="segment")

    async def scenario() -> list[bool]:
        async with aclosing(ProfileStore.from_url(redis_cluster.url)) as store:
            await store.put_profiles([("C-1", {"segment": "gold"})])
            entry = logged_outcome(decision, offer_id="a", outcome="accepted", at=1e9)
            return [
                await apply_outcome(store.connection, entry, learning=learning),
                await apply_outcome(store.connection, entry, learning=learning),
            ]

    assert asyncio.run(scenario()) == [True, False]
    counters = read_counters(redis_cluster.url)
    assert counters.by_offer["a"].accepted == 1
    assert counters.arms["champion"].decisions == 1
    with admin(redis_cluster) as client:
        assert set(client.hgetall(LEARNING)) == {"a", "a|gold"}
        assert client.hget(history_key("C-1"), "a") == "1000000000.000|accepted|call-1"


# --- round trips -----------------------------------------------------------------------


# What this test's own admin connections run (redis-py's handshake, the slot map, the
# reset, the reading of the counts).
_ADMIN = frozenset({"info", "hello", "client", "cluster", "config"})


def _calls(cluster: LocalCluster) -> dict[int, dict[str, int]]:
    """Commands each master ran since its last CONFIG RESETSTAT, but for the admin's."""
    counts = {}
    for node in cluster.masters():
        stats = cluster.client(node).info("commandstats")
        calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}
        counts[node.port] = {k: v for k, v in calls.items() if v and k not in _ADMIN}
    return counts


def test_a_decision_is_one_round_trip_to_the_customers_master(
    redis_cluster: LocalCluster,
) -> None:
    now = time.time()
    caps = {"o": DailyCap(total=10, per_customer=1)}

    async def scenario() -> dict[int, dict[str, int]]:
        async with aclosing(ProfileStore.from_url(redis_cluster.url)) as store:
            await store.put_profiles([("C-1", {"clv": "1"})])
            await store.load_for_decision("C-1", interaction=None, now=now, caps=caps)
            for node in redis_cluster.masters():
                redis_cluster.client(node).config_resetstat()
            loaded = await store.load_for_decision("C-1", interaction=None, now=now, caps=caps)
            assert loaded.state.profile == {"clv": "1"}
            assert loaded.exhausted == frozenset()  # a budget is not read on a cluster
            return _calls(redis_cluster)

    calls = asyncio.run(scenario())
    home = redis_cluster.master_for(profile_key("C-1")).port
    # The one script, on the customer's master; everything else there is what it ran
    # (HGETALL ×4: profile, contacts, history, notice log; HMGET of the customer's share).
    assert calls[home] == {"evalsha": 1, "hgetall": 4, "hmget": 1}, calls
    assert all(c == {} for port, c in calls.items() if port != home), calls


# --- failover --------------------------------------------------------------------------


@dataclass
class Traffic:
    """Through the balancer: threads calling Decide, and threads recording an outcome of
    each decision they ask for."""

    target: str
    decisions: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    acknowledged: dict[str, str] = field(default_factory=dict)
    """outcome id → decision id of every outcome the engine acknowledged."""
    degraded_at: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, n: int, record: bool) -> None:
        with channel(self.target) as ch:
            stub = pb_grpc.DecisionServiceStub(ch)
            k = 0
            while not self.stop.is_set():
                customer, intent = QUESTIONS[(n + k) % len(QUESTIONS)]
                k += 1
                context = pb.InteractionContext(channel=pb.CHANNEL_VOICE, intent=intent)
                request = pb.DecideRequest(customer_id=customer, context=context,
                                           interaction_id=f"{customer}-{n}-{k}")  # fmt: skip
                try:
                    r = stub.Decide(request, timeout=5)
                except grpc.RpcError as exc:
                    with self.lock:
                        self.decisions[f"{exc.code().name}: {exc.details()}"] += 1
                    continue
                if record:
                    if r.offers and not r.degraded:
                        self.outcome(stub, r.decision_id, r.offers[0].offer_id)
                    continue
                with self.lock:
                    self.decisions["degraded" if r.degraded else "OK"] += 1
                    if r.degraded:
                        self.degraded_at.append(time.monotonic())

    def outcome(self, stub: pb_grpc.DecisionServiceStub, decision_id: str, offer: str) -> None:
        request = pb.RecordOutcomeRequest(decision_id=decision_id, offer_id=offer,
                                          outcome=pb.OUTCOME_PRESENTED)  # fmt: skip
        try:
            reply = stub.RecordOutcome(request, timeout=5)
        except grpc.RpcError as exc:
            with self.lock:
                self.outcomes[exc.code().name] += 1
            return
        with self.lock:
            self.outcomes["duplicate" if reply.duplicate else "OK"] += 1
            if not reply.duplicate:
                self.acknowledged[reply.outcome_id] = decision_id

    def total(self) -> int:
        return sum(self.decisions.values())

    def wait(self, more: int, outcomes: int = 0, timeout: float = 60) -> None:
        """Until `more` decisions and `outcomes` acknowledged outcomes more (or timeout)."""
        start, deadline = self.total(), time.monotonic() + timeout
        logged = len(self.acknowledged)
        while time.monotonic() < deadline and (
            self.total() < start + more or len(self.acknowledged) < logged + outcomes
        ):
            time.sleep(0.02)


def test_a_master_killed_9_fails_no_decide_and_loses_no_acknowledged_outcome(
    fresh_cluster: LocalCluster, tmp_path: Path
) -> None:
    cluster = fresh_cluster
    load_demo(cluster.url, generated=50)
    extra = ("--outcomes-wait-replicas", "1")
    with running_fleet(tmp_path, cluster.url, extra=extra) as fleet:
        traffic = Traffic(fleet.target)
        threads = [threading.Thread(target=traffic.run, args=(n, n >= 3)) for n in range(5)]
        for t in threads:
            t.start()
        try:
            traffic.wait(300, outcomes=20)
            victim = cluster.master_for(OUTCOME_STREAM)  # the outcome log's master
            homed = [c for c, _ in QUESTIONS if cluster.master_for(profile_key(c)) == victim]
            assert homed, "some demo customers' data is on the master killed"
            killed_at = time.monotonic()
            cluster.kill_master(victim)
            cluster.wait_failover(victim.port)
            failed_over = time.monotonic() - killed_at
            traffic.wait(300)
            cluster.restart(victim)  # back as a replica: outcomes can be on two copies again
            traffic.wait(300, outcomes=20)
        finally:
            traffic.stop.set()
            for t in threads:
                t.join(30)
        logs = "\n".join(s.log()[-2000:] for s in fleet.replicas)
    report = {
        "failover_s": round(failed_over, 2),
        "decisions": dict(traffic.decisions),
        "degraded_window_s": round(traffic.degraded_at[-1] - traffic.degraded_at[0], 2)
        if traffic.degraded_at
        else 0.0,
        "outcomes": dict(traffic.outcomes),
    }
    print("failover:", json.dumps(report))
    (tmp_path / "failover.json").write_text(json.dumps(report))
    assert set(traffic.decisions) <= {"OK", "degraded"}, f"{report}\n{logs}"
    assert traffic.decisions["OK"] > 600
    assert traffic.outcomes["OK"] >= 40, report
    with admin(cluster) as client:
        logged = {entry_id for entry_id, _ in client.xrange(OUTCOME_STREAM)}
    lost = set(traffic.acknowledged) - logged
    assert not lost, f"{len(lost)} acknowledged outcomes lost of {len(traffic.acknowledged)}"


# --- what needs a plain Redis ----------------------------------------------------------


def test_guidance_and_notices_say_they_need_a_plain_redis(
    redis_cluster: LocalCluster, tmp_path: Path
) -> None:
    load_demo(redis_cluster.url, generated=0)
    with running_fleet(tmp_path, redis_cluster.url) as fleet:
        fleet_server = fleet.replicas[0]
        with fleet_server.channel() as ch:
            with pytest.raises(grpc.RpcError) as raised:
                pb_grpc.NoticeServiceStub(ch).PublishEvent(pb.BusinessEvent(), timeout=5)
            assert raised.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert "plain Redis" in str(raised.value.details())
            with pytest.raises(grpc.RpcError) as raised:
                pb_grpc.GuidanceServiceStub(ch).PublishEvents(pb.PublishEventsRequest(), timeout=5)
            assert raised.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            # Decide on the same server answers.
            reply = pb_grpc.DecisionServiceStub(ch).Decide(
                pb.DecideRequest(customer_id="C-1001",
                                 context=pb.InteractionContext(channel=pb.CHANNEL_VOICE,
                                                               intent="cancel")),
                timeout=5,
            )  # fmt: skip
            assert reply.routing.queue == "retention_specialists"


def test_serve_on_a_cluster_asks_for_no_moment_or_notice_processes(tmp_path: Path) -> None:
    url = "redis+cluster://127.0.0.1:7000,127.0.0.1:7001"
    with pytest.raises(ConfigError, match="--moment-workers 0 --notice-workers 0"):
        Settings(rules_dir=RULES, redis_url=url)
    with pytest.raises(ConfigError, match="needs a Redis Cluster --redis-url"):
        Settings(rules_dir=RULES, redis_url="redis://x:1", outcomes_redis_url=url,
                 moment_workers=0, notice_workers=0)  # fmt: skip
    assert Settings(rules_dir=RULES, redis_url=url, moment_workers=0, notice_workers=0)
