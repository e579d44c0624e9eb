"""RecordOutcome end to end, and what outcomes and caps do to later decisions.

Real redis-server, real `decision-engine serve` processes with two workers; what the
service promises is checked both over gRPC and in Redis itself.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
import yaml
from google.protobuf.timestamp_pb2 import Timestamp

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from decision_engine.ruleset.load import load_schema
from decision_engine.store.embedded import EmbeddedRedis
from decision_engine.store.importer import canonical_profile
from decision_engine.store.keys import (
    OFFER_STATS,
    OUTCOME_STREAM,
    cap_key,
    history_key,
    profile_key,
)
from decision_engine.store.profiles import cap_day
from tests.server.conftest import RULES, Server, start_server

Stub = pb_grpc.DecisionServiceStub
UPGRADE = "upgrade-premium-plan"
DEVICE = "device-upgrade"
# Keep each worker on its own connection: a fresh channel per call may reach either worker.
LOCAL_POOL = [("grpc.use_local_subchannel_pool", 1)]


def decide(
    stub: Stub, customer: str, intent: str = "general_inquiry", **extra: Any
) -> pb.DecideResponse:
    context = pb.InteractionContext(channel=pb.CHANNEL_VOICE, intent=intent)
    return stub.Decide(pb.DecideRequest(customer_id=customer, context=context, **extra), timeout=5)


def record(
    stub: Stub,
    decision_id: str,
    offer_id: str = "",
    outcome: int = pb.OUTCOME_PRESENTED,
    **extra: Any,
) -> pb.RecordOutcomeResponse:
    request = pb.RecordOutcomeRequest(
        decision_id=decision_id, offer_id=offer_id, outcome=outcome, **extra
    )
    return stub.RecordOutcome(request, timeout=5)


def offer_ids(response: pb.DecideResponse) -> list[str]:
    return [o.offer_id for o in response.offers]


def rules_with(tmp: Path, changes: dict[str, dict[str, Any]]) -> Path:
    """A copy of the demo rules where the offers named in `changes` get extra keys."""
    rules = tmp / "rules"
    shutil.copytree(RULES, rules, ignore=shutil.ignore_patterns("tests"))
    pending = dict(changes)
    for path in sorted(rules.glob("*.y*ml")):
        doc = yaml.safe_load(path.read_text())
        if not isinstance(doc, dict) or not isinstance(doc.get("offers"), list):
            continue
        touched = False
        for offer in doc["offers"]:
            if offer.get("id") in pending:
                offer.update(pending.pop(offer["id"]))
                touched = True
        if touched:
            path.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert not pending, f"offers not found in {RULES}: {sorted(pending)}"
    return rules


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url, decode_responses=True) as r:
        yield r


# --------------------------------------------------------------------------- happy path


@pytest.mark.usefixtures("demo_data")
def test_outcomes_are_logged_counted_and_deduplicated(stub: Stub, client: redis.Redis) -> None:
    d = decide(stub, "C-1001", "cancel")
    assert d.offers and not d.degraded
    offer = d.offers[0].offer_id
    before = time.time()

    # Sent right after Decide: the decision record may still be on its way (retry covers it).
    first = record(stub, d.decision_id, offer, pb.OUTCOME_PRESENTED)
    assert not first.duplicate and first.outcome_id
    again = record(stub, d.decision_id, offer, pb.OUTCOME_PRESENTED)
    assert again.duplicate and again.outcome_id == ""
    accepted = record(stub, d.decision_id, offer, pb.OUTCOME_ACCEPTED)
    assert not accepted.duplicate and accepted.outcome_id
    assert accepted.outcome_id != first.outcome_id
    after = time.time()

    entries = client.xrange(OUTCOME_STREAM)
    assert [entry_id for entry_id, _ in entries] == [first.outcome_id, accepted.outcome_id]
    for (_, fields), outcome in zip(entries, ["presented", "accepted"], strict=True):
        assert fields["decision"] == d.decision_id
        assert fields["customer"] == "C-1001"
        assert fields["offer"] == offer
        assert fields["outcome"] == outcome
        assert fields["channel"] == "voice"  # the decision's, as none was sent
        assert fields["ruleset"] == d.ruleset_version
        assert before - 1 <= float(fields["at"]) <= after + 1

    stats = client.hgetall(OFFER_STATS)
    assert stats[f"{offer}|presented"] == "1", "the duplicate must not count"
    assert stats[f"{offer}|accepted"] == "1"

    events = client.hget(history_key("C-1001"), offer)
    assert events is not None
    parsed = [item.split("|") for item in events.split(";")]
    assert [outcome for _, outcome, _ in parsed] == ["presented", "accepted"]
    assert all(before - 1 <= float(at) <= after + 1 for at, _, _ in parsed)
    assert client.pttl(history_key("C-1001")) > 0, "offer history must expire"

    # An interaction outcome: no offer id, logged, no offer history or offer counters.
    offer_stats = {k: v for k, v in stats.items() if k.startswith(f"{offer}|")}
    resolved = record(stub, d.decision_id, "", pb.OUTCOME_RESOLVED, reason="fixed")
    assert not resolved.duplicate and resolved.outcome_id
    assert record(stub, d.decision_id, "", pb.OUTCOME_RESOLVED).duplicate
    last_id, last = client.xrange(OUTCOME_STREAM)[-1]
    assert last_id == resolved.outcome_id
    assert (last["offer"], last["outcome"], last["reason"]) == ("", "resolved", "fixed")
    assert client.xlen(OUTCOME_STREAM) == 3
    assert client.hget(history_key("C-1001"), offer) == events
    after_stats = client.hgetall(OFFER_STATS)
    assert {k: v for k, v in after_stats.items() if k.startswith(f"{offer}|")} == offer_stats


@pytest.mark.usefixtures("demo_data")
def test_a_decision_id_that_was_not_issued_here_is_unknown(stub: Stub, client: redis.Redis) -> None:
    d = decide(stub, "C-1007")
    offer = d.offers[0].offer_id
    body, _, signature = d.decision_id.partition(".")
    # Another customer's id with this decision's signature, and a garbled signature.
    other = decide(stub, "C-1001").decision_id.partition(".")[0]
    for forged in (f"{other}.{signature}", f"{body}.{signature[::-1]}", body):
        with pytest.raises(grpc.RpcError) as caught:
            record(stub, forged, offer, pb.OUTCOME_DECLINED)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert client.xlen(OUTCOME_STREAM) == 0
    assert not record(stub, d.decision_id, offer, pb.OUTCOME_DECLINED).duplicate


# --------------------------------------------------------------------------- validation


def _future(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int((time.time() + seconds) * 1e9))
    return ts


@pytest.mark.usefixtures("demo_data")
def test_invalid_outcomes_are_refused_and_write_nothing(stub: Stub, client: redis.Redis) -> None:
    d = decide(stub, "C-1001", "cancel")
    offer = d.offers[0].offer_id
    not_returned = "card-replacement-express"
    assert not_returned not in offer_ids(d)
    stats_before = client.hgetall(OFFER_STATS)

    cases: list[tuple[dict[str, Any], grpc.StatusCode, str]] = [
        ({"decision_id": "0" * 28, "offer_id": offer, "outcome": pb.OUTCOME_PRESENTED},
         grpc.StatusCode.NOT_FOUND, "decision 0000"),
        ({"decision_id": d.decision_id, "offer_id": not_returned, "outcome": pb.OUTCOME_PRESENTED},
         grpc.StatusCode.INVALID_ARGUMENT, "offer_id:"),
        ({"decision_id": d.decision_id, "offer_id": offer},
         grpc.StatusCode.INVALID_ARGUMENT, "outcome:"),
        ({"decision_id": d.decision_id, "outcome": pb.OUTCOME_DECLINED},
         grpc.StatusCode.INVALID_ARGUMENT, "offer_id:"),
        ({"decision_id": d.decision_id, "offer_id": offer, "outcome": pb.OUTCOME_RESOLVED},
         grpc.StatusCode.INVALID_ARGUMENT, "offer_id:"),
        ({"decision_id": d.decision_id, "offer_id": offer, "outcome": pb.OUTCOME_ACCEPTED,
          "occurred_at": _future(86_400)},
         grpc.StatusCode.INVALID_ARGUMENT, "occurred_at:"),
        ({"offer_id": offer, "outcome": pb.OUTCOME_PRESENTED},
         grpc.StatusCode.INVALID_ARGUMENT, "decision_id:"),
    ]  # fmt: skip
    for fields, code, prefix in cases:
        with pytest.raises(grpc.RpcError) as caught:
            stub.RecordOutcome(pb.RecordOutcomeRequest(**fields), timeout=5)
        assert caught.value.code() == code, (fields, caught.value.details())
        assert caught.value.details().startswith(prefix), (fields, caught.value.details())

    assert client.xlen(OUTCOME_STREAM) == 0
    assert client.hgetall(OFFER_STATS) == stats_before
    assert not client.exists(history_key("C-1001"))

    ok = record(stub, d.decision_id, "", pb.OUTCOME_RESOLVED)
    assert not ok.duplicate and ok.outcome_id
    assert client.xlen(OUTCOME_STREAM) == 1


# --------------------------------------------------------------------------- contact policy


@pytest.fixture
def policy_server(redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[Server]:
    rules = rules_with(tmp_path, {UPGRADE: {"contact_policy": {"suppress_after_decline_days": 30}}})
    srv = start_server(tmp_path, "--rules", str(rules), "--redis-url", redis_server.url,
                       "--redis-timeout-ms", "5000")  # fmt: skip
    yield srv
    assert srv.stop() == 0, srv.log()


def _channels_on_both_workers(target: str, at_least: int) -> list[tuple[int, grpc.Channel]]:
    """Fresh connections, (worker pid, channel), until both workers answered on some."""
    channels: list[tuple[int, grpc.Channel]] = []
    for _ in range(60):
        channel = grpc.insecure_channel(target, options=LOCAL_POOL)
        pid = pb_grpc.AdminServiceStub(channel).GetRuleset(pb.GetRulesetRequest(), timeout=5)
        channels.append((pid.worker_pid, channel))
        if len(channels) >= at_least and len({p for p, _ in channels}) == 2:
            break
    return channels


@pytest.mark.usefixtures("demo_data")
def test_a_decline_suppresses_the_offer_on_every_worker(
    policy_server: Server, client: redis.Redis
) -> None:
    for stub in policy_server.stub():
        d = decide(stub, "C-1007")
        assert UPGRADE in offer_ids(d), offer_ids(d)
        assert not record(stub, d.decision_id, UPGRADE, pb.OUTCOME_PRESENTED).duplicate
        assert not record(stub, d.decision_id, UPGRADE, pb.OUTCOME_DECLINED).duplicate

    channels = _channels_on_both_workers(policy_server.target, at_least=6)
    try:
        assert len({pid for pid, _ in channels}) == 2, "both workers must have answered"
        for pid, channel in channels:
            r = decide(pb_grpc.DecisionServiceStub(channel), "C-1007", explain=True)
            assert UPGRADE not in offer_ids(r), (pid, offer_ids(r))
            assert r.offers, f"worker {pid}: other offers must still be proposed"
            (why,) = [
                e
                for e in r.explanations
                if e.kind == pb.RuleExplanation.KIND_OFFER and e.rule_id == UPGRADE
            ]
            assert not why.matched
            assert f"{UPGRADE}/contact-policy" in why.detail and "declined" in why.detail, why
    finally:
        for _, channel in channels:
            channel.close()
    # Another customer who never declined still gets it.
    for stub in policy_server.stub():
        assert UPGRADE in offer_ids(decide(stub, "C-1003"))


@pytest.mark.usefixtures("demo_data")
def test_a_decline_stamped_slightly_ahead_still_suppresses(policy_server: Server) -> None:
    """Regression: contact.py once ignored declines with `at` after the server's clock."""
    for stub in policy_server.stub():
        d = decide(stub, "C-1007")
        assert UPGRADE in offer_ids(d)
        # The desktop's clock runs a minute fast: the request is valid and acknowledged...
        ack = record(stub, d.decision_id, UPGRADE, pb.OUTCOME_DECLINED, occurred_at=_future(60))
        assert ack.outcome_id
        # ...so the customer must not hear the offer again on the next call.
        assert UPGRADE not in offer_ids(decide(stub, "C-1007"))


