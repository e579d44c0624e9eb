"""A notice process's work: business events in, notices onto the outbox.

Events are read from the durable Redis's events stream with the consumer group `notices`
(at least once): a restarted process first takes what it left pending, and entries a
crashed process left pending are claimed after `claim_idle_s`. For each customer of an
event (one, or every member of an audience, a page at a time) the customer's profile and
sent notices are read, the pure planner decides, and store/notices.py commits the plans
atomically with the customer's sent notices, planning again if another process changed
them in between. Processing an event twice (after a crash) is harmless: what was queued
the first time is in the customer's sent notices, so deduplication suppresses it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from decision_engine.decide.notices import (
    HELD,
    SEND,
    SUPPRESSED,
    BusinessEvent,
    NoticePlan,
    event_problem,
    plan_notices,
)
from decision_engine.ruleset.compiled import CompiledRuleset
from decision_engine.server import metrics
from decision_engine.store.connection import Connection
from decision_engine.store.keys import EVENTS_GROUP, EVENTS_STREAM
from decision_engine.store.notice_log import log_write, write_notice_logs
from decision_engine.store.notices import (
    BadEventEntry,
    CustomerNotices,
    audience_members,
    commit,
    first_sight,
    notice_key,
    parse_entry,
    read_customers,
    reject,
    split_audience,
)
from decision_engine.store.work_queue import StreamConsumer

log = logging.getLogger("decision_engine.notices")

PAGE = 500
"""Customers of an audience planned at once (their reads and commits share round trips)."""
PAGES_AT_ONCE = 3
MAX_REPLANS = 5
"""Commits refused because the customer's notices changed, before giving up on one."""


@dataclass
class Progress:
    """What processing one event did, for tests, metrics and the CLI."""

    customers: int = 0
    queued: int = 0
    held: int = 0
    suppressed: int = 0
    conflicts: int = 0


class RulesetSource(Protocol):
    """Anything with the ruleset currently served (server/service.py's ActiveRuleset)."""

    current: CompiledRuleset


