"""Outcomes that reached the log but were not applied are applied later, once.

RecordOutcome writes an outcome to the log, then applies it to what decisions read
(offer history, counters, learning). When the second step does not happen (its Redis
slow or down, the call out of time, a worker gone in between, or the decision Redis
losing its last second of writes in a crash), the log still has the outcome, and each
log entry carries everything applying needs.

The reconciler replays the log from a cursor kept in the decision Redis, next to what
it applies: the cursor moves only after its entries were applied, and applying is
idempotent (a marker per outcome, kept for the decision TTL), so replaying from a
stale or lost cursor applies nothing twice. It leaves alone entries younger than
`settle_s`, which their own call is still applying, and entries older than the
decision TTL, whose markers may be gone. One reconciler works at a time: it holds a
lease in the decision Redis.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Callable, Sequence
from typing import Any

from decision_engine.ruleset.spec import Learning
from decision_engine.store.connection import Connection, Script
from decision_engine.store.keys import APPLIED_CURSOR, OUTCOME_STREAM, RECONCILER_LEASE
from decision_engine.store.outcomes import DEFAULT_DECISION_TTL_S, LoggedOutcome, apply_outcome

log = logging.getLogger(__name__)

# KEYS: the lease. ARGV: this reconciler's token, lease ttl (ms). 1 when held.
_LEASE = Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
""")
_RELEASE = Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")

StreamId = tuple[int, int]


class Reconciler:
    """Applies logged outcomes that were not applied; `run_once` while `lead` is True."""

    def __init__(
        self,
        log: Connection,
        apply: Connection,
        *,
        learning: Callable[[str], Learning | None],
        decision_ttl_s: float = DEFAULT_DECISION_TTL_S,
        settle_s: float = 2.0,
        timeout_s: float = 5.0,
        batch: int = 500,
        lease_s: float = 30.0,
        on_applied: Callable[[int], object] = lambda count: None,
    ) -> None:
        self._log = log
        self._apply = apply
        self._learning = learning
        """An arm's learning parameters (of its active ruleset), as RecordOutcome applies
        them."""
        self._ttl_ms = int(decision_ttl_s * 1000)
        self._decision_ttl_s = decision_ttl_s
        self._settle_ms = int(settle_s * 1000)
        self._timeout_s = timeout_s
        """For each round trip: a paused Redis must not stall the reconciler for good."""
        self._batch = batch
        self._lease_ms = int(lease_s * 1000)
        self._on_applied = on_applied
        self.token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"

    async def lead(self) -> bool:
        """Take or renew the lease; False while another reconciler holds it."""
        async with asyncio.timeout(self._timeout_s):
            held = await _LEASE(self._apply, [RECONCILER_LEASE], [self.token, self._lease_ms])
        return bool(held)

    async def release(self) -> None:
        """Give the lease up (on shutdown), so another reconciler need not wait it out."""
        async with asyncio.timeout(min(self._timeout_s, 1.0)):  # not to hold up a shutdown
            await _RELEASE(self._apply, [RECONCILER_LEASE], [self.token])

    async def run_once(self) -> int:
        """Apply every settled entry after the cursor; returns how many were not applied yet."""
        async with asyncio.timeout(self._timeout_s):
            seconds, micros = await self._log.call_on(OUTCOME_STREAM, "TIME")
            cursor = await self._apply.call("GET", APPLIED_CURSOR)
        # The log Redis's clock: stream ids are its milliseconds.
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        after = max(_cursor(cursor), (now_ms - self._ttl_ms, 0))
        end = str(now_ms - self._settle_ms)
        total = 0
        while True:
            async with asyncio.timeout(self._timeout_s):
                entries = await self._log.call(
                    "XRANGE", OUTCOME_STREAM, _format(_next(after)), end, "COUNT", self._batch
                )
            if not entries:
                return total
            applied = await self._apply_all(entries)
            total += applied
            if applied:
                self._on_applied(applied)
            after = _parse(entries[-1][0])
            async with asyncio.timeout(self._timeout_s):
                await self._apply.call("SET", APPLIED_CURSOR, _format(after))
            if len(entries) < self._batch or not await self.lead():
                return total

    async def _apply_all(self, entries: Sequence[Any]) -> int:
        outcomes = [o for o in (_entry(entry_id, flat) for entry_id, flat in entries) if o]
        async with asyncio.timeout(self._timeout_s):
            # Concurrently: the connection pipelines them into one write.
            results = await asyncio.gather(
                *(
                    apply_outcome(
                        self._apply,
                        o,
                        decision_ttl_s=self._decision_ttl_s,
                        learning=self._learning(o.arm),
                    )
                    for o in outcomes
                ),
                return_exceptions=True,
            )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return sum(1 for result in results if result is True)


def _entry(entry_id: str, flat: Sequence[str]) -> LoggedOutcome | None:
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    try:
        return LoggedOutcome(
            decision_id=fields["decision"],
            customer_id=fields["customer"],
            offer_id=fields.get("offer", ""),
            outcome=fields["outcome"],
            at=float(fields["at"]),
            arm=fields.get("arm", ""),
            interaction_id=fields.get("interaction", ""),
        )
    except (KeyError, ValueError):
        log.warning("outcome log entry %s is not an outcome; skipped", entry_id)
        return None


def _parse(stream_id: str) -> StreamId:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def _cursor(stored: str | None) -> StreamId:
    """The stored cursor; an unreadable one is no cursor (replaying is safe)."""
    if not stored:
        return 0, 0
    try:
        return _parse(stored)
    except ValueError:
        log.warning("unreadable outcome log cursor %r; replaying the log", stored)
        return 0, 0


def _format(stream_id: StreamId) -> str:
    return f"{stream_id[0]}-{stream_id[1]}"


def _next(stream_id: StreamId) -> StreamId:
    """The smallest id after `stream_id` (XRANGE's start is inclusive)."""
    return stream_id[0], stream_id[1] + 1
