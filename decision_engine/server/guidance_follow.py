"""Live guidance for every watch of a worker, from one blocking read.

A watch first replays what is stored (guidance_service.py), then subscribes here at the
stream id it has reached. The follower keeps ONE connection of its own in `XREAD BLOCK`
on the guidance streams of every subscription (each from the oldest position any of its
watches is at) and hands each watch the entries after its own position, so a thousand
watches cost one connection and one blocked read, not a thousand. A new subscription
wakes the blocked read (`CLIENT UNBLOCK`, from another connection) so that it is read
from at once. The follower runs while it has subscriptions; Redis failing only delays
it (it reconnects; every watch keeps its position).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from decision_engine.errors import StoreError
from decision_engine.server.throttle import Outage
from decision_engine.store.connection import Connection, PipelinedConnection, ReplyError
from decision_engine.store.interactions import GuidanceEntry, parse_guidance
from decision_engine.store.keys import guidance_key

log = logging.getLogger(__name__)

_BLOCK_MS = 5000
_COUNT = 100
_RETRY_S = 0.5
_REDIS_ERRORS = (StoreError, ReplyError, OSError, TimeoutError)


def _position(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class Subscription:
    """One watch's live feed: batches of entries after its position, or a failure."""

    def __init__(self, interaction_id: str) -> None:
        self.interaction_id = interaction_id
        self.key = guidance_key(interaction_id)
        self.cursor = "0-0"
        self._queue: asyncio.Queue[list[GuidanceEntry] | BaseException] = asyncio.Queue()

    def deliver(self, entries: list[GuidanceEntry]) -> None:
        self._queue.put_nowait(entries)

    def fail(self, exc: BaseException) -> None:
        """End the watch with `exc` (raised by the next `next()`)."""
        self._queue.put_nowait(exc)

    def failure(self) -> BaseException | None:
        """A failure delivered and not yet raised, without waiting."""
        if self._queue.empty():
            return None
        item = self._queue.get_nowait()
        if isinstance(item, BaseException):
            return item
        # Entries cannot arrive before the subscription is active: nothing is lost.
        self._queue.put_nowait(item)
        return None

    async def next(self) -> list[GuidanceEntry]:
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item


class GuidanceFollower:
    """Shares one blocking read of guidance streams among a worker's watches."""

    def __init__(self, url: str, control: Connection, *, block_ms: int = _BLOCK_MS):
        self._url = url
        self._control = control
        self._block_ms = block_ms
        self._subs: dict[str, set[Subscription]] = {}
        self._task: asyncio.Task[None] | None = None
        self._connection: Connection | None = None
        self._client_id: int | None = None
        self._reading = False
        self._changed = False
        self._waking: asyncio.Task[None] | None = None
        self._outage = Outage(
            log,
            failing="live guidance not read (%s), %d time(s); watches wait and resume",
            back="live guidance read again after %d failure(s)",
        )

    @property
    def subscriptions(self) -> int:
        return sum(len(subs) for subs in self._subs.values())

    def activate(self, subscription: Subscription, cursor: str) -> None:
        """Deliver `subscription` every entry after `cursor` from now on."""
        subscription.cursor = cursor
        self._subs.setdefault(subscription.key, set()).add(subscription)
        self._changed = True
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="guidance follower")
        elif self._reading and self._waking is None:
            self._waking = asyncio.create_task(self._wake())

    def cancel(self, subscription: Subscription) -> None:
        subs = self._subs.get(subscription.key)
        if subs is not None:
            subs.discard(subscription)
            if not subs:
                del self._subs[subscription.key]
        if not self._subs and self._task is not None:
            self._task.cancel()  # no watch left: stop reading (and close the connection)

    async def _run(self) -> None:
        try:
            while self._subs:
                await self._read_once()
        finally:
            self._task = None
            connection, self._connection, self._client_id = self._connection, None, None
            if connection is not None:
                with contextlib.suppress(*_REDIS_ERRORS):
                    await connection.aclose()

    async def _read_once(self) -> None:
        self._reading = True
        self._changed = False
        keys = list(self._subs)
        positions = [min((s.cursor for s in self._subs[key]), key=_position) for key in keys]
        try:
            connection = await self._connect()
            reply = await connection.call(
                "XREAD", "COUNT", _COUNT, "BLOCK", self._block_ms, "STREAMS", *keys, *positions
            )
        except _REDIS_ERRORS as exc:
            self._outage.failed(str(exc) or type(exc).__name__)
            await self._disconnect()
            await asyncio.sleep(_RETRY_S)
            return
        finally:
            self._reading = False
        self._outage.recovered()
        for key, entries in reply or ():
            self._dispatch(key, entries)

    def _dispatch(self, key: str, entries: list[list[object]]) -> None:
        subs = self._subs.get(key)
        if not subs:
            return
        interaction_id = next(iter(subs)).interaction_id
        parsed = [parse_guidance(interaction_id, str(eid), flat) for eid, flat in entries]  # type: ignore[arg-type]
        for sub in subs:
            after = _position(sub.cursor)
            new = [e for e in parsed if _position(e.entry_id) > after]
            if new:
                sub.cursor = new[-1].entry_id
                sub.deliver(new)

    async def _connect(self) -> Connection:
        if self._connection is None:
            # Kept before its first call, so that it is closed however that call ends.
            self._connection = connection = PipelinedConnection(self._url)
            self._client_id = int(await connection.call("CLIENT", "ID"))
        return self._connection

    async def _disconnect(self) -> None:
        connection, self._connection, self._client_id = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(*_REDIS_ERRORS):
                await connection.aclose()

    async def _wake(self) -> None:
        """Unblock the read in progress, so that it is made again with the new
        subscriptions (retried until it has reached Redis and blocked)."""
        try:
            while self._changed and self._reading:
                client_id = self._client_id  # None while (re)connecting
                if client_id is not None and (
                    await self._control.call("CLIENT", "UNBLOCK", client_id) == 1
                ):
                    return
                await asyncio.sleep(0.005)
        except _REDIS_ERRORS:
            pass  # the read ends within its block time anyway
        finally:
            self._waking = None
