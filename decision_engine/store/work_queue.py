"""Work handed out through Redis streams and consumer groups: the moment processes'
shards, and (StreamConsumer) the notice processes' events and outbox.

The publish script (interactions.py) appends `interaction seq` to the shard's stream for
every event released to moments. The moment process that owns the shard reads it as
consumer `moments-<index>` of the group `moments`; an entry stays pending until the
process acknowledges it, after the guidance the event caused is written. So a process
that dies leaves its entries pending, and when it (or whoever owns the shard next)
starts, it claims them and reads them first.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from decision_engine.store.connection import Connection, ReplyError
from decision_engine.store.keys import moment_work_key
from decision_engine.store.replies import stream_entries

GROUP = "moments"


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One entry of a shard's work stream: an event released to moments."""

    shard: int
    entry_id: str
    interaction_id: str
    """Empty when the entry was trimmed while pending (its event is in the events stream)."""
    seq: int


def consumer_name(index: int) -> str:
    return f"moments-{index}"


async def ensure_groups(connection: Connection, shards: Iterable[int]) -> None:
    """The consumer group on each shard's stream, made once."""
    for shard in shards:
        await ensure_group(connection, moment_work_key(shard), GROUP)


async def ensure_group(connection: Connection, stream: str, group: str) -> None:
    """A consumer group on a stream, made once (from the stream's start, so entries added
    before it existed are read too); an existing one is left as it is."""
    try:
        await connection.call("XGROUP", "CREATE", stream, group, "0", "MKSTREAM")
    except ReplyError as exc:
        if not str(exc).startswith("BUSYGROUP"):
            raise


async def claim_pending(connection: Connection, shard: int, consumer: str) -> int:
    """Take over every pending entry of the shard (this process owns it now, whoever read
    them before); returns how many."""
    cursor, claimed = "0-0", 0
    while True:
        reply = await connection.call(
            "XAUTOCLAIM", moment_work_key(shard), GROUP, consumer, 0, cursor, "COUNT", 1000,
            "JUSTID",
        )  # fmt: skip
        cursor, ids = reply[0], reply[1]
        claimed += len(ids)
        if cursor == "0-0":
            return claimed


async def read_work(
    connection: Connection,
    shards: Sequence[int],
    consumer: str,
    *,
    pending: bool,
    count: int = 200,
    block_ms: int | None = None,
) -> list[WorkItem]:
    """This consumer's pending entries (`pending`), or new ones (waiting up to
    `block_ms`, on a connection of its own: a blocked read holds the connection)."""
    keys = [moment_work_key(shard) for shard in shards]
    block: list[str | float] = [] if block_ms is None or pending else ["BLOCK", max(1, block_ms)]
    reply = await connection.call(
        "XREADGROUP", "GROUP", GROUP, consumer, "COUNT", count, *block,
        "STREAMS", *keys, *(["0"] if pending else [">"]) * len(keys),
    )  # fmt: skip
    by_key = {key: shard for key, shard in zip(keys, shards, strict=True)}
    items = []
    for key, entries in reply or ():
        for entry_id, flat in entries or ():
            fields = dict(zip(flat[::2], flat[1::2], strict=True)) if flat else {}
            items.append(
                WorkItem(
                    by_key[key],
                    entry_id,
                    fields.get("interaction", ""),
                    int(fields.get("seq", "0") or 0),
                )
            )
    return items


async def acknowledge(connection: Connection, items: Iterable[WorkItem]) -> None:
    """Done with these entries: they leave the pending list."""
    by_shard: dict[int, list[str]] = {}
    for item in items:
        by_shard.setdefault(item.shard, []).append(item.entry_id)
    for shard, ids in by_shard.items():
        await connection.call("XACK", moment_work_key(shard), GROUP, *ids)


async def trim_acknowledged(connection: Connection, shard: int) -> None:
    """Drop the entries every consumer is done with (before the oldest pending one, or up
    to the last delivered when none is pending)."""
    key = moment_work_key(shard)
    summary = await connection.call("XPENDING", key, GROUP)
    if summary and int(summary[0]) > 0:
        oldest = str(summary[1])
    else:
        groups = await connection.call("XINFO", "GROUPS", key)
        oldest = ""
        for group in groups or ():
            info = dict(zip(group[::2], group[1::2], strict=True))
            if info.get("name") == GROUP:
                oldest = str(info.get("last-delivered-id", ""))
        if not oldest or oldest == "0-0":
            return
    await connection.call("XTRIM", key, "MINID", oldest)


async def pending_count(connection: Connection, shard: int) -> int:
    """Entries of the shard read and not acknowledged (for tests and operators)."""
    summary = await connection.call("XPENDING", moment_work_key(shard), GROUP)
    return int(summary[0]) if summary else 0


class StreamConsumer:
    """One consumer of a stream's group, reading at least once: first the entries it
    left pending itself (it restarted under the same name), then entries another consumer
    has held for over `claim_idle_s` (it crashed), then new ones (blocking)."""

    def __init__(
        self,
        connection: Connection,
        reader: Connection,
        *,
        stream: str,
        group: str,
        consumer: str,
        claim_idle_s: float,
        batch: int,
        block_ms: int,
    ) -> None:
        self._connection = connection
        self._reader = reader  # a connection of its own: BLOCK holds up what follows it
        self.stream, self.group, self.consumer = stream, group, consumer
        self.claim_idle_s, self.batch, self.block_ms = claim_idle_s, batch, block_ms
        self._ready = False
        self._own_pending = True
        self._next_claim = 0.0

    async def next_batch(self) -> list[tuple[str, dict[str, str]]]:
        """The next entries to work on (none if nothing came within block_ms)."""
        if not self._ready:
            await ensure_group(self._connection, self.stream, self.group)
            self._ready = True
        while self._own_pending:
            reply = await self._connection.call(
                "XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", self.batch,
                "STREAMS", self.stream, "0",
            )  # fmt: skip
            raw = reply[0][1] if reply else []
            if not raw:
                self._own_pending = False
                break
            if entries := stream_entries(raw):
                return entries
            # Only entries deleted while pending: let go of them and look further.
            await self.ack(*(str(item[0]) for item in raw))
        if time.monotonic() >= self._next_claim:
            # Stale entries are looked for a few times per claim_idle_s, not every read.
            self._next_claim = time.monotonic() + min(self.claim_idle_s / 4, 5.0)
            reply = await self._connection.call(
                "XAUTOCLAIM", self.stream, self.group, self.consumer,
                int(self.claim_idle_s * 1000), "0-0", "COUNT", self.batch,
            )  # fmt: skip
            if entries := stream_entries(reply[1]):
                self._next_claim = 0.0  # there may be more
                return entries
        reply = await self._reader.call(
            "XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", self.batch,
            "BLOCK", self.block_ms, "STREAMS", self.stream, ">",
        )  # fmt: skip
        return stream_entries(reply[0][1]) if reply else []

    async def ack(self, *entry_ids: str) -> None:
        if entry_ids:
            await self._connection.call("XACK", self.stream, self.group, *entry_ids)