class NoticeProcessor:
    """Reads the events stream as one consumer of the `notices` group."""

    def __init__(
        self,
        rules: RulesetSource,
        *,
        decision: Connection,
        durable: Connection,
        reader: Connection,
        consumer: str,
        claim_idle_s: float = 30.0,
        batch: int = 20,
        block_ms: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._rules = rules
        self._decision = decision
        self._durable = durable
        self.consumer = consumer
        self._queue = StreamConsumer(
            durable, reader, stream=EVENTS_STREAM, group=EVENTS_GROUP, consumer=consumer,
            claim_idle_s=claim_idle_s, batch=batch, block_ms=block_ms,
        )  # fmt: skip
        self._clock = clock
        self._pages = asyncio.Semaphore(PAGES_AT_ONCE)

    async def run(self, stop: asyncio.Event) -> None:
        """Process events until `stop` is set."""
        while not stop.is_set():
            try:
                await self.step()
            except Exception:
                log.exception("notice processing failed; retrying in 1 s")
                await asyncio.sleep(1.0)

    async def step(self) -> int:
        """Take entries (own pending, stale, or new: blocking up to block_ms); process them."""
        entries = await self._queue.next_batch()
        # At once: a customer's notices are committed compare-and-set, so two events
        # about one customer in the same batch plan again rather than race.
        await asyncio.gather(*(self._handle(entry_id, fields) for entry_id, fields in entries))
        return len(entries)

    async def _handle(self, entry_id: str, fields: Mapping[str, str]) -> None:
        ruleset = self._rules.current
        event_type = fields.get("type", "")[:64] or "unknown"
        try:
            stored = parse_entry(entry_id, fields)
            problem = event_problem(ruleset, stored.event)
            if problem is not None:
                raise BadEventEntry(f"{problem[0]}: {problem[1]}")
        except BadEventEntry as exc:
            # Written by a producer, not through PublishEvent: kept aside, with the reason.
            await reject(self._durable, entry_id, fields, str(exc))
            metrics.EVENTS_PROCESSED.labels(_label(ruleset, event_type), "rejected").inc()
            return
        event_type = stored.event.type
        if not stored.checked and not await first_sight(self._durable, stored.event.event_id):
            await self._ack(entry_id)
            metrics.EVENTS_PROCESSED.labels(event_type, "duplicate").inc()
            return
        if stored.published_at:
            metrics.EVENT_LAG.set(max(time.time() - stored.published_at, 0.0))
        if stored.page is not None:
            await self.process(stored.event, ruleset, stored.page)
            result = "page"
        elif stored.event.audience is not None:
            # Pages for every notice process to share, rather than one doing them all.
            pages = [page async for page in self._customers(stored.event)]
            await split_audience(self._durable, stored, pages)
            metrics.EVENTS_PROCESSED.labels(event_type, "split").inc()
            return
        else:
            await self.process(stored.event, ruleset)
            result = "done"
        await self._ack(entry_id)
        metrics.EVENTS_PROCESSED.labels(event_type, result).inc()

    async def _ack(self, entry_id: str) -> None:
        await self._queue.ack(entry_id)

    async def process(
        self,
        event: BusinessEvent,
        ruleset: CompiledRuleset,
        customers: Sequence[str] | None = None,
    ) -> Progress:
        """Plan and queue the event's notices for each of its customers (or these)."""
        progress = Progress()
        # A few pages at once: one's reads travel while another is planned.
        pages: set[asyncio.Task[None]] = set()
        try:
            async for customer_ids in self._customers(event, customers):
                progress.customers += len(customer_ids)
                if len(pages) >= PAGES_AT_ONCE:
                    done, pages = await asyncio.wait(pages, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        task.result()
                pages.add(asyncio.create_task(self._page(event, ruleset, customer_ids, progress)))
            await asyncio.gather(*pages)
        finally:
            for task in pages:
                task.cancel()
        return progress

    async def _customers(
        self, event: BusinessEvent, customers: Sequence[str] | None = None
    ) -> AsyncIterator[list[str]]:
        if customers is not None:
            for start in range(0, len(customers), PAGE):
                yield list(customers[start : start + PAGE])
            return
        if event.audience is None:
            yield [event.customer_id]
            return
        field, value = event.audience
        cursor, seen = 0, set()
        while True:
            cursor, page = await audience_members(
                self._decision, field, value, cursor=cursor, count=PAGE
            )
            fresh = [c for c in page if c not in seen]  # SSCAN may return one twice
            seen.update(fresh)
            if fresh:
                yield fresh
            if cursor == 0:
                return

    async def _page(
        self,
        event: BusinessEvent,
        ruleset: CompiledRuleset,
        customer_ids: list[str],
        progress: Progress,
    ) -> None:
        """Read, plan and commit a page of customers, each step one pipeline per Redis;
        customers whose sent notices changed meanwhile are planned again."""
        async with self._pages:  # across every event of a batch: Redis's replies are bounded
            await self._page_now(event, ruleset, customer_ids, progress)

    async def _page_now(
        self,
        event: BusinessEvent,
        ruleset: CompiledRuleset,
        customer_ids: list[str],
        progress: Progress,
    ) -> None:
        pending = customer_ids
        for _ in range(MAX_REPLANS):
            now = self._clock()
            customers = await read_customers(self._decision, self._durable, pending, now=now)
            planned = [
                (c, plan_notices(ruleset, event, c.profile, c.sent, now=now)) for c in customers
            ]
            committed = await commit(self._durable, event, planned, now=now)
            done = [item for item, ok in zip(planned, committed, strict=True) if ok]
            await self._record(event, done, now, progress)
            pending = [c.customer_id for (c, _), ok in zip(planned, committed, strict=True)
                       if not ok]  # fmt: skip
            if not pending:
                return
            progress.conflicts += len(pending)
        log.warning("notices of event %s: gave up on %d customer(s) after %d conflicts",
                    event.event_id, len(pending), MAX_REPLANS)  # fmt: skip

    async def _record(
        self,
        event: BusinessEvent,
        done: list[tuple[CustomerNotices, list[NoticePlan]]],
        now: float,
        progress: Progress,
    ) -> None:
        writes = []
        for customer, plans in done:
            for plan in plans:
                if plan.status == SUPPRESSED:
                    progress.suppressed += 1
                    metrics.NOTICES_SUPPRESSED.labels(plan.notice_id, plan.reason).inc()
                    continue
                status = "queued" if plan.status == SEND else "held"
                if plan.status == HELD:
                    progress.held += 1
                else:
                    progress.queued += 1
                metrics.NOTICES_DECIDED.labels(plan.notice_id, plan.channel, status).inc()
                customer_id = customer.customer_id
                key = notice_key(event.event_id, plan.notice_id, customer_id, plan.channel)
                writes.append(
                    log_write(
                        customer_id,
                        plan.notice_id,
                        key=key,
                        status=status,
                        now=now,
                        at=now,
                        channel=plan.channel,
                        text=plan.text,
                    )
                )
        await write_notice_logs(self._decision, writes)


def _label(ruleset: CompiledRuleset, event_type: str) -> str:
    """A bounded metric label: a declared type, else `undeclared`."""
    rules = ruleset.source.notices
    return event_type if rules is not None and event_type in rules.events else "undeclared"
