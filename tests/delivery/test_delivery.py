"""The delivery worker against a real Redis and a real webhook: delivered once, retried
with backoff, dead-lettered, revived from the CLI, claimed after a crash."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import redis
from click.testing import CliRunner

from decision_engine.cli import main as cli
from decision_engine.delivery.base import Sender
from decision_engine.delivery.webhook import WebhookSender
from decision_engine.server.delivery_loop import Backoff, DeliveryWorker
from decision_engine.store.connection import PipelinedConnection
from decision_engine.store.keys import (
    NOTICE_DEAD,
    NOTICE_HELD,
    NOTICE_OUTBOX,
    OUTBOX_GROUP,
    notice_log_key,
)
from decision_engine.store.notice_log import log_write, write_notice_log
from decision_engine.store.outbox import OutboxEntry, flat, held_member
from tests.delivery.support import Receiver, entry, receiving

SECRET = "test-secret"
T0 = 1_767_000_000.0


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class Run:
    """A worker (or two) with a webhook sender, on the test Redis."""

    url: str
    receiver: Receiver
    clock: Clock = field(default_factory=Clock)
    connections: list[PipelinedConnection] = field(default_factory=list)
    senders: list[Sender] = field(default_factory=list)

    def worker(self, consumer: str = "delivery-test", **options: Any) -> DeliveryWorker:
        conn, reader = PipelinedConnection(self.url), PipelinedConnection(self.url)
        self.connections += [conn, reader]
        sender: Sender = WebhookSender(self.receiver.url, secret=SECRET, timeout=2.0)
        self.senders.append(sender)
        options.setdefault("backoff", Backoff(first_s=10.0, jitter=0.0))
        return DeliveryWorker(
            {"sms": sender, "email": sender}, durable=conn, reader=reader, decision=conn,
            consumer=consumer, block_ms=20, clock=self.clock, **options,
        )  # fmt: skip

    async def drain(self, worker: DeliveryWorker) -> int:
        total = 0
        while n := await worker.step():
            total += n
        return total

    async def close(self) -> None:
        for conn in self.connections:
            await conn.aclose()
        for sender in self.senders:
            await sender.aclose()


def with_worker(url: str, work: Callable[[Run], Awaitable[None]], status: int = 200) -> None:
    async def main() -> None:
        async with receiving(Receiver(status=status)) as receiver:
            run = Run(url, receiver)
            try:
                await work(run)
            finally:
                await run.close()

    asyncio.run(main())


def notice(n: int = 1, **changes: Any) -> OutboxEntry:
    fields: dict[str, Any] = {
        "key": f"evt-{n}/card_compromised/C-{n}/sms", "customer_id": f"C-{n}",
        "event_id": f"evt-{n}", "notice_id": "card_compromised", "channel": "sms",
        "address": "+31 6 1", "attempt": 0, "decided_at": T0,
    }  # fmt: skip
    return entry(**{**fields, **changes})


def enqueue(url: str, *entries: OutboxEntry) -> None:
    client = redis.Redis.from_url(url, decode_responses=True)
    for e in entries:
        client.xadd(NOTICE_OUTBOX, dict(zip(flat(e)[::2], flat(e)[1::2], strict=True)))
        # What the notice process writes first: the log record the worker moves on.
        record = {"key": e.key, "status": "queued", "at": T0, "updated": T0,
                  "channel": e.channel, "text": e.text}  # fmt: skip
        client.hset(notice_log_key(e.customer_id), e.notice_id, json.dumps(record))


def log_of(url: str, customer: str, notice_id: str = "card_compromised") -> dict[str, Any]:
    client = redis.Redis.from_url(url, decode_responses=True)
    raw = client.hget(notice_log_key(customer), notice_id)
    return json.loads(raw) if raw else {}


def test_a_notice_is_posted_once_signed_and_the_log_says_sent(redis_url: str) -> None:
    enqueue(redis_url, notice(1), notice(2))

    async def work(run: Run) -> None:
        worker = run.worker()
        assert await run.drain(worker) == 2
        assert worker.counts.delivered == 2

    with_worker(redis_url, work)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert client.xlen(NOTICE_OUTBOX) == 0  # delivered entries are dropped
    assert client.xpending(NOTICE_OUTBOX, OUTBOX_GROUP)["pending"] == 0
    record = log_of(redis_url, "C-1")
    assert record["status"] == "sent" and record["provider_ref"].startswith("prov-")
    assert record["channel"] == "sms" and record["at"] == T0


def test_a_redelivered_notice_is_not_posted_again(redis_url: str) -> None:
    enqueue(redis_url, notice(1))

    async def work(run: Run) -> None:
        worker = run.worker()
        await run.drain(worker)
        enqueue(redis_url, notice(1))  # the same notice again, as after a crash
        await run.drain(worker)
        assert worker.counts.already_delivered == 1
        assert len(run.receiver.requests) == 1

    with_worker(redis_url, work)


def test_a_5xx_is_retried_after_the_backoff_then_delivered(redis_url: str) -> None:
    enqueue(redis_url, notice(1))
    client = redis.Redis.from_url(redis_url, decode_responses=True)

    async def work(run: Run) -> None:
        worker = run.worker()
        await run.drain(worker)
        assert worker.counts.retried == 1
        ((member, due),) = client.zrange(NOTICE_HELD, 0, -1, withscores=True)
        assert due == T0 + 10.0 and json.loads(member)["attempt"] == "1"
        assert json.loads(member)["last_error"] == "HTTP 503"
        assert log_of(redis_url, "C-1")["status"] == "queued"

        run.receiver.status = 200
        run.clock.now = T0 + 9.0  # not yet due
        await run.drain(worker)
        assert len(run.receiver.requests) == 1
        run.clock.now = T0 + 10.0
        await run.drain(worker)
        assert len(run.receiver.requests) == 2
        assert json.loads(run.receiver.requests[1][1])["attempt"] == 1

    with_worker(redis_url, work, status=503)
    assert client.zcard(NOTICE_HELD) == 0 and client.xlen(NOTICE_OUTBOX) == 0
    assert log_of(redis_url, "C-1")["status"] == "sent"


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(first_s=2.0, factor=2.0, max_s=60.0, jitter=0.5)
    assert [backoff.delay(a, 0.0) for a in (1, 2, 3, 6, 9)] == [2.0, 4.0, 8.0, 60.0, 60.0]
    assert backoff.delay(2, 1.0) == 6.0  # at most half again, at random


def test_after_max_attempts_a_dead_letter_the_cli_lists_and_retries(redis_url: str) -> None:
    enqueue(redis_url, notice(1))
    client = redis.Redis.from_url(redis_url, decode_responses=True)

    async def work(run: Run) -> None:
        worker = run.worker(max_attempts=3)
        for attempt in range(3):
            run.clock.now = T0 + 1000.0 * attempt
            await run.drain(worker)
        assert len(run.receiver.requests) == 3 and worker.counts.dead_lettered == 1

    with_worker(redis_url, work, status=503)
    assert client.xlen(NOTICE_DEAD) == 1 and client.zcard(NOTICE_HELD) == 0
    assert log_of(redis_url, "C-1")["status"] == "dead_lettered"
    runner = CliRunner()
    listed = runner.invoke(cli, ["notices", "dead-letters", "--redis-url", redis_url])
    assert listed.exit_code == 0, listed.output
    assert "card_compromised via sms, 3 attempt(s)" in listed.output and "HTTP 503" in listed.output
    status = runner.invoke(cli, ["notices", "status", "--redis-url", redis_url])
    assert "0 waiting" in status.output and "1 dead letters" in status.output
    unknown = runner.invoke(cli, ["notices", "retry", "1-1", "--redis-url", redis_url])
    assert unknown.exit_code == 1 and "no dead letter with id 1-1" in unknown.output
    retried = runner.invoke(cli, ["notices", "retry", "--all", "--redis-url", redis_url])
    assert retried.exit_code == 0 and "1 notice(s) back on the outbox" in retried.output
    assert client.xlen(NOTICE_DEAD) == 0 and client.xlen(NOTICE_OUTBOX) == 1

    async def deliver(run: Run) -> None:
        await run.drain(run.worker())
        assert json.loads(run.receiver.requests[0][1])["attempt"] == 0  # attempts reset

    with_worker(redis_url, deliver)
    assert log_of(redis_url, "C-1")["status"] == "sent"


def test_a_4xx_is_not_retried(redis_url: str) -> None:
    enqueue(redis_url, notice(1))

    async def work(run: Run) -> None:
        worker = run.worker()
        await run.drain(worker)
        assert worker.counts.rejected == 1 and len(run.receiver.requests) == 1

    with_worker(redis_url, work, status=400)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert client.xlen(NOTICE_DEAD) == 1
    assert log_of(redis_url, "C-1")["status"] == "rejected"


def test_a_channel_without_sender_and_an_unreadable_entry_are_dead_letters(
    redis_url: str,
) -> None:
    enqueue(redis_url, notice(1, channel="pigeon"))
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.xadd(NOTICE_OUTBOX, {"what": "not a notice"})

    async def work(run: Run) -> None:
        await run.drain(run.worker())
        assert run.receiver.requests == []

    with_worker(redis_url, work)
    reasons = sorted(f["last_error"] for _, f in client.xrange(NOTICE_DEAD))
    assert reasons == ["no sender for channel 'pigeon'", "unreadable: key: missing"]


def test_entries_of_a_crashed_worker_are_claimed_and_its_own_are_taken_on_restart(
    redis_url: str,
) -> None:
    enqueue(redis_url, *(notice(n) for n in range(1, 5)))
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.xgroup_create(NOTICE_OUTBOX, OUTBOX_GROUP, id="0")
    # Two consumers read two entries each and die before settling them.
    client.xreadgroup(OUTBOX_GROUP, "crashed", {NOTICE_OUTBOX: ">"}, count=2)
    client.xreadgroup(OUTBOX_GROUP, "restarted", {NOTICE_OUTBOX: ">"}, count=2)

    async def work(run: Run) -> None:
        # The restarted one takes its own at once; the other's wait until they are stale.
        restarted = run.worker("restarted", claim_idle_s=3600.0)
        await run.drain(restarted)
        assert restarted.counts.delivered == 2
        other = run.worker("other", claim_idle_s=0.0)
        await run.drain(other)
        assert other.counts.delivered == 2

    with_worker(redis_url, work)
    assert client.xpending(NOTICE_OUTBOX, OUTBOX_GROUP)["pending"] == 0
    assert all(log_of(redis_url, f"C-{n}")["status"] == "sent" for n in range(1, 5))


def test_a_notice_held_for_quiet_hours_is_posted_when_they_end(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    held = notice(1, not_before=T0 + 3600.0)
    client.zadd(NOTICE_HELD, {held_member(held): held.not_before})

    async def work(run: Run) -> None:
        worker = run.worker()
        await run.drain(worker)
        assert run.receiver.requests == []
        run.clock.now = T0 + 3600.0
        await run.drain(worker)
        assert len(run.receiver.requests) == 1

    with_worker(redis_url, work)
    assert client.zcard(NOTICE_HELD) == 0


async def fact(conn: PipelinedConnection, notice_id: str, **fields: Any) -> bool:
    """One fact about customer C-9's notice into the log."""
    return await write_notice_log(conn, log_write("C-9", notice_id, **fields))


