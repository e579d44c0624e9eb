"""A delivery worker: notices from the outbox to their channel's sender, at least once.

Each step moves the held notices that are due onto the outbox stream, then takes entries
of the consumer group `delivery` (what it left pending itself before a restart, what a
crashed worker left pending for `claim_idle_s`, or new ones), and hands each to the
sender of its channel, many at once. Then: delivered → the entry is dropped and its key
remembered (a redelivery after a crash is not sent again; a crash between the send and
that write sends it twice, with the same idempotency key, for the receiver to drop); a
transient failure → held again with an exponential backoff; a permanent one, or
`max_attempts` transient ones → the dead-letter stream. Each result goes into the
customer's notice log, which Decide reads.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from decision_engine.delivery.senders import DELIVERED, FAILED, Sender, SendResult
from decision_engine.server import metrics
from decision_engine.store.connection import Connection
from decision_engine.store.keys import NOTICE_DEAD, NOTICE_HELD, NOTICE_OUTBOX, OUTBOX_GROUP
from decision_engine.store.notice_log import log_write, write_notice_log
from decision_engine.store.outbox import (
    BadOutboxEntry,
    OutboxEntry,
    dead_letter,
    decode,
    oldest_age,
    release_due,
    retry_later,
    settle_delivered,
    was_delivered,
)
from decision_engine.store.work_queue import StreamConsumer

log = logging.getLogger("decision_engine.delivery")

GAUGES_EVERY_S = 5.0
RELEASE_EVERY_S = 0.2
"""Held notices due are moved onto the outbox this often (not on every step)."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """When to try a notice again after a transient failure."""

    first_s: float = 2.0
    factor: float = 2.0
    max_s: float = 3600.0
    jitter: float = 0.2
    """Up to this share of the delay is added at random, so retries do not stampede."""

    def delay(self, attempt: int, draw: float) -> float:
        """The delay after `attempt` failed attempts (1, 2, …); `draw` in [0, 1)."""
        base = min(self.first_s * self.factor ** max(attempt - 1, 0), self.max_s)
        return base * (1.0 + self.jitter * draw)


@dataclass
class DeliveryCounts:
    """What a worker did, for tests and the CLI."""

    delivered: int = 0
    retried: int = 0
    rejected: int = 0
    dead_lettered: int = 0
    already_delivered: int = 0


class DeliveryWorker:
    """One consumer of the outbox's `delivery` group."""

    def __init__(
        self,
        senders: Mapping[str, Sender],
        *,
        durable: Connection,
        reader: Connection,
        decision: Connection,
        consumer: str,
        max_attempts: int = 8,
        backoff: Backoff = Backoff(),
        claim_idle_s: float = 30.0,
        batch: int = 200,
        block_ms: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._senders = senders
        self._durable = durable
        self._reader = reader
        self._decision = decision
        self.consumer = consumer
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.claim_idle_s = claim_idle_s
        self.batch = batch
        self.block_ms = block_ms
        self._clock = clock
        self._queue = StreamConsumer(
            durable, reader, stream=NOTICE_OUTBOX, group=OUTBOX_GROUP, consumer=consumer,
            claim_idle_s=claim_idle_s, batch=batch, block_ms=block_ms,
        )  # fmt: skip
        self._gauges_at = self._released_at = float("-inf")
        self.counts = DeliveryCounts()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set."""
        while not stop.is_set():
            try:
                await self.step()
            except Exception:
                log.exception("notice delivery failed; retrying in 1 s")
                await asyncio.sleep(1.0)

    async def step(self) -> int:
        """Release due notices, then claim stale entries or read new ones; deliver them."""
        now = self._clock()
        if now - self._released_at >= RELEASE_EVERY_S:
            self._released_at = now
            await release_due(self._durable, now=now, limit=self.batch * 5)
        await self._refresh_gauges(now)
        entries = await self._queue.next_batch()
        await asyncio.gather(*(self._deliver(entry_id, fields) for entry_id, fields in entries))
        return len(entries)

    async def _deliver(self, entry_id: str, fields: dict[str, str]) -> None:
        try:
            entry = decode(fields)
        except BadOutboxEntry as exc:
            await self._give_up(entry_id, _unreadable(fields), f"unreadable: {exc}")
            return
        if await was_delivered(self._durable, entry.key):
            await settle_delivered(self._durable, entry_id, entry.key)
            self._count(entry, "already_delivered")
            self.counts.already_delivered += 1
            return
        sender = self._senders.get(entry.channel)
        if sender is None:
            await self._give_up(entry_id, entry, f"no sender for channel {entry.channel!r}")
            return
        try:
            result = await sender.send(entry)
        except Exception as exc:  # a sender's bug must not stop delivery of the others
            log.exception("sender %s raised", sender.name)
            result = SendResult("retry", f"sender error: {type(exc).__name__}")
        await self._settle(entry_id, entry, sender, result)

    async def _settle(
        self, entry_id: str, entry: OutboxEntry, sender: Sender, result: SendResult
    ) -> None:
        now = self._clock()
        if result.status == DELIVERED:
            await settle_delivered(self._durable, entry_id, entry.key)
            due = max(entry.decided_at, entry.not_before)
            metrics.NOTICE_DELIVERY_LATENCY.labels(entry.channel).observe(max(now - due, 0.0))
            self._count(entry, "delivered", sender.name)
            self.counts.delivered += 1
            await self._log(entry, "sent", now, result.provider_ref)
            return
        attempt = entry.attempt + 1
        failed = replace(entry, attempt=attempt, last_error=result.detail[:200])
        if result.status == FAILED:
            await self._give_up(entry_id, failed, result.detail, sender.name, status="rejected")
            self.counts.rejected += 1
        elif attempt >= self.max_attempts:
            await self._give_up(entry_id, failed, result.detail, sender.name)
        else:
            at = now + self.backoff.delay(attempt, random.random())
            await retry_later(self._durable, entry_id, failed, at=at)
            self._count(entry, "retry", sender.name)
            self.counts.retried += 1

    async def _give_up(
        self,
        entry_id: str,
        entry: OutboxEntry,
        why: str,
        sender: str = "none",
        *,
        status: str = "dead_lettered",
    ) -> None:
        dead = replace(entry, last_error=why[:200])
        if not await dead_letter(self._durable, entry_id, dead):
            return  # another worker settled it meanwhile
        log.warning(
            "notice %s on %s dead-lettered after %d attempt(s): %s",
            entry.notice_id, entry.channel, entry.attempt, why[:200],
        )  # fmt: skip
        self._count(entry, status, sender)
        if status == "dead_lettered":
            self.counts.dead_lettered += 1
        if entry.customer_id:
            await self._log(entry, status, self._clock(), None)

    async def _log(self, entry: OutboxEntry, status: str, now: float, ref: str | None) -> None:
        write = log_write(
            entry.customer_id, entry.notice_id, key=entry.key, status=status, now=now,
            at=entry.decided_at, channel=entry.channel, text=entry.text, provider_ref=ref or None,
        )  # fmt: skip
        await write_notice_log(self._decision, write)

    def _count(self, entry: OutboxEntry, result: str, sender: str = "none") -> None:
        channel = entry.channel if entry.channel in self._senders else "other"
        metrics.NOTICE_DELIVERIES.labels(channel, sender, result).inc()

    async def _refresh_gauges(self, now: float) -> None:
        if now - self._gauges_at < GAUGES_EVERY_S:
            return
        self._gauges_at = now
        lag, held, dead = await asyncio.gather(
            oldest_age(self._durable, now=time.time()),
            self._durable.call("ZCARD", NOTICE_HELD),
            self._durable.call("XLEN", NOTICE_DEAD),
        )
        metrics.NOTICE_OUTBOX_LAG.set(lag)
        metrics.NOTICES_HELD.set(int(held))
        metrics.NOTICE_DEAD_LETTERS.set(int(dead))


def _unreadable(fields: Mapping[str, str]) -> OutboxEntry:
    """An entry that does not decode, kept on the dead-letter stream with what it had."""
    return OutboxEntry(
        key=fields.get("key", ""), notice_id=fields.get("notice_id", ""),
        event_id=fields.get("event_id", ""), event_type=fields.get("event_type", ""),
        customer_id=fields.get("customer_id", ""), channel=fields.get("channel", ""),
        address=fields.get("address", ""), subject=fields.get("subject", ""),
        text=fields.get("text", ""), urgent=False, decided_at=0.0, not_before=0.0,
    )  # fmt: skip