# --------------------------------------------------------------------------- daily caps

CAPPED_CUSTOMERS = 300


def load_upgrade_population(client: redis.Redis, count: int) -> list[str]:
    """Customers whose best offer on a general voice call is the premium upgrade."""
    schema = load_schema(RULES)
    ids = [f"CAP-{i:04d}" for i in range(count)]
    with client.pipeline(transaction=False) as pipe:
        for customer_id in ids:
            _, fields = canonical_profile(
                {"customer_id": customer_id, "clv": 20000, "churn_risk": 0.1, "plan": "basic",
                 "tenure_months": 30, "segment": "gold"},
                schema,
            )  # fmt: skip
            pipe.hset(profile_key(customer_id), mapping=fields)
        pipe.execute()
    return ids


async def _decide_all(
    target: str, customers: list[str], concurrency: int
) -> tuple[list[Any], set[int]]:
    """Every customer's decision, `concurrency` at a time over 8+ connections; the workers seen."""
    channels: list[grpc.aio.Channel] = []
    pids: set[int] = set()
    try:
        # The server is SERVING once one worker is; under load the other may be seconds away.
        deadline = time.monotonic() + 30
        while len(channels) < 8 or (len(pids) < 2 and time.monotonic() < deadline):
            if len(channels) >= 8 and len(pids) < 2:
                await asyncio.sleep(0.05)
            channel = grpc.aio.insecure_channel(target, options=LOCAL_POOL)
            channels.append(channel)
            status = await pb_grpc.AdminServiceStub(channel).GetRuleset(
                pb.GetRulesetRequest(), timeout=5
            )
            pids.add(status.worker_pid)
        stubs = [pb_grpc.DecisionServiceStub(c) for c in channels]
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(customers)):
            queue.put_nowait(i)
        results: list[Any] = [None] * len(customers)
        start = asyncio.Event()

        async def worker(n: int) -> None:
            stub = stubs[n % len(stubs)]
            await start.wait()
            while not queue.empty():
                i = queue.get_nowait()
                context = pb.InteractionContext(channel=pb.CHANNEL_VOICE, intent="general_inquiry")
                try:
                    results[i] = await stub.Decide(
                        pb.DecideRequest(customer_id=customers[i], context=context), timeout=10
                    )
                except grpc.aio.AioRpcError as exc:
                    results[i] = exc

        tasks = [asyncio.create_task(worker(n)) for n in range(concurrency)]
        start.set()
        await asyncio.gather(*tasks)
        return results, pids
    finally:
        for channel in channels:
            await channel.close()


