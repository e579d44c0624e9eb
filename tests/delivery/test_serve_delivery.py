"""Notices end to end in a real `serve`: PublishEvent → the notice process → a real
webhook → the next Decide. Nothing is lost, and nothing reaches the webhook twice except
under one idempotency key, when the notice process or the durable Redis is killed -9."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import redis

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from decision_engine.decide.notices import SEND, BusinessEvent, plan_notices
from decision_engine.ruleset.compiled import load_compiled
from decision_engine.store.embedded import EmbeddedRedis
from decision_engine.store.keys import NOTICE_HELD, NOTICE_OUTBOX, OUTBOX_GROUP, profile_key
from decision_engine.store.notices import notice_key
from tests.delivery.support import WebhookThread
from tests.server.conftest import RULES, Server, child_named, load_demo, start_server

SECRET = "e2e-webhook-secret"
CUSTOMERS = 300
RULESET = load_compiled(RULES)


@dataclass
class Rig:
    server: Server
    webhook: WebhookThread
    durable: EmbeddedRedis
    decision_url: str


@pytest.fixture
def rig(tmp_path: Path, redis_url: str) -> Iterator[Rig]:
    load_demo(redis_url, generated=CUSTOMERS)
    durable = EmbeddedRedis(data_dir=tmp_path / "durable", fsync="always").start()
    rig = None
    try:
        with WebhookThread(SECRET) as webhook:
            server = start_server(
                tmp_path, "--rules", str(RULES), "--redis-url", redis_url,
                "--outcomes-redis-url", durable.url, "--notice-senders", f"*={webhook.url}",
                notice_workers=1, env={"DECISION_ENGINE_WEBHOOK_SECRET": SECRET},
            )  # fmt: skip
            rig = Rig(server, webhook, durable, redis_url)
            try:
                yield rig
            finally:
                assert server.stop() == 0, server.log()
    finally:
        (rig.durable if rig else durable).stop()


def card_event(customer: str, event_id: str) -> pb.BusinessEvent:
    return pb.BusinessEvent(
        event_id=event_id, type="card_compromised", customer_id=customer,
        attributes={"card_last4": "4242"},
    )  # fmt: skip


def expected_keys(url: str, customers: list[str], prefix: str) -> set[str]:
    """What the pure planner sends these customers (most get an SMS, some app or e-mail,
    those without consent nothing)."""
    client = redis.Redis.from_url(url, decode_responses=True)
    keys = set()
    for customer in customers:
        event = BusinessEvent(f"{prefix}{customer}", "card_compromised", time.time(),
                              {"card_last4": "4242"}, customer)  # fmt: skip
        profile = client.hgetall(profile_key(customer)) or None
        for plan in plan_notices(RULESET, event, profile, (), now=time.time()):
            if plan.status == SEND:
                keys.add(notice_key(event.event_id, plan.notice_id, customer, plan.channel))
    return keys


def publish_many(server: Server, customers: list[str], prefix: str) -> None:
    with server.channel() as channel:
        stub = pb_grpc.NoticeServiceStub(channel)
        for start in range(0, len(customers), 100):
            batch = [card_event(c, f"{prefix}{c}") for c in customers[start : start + 100]]
            reply = stub.PublishBusinessEvents(
                pb.PublishBusinessEventsRequest(events=batch), timeout=10
            )
            assert {e.status for e in reply.events} == {pb.EVENT_STATUS_ACCEPTED}


def settled(url: str, prefix: str) -> tuple[int, int, int]:
    """Notices of these events still on the outbox, pending, held (the key-date sweep at
    start may hold a renewal for a customer whose quiet hours it is)."""
    client = redis.Redis.from_url(url, decode_responses=True)
    waiting = [f for _, f in client.xrange(NOTICE_OUTBOX) if f.get("key", "").startswith(prefix)]
    pending = client.xpending(NOTICE_OUTBOX, OUTBOX_GROUP)["pending"]
    held = [m for m in client.zrange(NOTICE_HELD, 0, -1) if json.loads(m)["key"].startswith(prefix)]
    return len(waiting), pending, len(held)


def assert_settled(url: str, prefix: str, timeout: float = 60) -> None:
    """Nothing of these notices left anywhere (a retry may still be due: wait for it)."""
    deadline = time.monotonic() + timeout
    while settled(url, prefix) != (0, 0, 0) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert settled(url, prefix) == (0, 0, 0)


def assert_delivered_once_per_key(
    rig: Rig, expected: set[str], prefix: str, timeout: float = 90
) -> None:
    delivered = rig.webhook.wait_for(len(expected), timeout, prefix)
    keys = rig.webhook.keys(prefix)
    assert delivered, f"{len(set(keys))} of {len(expected)}:\n{rig.server.log()[-3000:]}"
    assert set(keys) == expected  # nothing lost, nothing made up
    assert rig.webhook.all_signed()
    bodies = {b["key"]: b for b in rig.webhook.bodies(prefix)}
    assert all(bodies[k]["text"] and bodies[k]["customer_id"] in k for k in expected)


def test_an_event_reaches_the_webhook_and_the_next_decide_knows(rig: Rig) -> None:
    with rig.server.channel() as channel:
        notices = pb_grpc.NoticeServiceStub(channel)
        reply = notices.PublishEvent(card_event("C-1001", "fraud-e2e"), timeout=5)
        assert reply.status == pb.EVENT_STATUS_ACCEPTED
        # (The key-date sweep at start sends contract-renewal notices too.)
        assert rig.webhook.wait_for(1, 30, "fraud-e2e/"), rig.server.log()
        (body,) = rig.webhook.bodies("fraud-e2e/")
        assert body["key"] == "fraud-e2e/card_compromised/C-1001/sms"
        assert body["address"] == "+31 6 1000 1001" and "4242" in body["text"]
        assert rig.webhook.all_signed()

        decide = pb_grpc.DecisionServiceStub(channel)
        context = pb.InteractionContext(channel=pb.CHANNEL_VOICE, intent="general_inquiry")
        request = pb.DecideRequest(customer_id="C-1001", context=context)
        deadline = time.monotonic() + 10
        while True:  # the log says `sent` once the worker has settled the entry
            answer = decide.Decide(request, timeout=5)
            statuses = {n.notice_id: n.status for n in answer.notices}
            if statuses.get("card_compromised") == "sent" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert statuses == {"card_compromised": "sent"}
        assert answer.routing.queue == "card_security"  # notified: straight to card security

        notices.RecordNoticeReceipt(
            pb.NoticeReceipt(key=body["key"], status="delivered", provider_ref="sms-1"), timeout=5
        )
        answer = decide.Decide(request, timeout=5)
        assert [(n.notice_id, n.status) for n in answer.notices] == [
            ("card_compromised", "delivered")
        ]
        with pytest.raises(grpc.RpcError) as unknown:
            notices.RecordNoticeReceipt(pb.NoticeReceipt(key="nope", status="delivered"), timeout=5)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    metrics = rig.server.metrics()
    assert 'notice_deliveries_total{channel="sms",result="delivered",sender="webhook"}' in metrics
    assert "notice_delivery_latency_seconds_bucket" in metrics


@pytest.mark.slow
def test_kill_9_of_the_notice_process_loses_nothing(rig: Rig) -> None:
    customers = [f"C-{n:06d}" for n in range(1, CUSTOMERS + 1)]
    expected = expected_keys(rig.decision_url, customers, "k9-")
    assert len(expected) > CUSTOMERS // 2
    first = child_named(rig.server, "notices-0")
    # The webhook answers 50 calls, then holds the rest: the worker dies with notices
    # sent but not settled, which its successor sends again, under the same keys.
    rig.webhook.hold_after = len(rig.webhook.keys()) + 50
    publish_many(rig.server, customers, "k9-")
    assert rig.webhook.wait_held(30), rig.server.log()
    os.kill(first, signal.SIGKILL)
    before = set(rig.webhook.keys("k9-"))
    rig.webhook.release()
    child_named(rig.server, "notices-0", not_pid=first)

    assert_delivered_once_per_key(rig, expected, "k9-")
    assert len(before) < len(expected)
    keys = rig.webhook.keys("k9-")
    assert len(keys) > len(set(keys))  # the crash window was hit: repeats, one key each
    assert "notice process 0 (pid" in rig.server.log() and "exited with -9" in rig.server.log()
    assert_settled(rig.durable.url, "k9-")


@pytest.mark.slow
def test_kill_9_of_the_durable_redis_loses_nothing(rig: Rig) -> None:
    customers = [f"C-{n:06d}" for n in range(1, CUSTOMERS + 1)]
    expected = expected_keys(rig.decision_url, customers, "rk-")
    with redis.Redis.from_url(rig.durable.url) as client:
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        redis_pid = int(client.info("server")["process_id"])
    rig.webhook.hold_after = len(rig.webhook.keys()) + 50
    publish_many(rig.server, customers, "rk-")  # acknowledged: on disk before the reply
    assert rig.webhook.wait_held(30), rig.server.log()
    os.kill(redis_pid, signal.SIGKILL)
    before = set(rig.webhook.keys("rk-"))
    rig.webhook.release()
    old = rig.durable
    time.sleep(0.5)
    rig.durable = EmbeddedRedis(data_dir=old.data_dir, port=old.port, fsync="always").start()
    assert len(before) < len(expected)

    assert_delivered_once_per_key(rig, expected, "rk-")
    assert_settled(rig.durable.url, "rk-")