def test_the_log_keeps_the_latest_fact_whatever_order_writes_come_in(redis_url: str) -> None:
    """A receipt may come before the worker's own `sent`; an older notice's write may come
    after a newer notice of the same id."""

    async def writes(conn: PipelinedConnection) -> None:
        log = {"key": "k1", "now": T0}
        await fact(conn, "n", status="queued", at=T0, channel="sms", **log)
        await fact(conn, "n", status="delivered", **log)
        await fact(conn, "n", status="sent", provider_ref="p-1", **log)
        # A newer notice of the same id replaces it; a late write about k1 is dropped.
        assert await fact(conn, "m", key="k2", status="queued", now=T0, at=T0)
        await fact(conn, "n", key="k2", status="queued", now=T0, at=T0 + 5)
        assert not await fact(conn, "n", key="k1", status="failed", now=T0, at=T0)

    async def main() -> None:
        conn = PipelinedConnection(redis_url)
        try:
            await writes(conn)
        finally:
            await conn.aclose()

    asyncio.run(main())
    record = log_of(redis_url, "C-9", "n")
    assert (record["key"], record["status"], record["at"]) == ("k2", "queued", T0 + 5)
    assert "provider_ref" not in record


def test_delivered_then_sent_keeps_delivered_and_the_ref(redis_url: str) -> None:
    async def main() -> None:
        conn = PipelinedConnection(redis_url)
        try:
            await fact(conn, "n", key="k", status="delivered", now=T0)
            await fact(conn, "n", key="k", status="sent", now=T0, provider_ref="p-1", at=T0)
        finally:
            await conn.aclose()

    asyncio.run(main())
    record = log_of(redis_url, "C-9", "n")
    assert record["status"] == "delivered" and record["provider_ref"] == "p-1"
    assert replace(notice(1), attempt=1).attempt == 1