def _decide_population(
    server: Server, customers: list[str], concurrency: int = 32
) -> list[pb.DecideResponse]:
    results, pids = asyncio.run(_decide_all(server.target, customers, concurrency))
    assert len(pids) == 2, f"both workers must serve the load, saw {pids}:\n{server.log()}"
    failed = [r for r in results if not isinstance(r, pb.DecideResponse)]
    assert not failed, failed[:3]
    assert all(r.profile_found and not r.degraded for r in results)
    return results


@pytest.fixture
def cap_server(redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[Server]:
    rules = rules_with(tmp_path, {UPGRADE: {"daily_cap": 25}})
    # What is checked is the caps, not the read budget: a machine busy with other work
    # must not turn answers degraded (a degraded answer takes no cap).
    srv = start_server(tmp_path, "--rules", str(rules), "--redis-url", redis_server.url,
                       "--redis-timeout-ms", "5000")  # fmt: skip
    yield srv
    assert srv.stop() == 0, srv.log()


def test_a_daily_cap_is_exact_under_concurrent_load_on_two_workers(
    cap_server: Server, client: redis.Redis
) -> None:
    customers = load_upgrade_population(client, CAPPED_CUSTOMERS)
    # Without the cap, the upgrade is every one of these customers' best offer.
    for stub in cap_server.stub():
        probe = decide(stub, customers[0])
        assert offer_ids(probe)[0] == UPGRADE
    client.delete(cap_key(UPGRADE, cap_day(time.time())))

    results = _decide_population(cap_server, customers)
    day = cap_day(time.time())
    got = Counter(UPGRADE in offer_ids(r) for r in results)
    assert got[True] == 25, got
    assert client.get(cap_key(UPGRADE, day)) == "25"
    assert 0 < client.ttl(cap_key(UPGRADE, day)) <= 2 * 86_400
    others = [r for r in results if UPGRADE not in offer_ids(r)]
    assert len(others) == CAPPED_CUSTOMERS - 25
    assert all(r.offers for r in others), "the rest must get other offers"
    assert {o.offer_id for r in others for o in r.offers} >= {DEVICE, "streaming-bundle"}


@pytest.fixture
def two_caps_server(redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[Server]:
    rules = rules_with(tmp_path, {UPGRADE: {"daily_cap": 1}, DEVICE: {"daily_cap": 100_000}})
    srv = start_server(tmp_path, "--rules", str(rules), "--redis-url", redis_server.url,
                       "--redis-timeout-ms", "5000")  # fmt: skip
    yield srv
    assert srv.stop() == 0, srv.log()


def test_each_unit_of_a_cap_is_an_offer_shown(two_caps_server: Server, client: redis.Redis) -> None:
    """Two capped offers in one decision; the scarce one is raced for in waves.

    Regression: a request denied one capped offer decided again and reserved the other
    capped offers a second time (and never gave back budget it ended up not using).
    """
    customers = load_upgrade_population(client, 200)
    waves = 5
    shown: Counter[str] = Counter()
    for wave in range(waves):
        # A fresh budget of one, and 40 customers asking for it at the same moment.
        client.delete(cap_key(UPGRADE, cap_day(time.time())))
        batch = customers[wave * 40 : (wave + 1) * 40]
        results = _decide_population(two_caps_server, batch, concurrency=len(batch))
        wave_shown = Counter(o.offer_id for r in results for o in r.offers)
        assert wave_shown[UPGRADE] == 1, wave_shown
        shown += wave_shown
    day = cap_day(time.time())
    assert shown[DEVICE] == len(customers), "the device offer's budget is large enough for all"
    # The counter is "how many customers got the offer today": nothing else may spend it.
    assert client.get(cap_key(DEVICE, day)) == str(shown[DEVICE])
