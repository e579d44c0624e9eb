"""Live interactions in Redis: their events (the source of truth) and their guidance.

Per interaction (keys.py, all with the `{interaction_id}` hash tag):

- `state`, a hash: the last event seq, the last guidance seq (`gseq`), `started`,
  `ended`, `done` (the end of its guidance is written), the customer, the events held
  before `started` (`held`, `held_since`);
- `events`, a stream in the order moments are fed, each entry `id seq kind at pub data`
  (`pub`: when the server accepted it; `data`: the kind's fields as JSON);
- `event-ids`, a hash event id → seq, checked in the same script that appends, so an
  event id counts once however often it is sent;
- `guidance`, a stream whose entry ids are the guidance seq (`<seq>-0`), so a watch
  replays from a seq directly; the end marker is `<last seq>-1`;
- `guidance-ids`, a hash guidance id → seq: a guidance item is written once, however
  often a replay detects it.

Every key lives INTERACTION_TTL_S after its last write (an interaction never started:
HOLD_TTL_S). Each released event also goes, in the same script, to the work stream of
the interaction's shard (work_queue.py), and `started` adds the interaction to the
shard's live set, which a restarted moment process replays.

Events before `started` are stored and held: not released to moments until `started`
arrives, at most MAX_HELD of them and for at most MAX_HOLD_S after the first; beyond
that an event is refused. A publisher's seq must increase within the interaction (gaps
are allowed): the stream is then in seq order, and a replay feeds what was fed live.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from decision_engine.errors import InteractionStateError
from decision_engine.moments.model import EventValue, InteractionEvent
from decision_engine.store.connection import Connection, Script
from decision_engine.store.keys import (
    guidance_ids_key,
    guidance_key,
    interaction_event_ids_key,
    interaction_events_key,
    interaction_state_key,
    moment_live_key,
    moment_work_key,
)
from decision_engine.store.replies import pairs

MOMENT_SHARDS = 16
"""Interactions are spread over this many work streams by a stable hash of their id;
each moment process owns some of them. Fixed: changing it would move interactions."""
INTERACTION_TTL_S = 86_400.0
"""An interaction's keys live this long after its last write."""
MAX_HELD = 100
"""Events stored before the interaction's `started` event, at most."""
MAX_HOLD_S = 60.0
"""…and for at most this long after the first of them arrived (server time)."""
HOLD_TTL_S = 600.0
"""The keys of an interaction that has not started live this long after its last event."""
WORK_MAXLEN = 100_000
"""Work entries kept per shard (approximately). A moment process trims what it has
acknowledged; this bound only matters while none runs, and whatever it drops is still
in the events streams, which a starting moment process replays."""
MAX_SEQ = 10**12
"""Seqs stay exact integers in Redis's Lua (numbers print with 14 digits)."""

# KEYS: state, events, event ids, the shard's work stream, the shard's live set.
# ARGV: event id, seq ("" to assign), kind, occurred_at, now, data (JSON), ttl (ms),
# max held, max hold (s), hold ttl (ms), interaction id, customer id, work maxlen.
# Replies {status, seq}: accepted, held, duplicate; or a refusal (ended, stale_seq,
# restarted, held_full, held_too_long) with the last seq (or what was held).
_PUBLISH_LUA = """
local known = redis.call('HGET', KEYS[3], ARGV[1])
if known then return {'duplicate', known} end
local state = KEYS[1]
local s = redis.call('HMGET', state, 'seq', 'started', 'ended', 'held', 'held_since', 'ended_held')
local last = tonumber(s[1] or '0')
local started = s[2] == '1'
local kind = ARGV[3]
if s[3] == '1' or (s[6] == '1' and kind ~= 'started') then return {'ended', tostring(last)} end
local seq = last + 1
if ARGV[2] ~= '' then
  seq = tonumber(ARGV[2])
  if seq <= last then return {'stale_seq', tostring(last)} end
end
local now = tonumber(ARGV[5])
local status = 'accepted'
if kind == 'started' then
  if started then return {'restarted', tostring(last)} end
elseif not started then
  local held = tonumber(s[4] or '0')
  if held >= tonumber(ARGV[8]) then return {'held_full', tostring(held)} end
  if held > 0 and now - tonumber(s[5]) > tonumber(ARGV[9]) then
    return {'held_too_long', s[5]}
  end
  redis.call('HSET', state, 'held', held + 1)
  if held == 0 then redis.call('HSET', state, 'held_since', ARGV[5]) end
  status = 'held'
end
redis.call('XADD', KEYS[2], '*', 'id', ARGV[1], 'seq', seq, 'kind', kind, 'at', ARGV[4],
  'pub', ARGV[5], 'data', ARGV[6])
redis.call('HSET', KEYS[3], ARGV[1], seq)
redis.call('HSET', state, 'seq', seq)
if kind == 'started' then
  redis.call('HSET', state, 'started', '1', 'customer', ARGV[12])
  if s[6] == '1' then redis.call('HSET', state, 'ended', '1') end
  redis.call('SADD', KEYS[5], ARGV[11])
  started = true
elseif kind == 'ended' then
  redis.call('HSET', state, started and 'ended' or 'ended_held', '1')
end
local ttl = ARGV[7]
if started then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[13], '*', 'interaction', ARGV[11], 'seq', seq)
else
  ttl = ARGV[10]
end
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ttl) end
return {status, tostring(seq)}
"""

# KEYS: state, guidance, guidance ids. ARGV: guidance id, ttl (ms), then the entry's
# field/value pairs. Replies {1, seq} written, {0, seq} written before, {-1, 0} the
# interaction's guidance has ended.
_WRITE_GUIDANCE_LUA = """
local known = redis.call('HGET', KEYS[3], ARGV[1])
if known then return {0, known} end
if redis.call('HGET', KEYS[1], 'done') == '1' then return {-1, '0'} end
local seq = redis.call('HINCRBY', KEYS[1], 'gseq', 1)
local entry = {}
for i = 3, #ARGV do entry[#entry + 1] = ARGV[i] end
redis.call('XADD', KEYS[2], seq .. '-0', unpack(entry))
redis.call('HSET', KEYS[3], ARGV[1], seq)
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
return {1, tostring(seq)}
"""

# KEYS: state, guidance, the shard's live set. ARGV: interaction id, ttl (ms), now.
# The end marker once, after the last guidance item; the interaction is no longer live,
# and takes no more events (also when it is ended for being idle).
_END_GUIDANCE_LUA = """
if redis.call('HGET', KEYS[1], 'done') ~= '1' then
  local seq = tonumber(redis.call('HGET', KEYS[1], 'gseq') or '0')
  redis.call('XADD', KEYS[2], seq .. '-1', 'end', ARGV[3])
  redis.call('HSET', KEYS[1], 'done', '1', 'ended', '1')
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
redis.call('SREM', KEYS[3], ARGV[1])
return 1
"""

_PUBLISH = Script(_PUBLISH_LUA)
_WRITE_GUIDANCE = Script(_WRITE_GUIDANCE_LUA)
_END_GUIDANCE = Script(_END_GUIDANCE_LUA)

_REFUSALS = {
    "ended": "interaction {interaction} has ended (its last seq is {detail}): no event after it",
    "stale_seq": "seq {seq} is not after {detail}, the last seq of interaction {interaction}: "
    "a publisher's seqs must increase",
    "restarted": "interaction {interaction} has started already (a second `started` event "
    "with another event id)",
    "held_full": "interaction {interaction} has not started: at most {detail} events are held "
    "before its `started` event",
    "held_too_long": "interaction {interaction} has not started: events are held for at most "
    "{hold:g} s before its `started` event",
}


def shard_of(interaction_id: str) -> int:
    """The interaction's shard: the same in every process and release (CRC-32)."""
    return zlib.crc32(interaction_id.encode()) % MOMENT_SHARDS


@dataclass(frozen=True, slots=True)
class Published:
    """What publishing one event did."""

    event_id: str
    status: str
    """"accepted", "held" (stored until `started`) or "duplicate"."""
    seq: int


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as kept in its interaction's stream."""

    entry_id: str
    event: InteractionEvent
    published_at: float
    """When the server accepted it (its clock), for the event-to-guidance latency."""


@dataclass(frozen=True, slots=True)
class GuidanceRecord:
    """One guidance item as stored (the wire form is the server's)."""

    guidance_id: str
    moment_id: str
    interaction_id: str
    kind: str
    title: str
    text: str
    severity: str
    event_ids: tuple[str, ...]
    at: float
    decision: str = ""
    """The re-decision as JSON (the DecideResponse), or empty."""
    route_queue: str = ""
    route_priority: int = 0
    supersedes: tuple[str, ...] = ()
    published_at: float = 0.0
    """When the triggering event was accepted (0: from a deadline)."""
    outcome_id: str = ""
    """The decision id RecordOutcome takes for the agent's use of this item."""
    seq: int = 0
    """Assigned when written."""


@dataclass(frozen=True, slots=True)
class GuidanceEntry:
    """An entry of a guidance stream: an item, or the end marker (`record` None)."""

    entry_id: str
    record: GuidanceRecord | None


def encode_data(data: Mapping[str, EventValue]) -> str:
    return json.dumps(
        {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()},
        sort_keys=True,
        separators=(",", ":"),
    )


def _decode_data(text: str) -> dict[str, EventValue]:
    raw = json.loads(text) if text else {}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}


async def publish_events(
    connection: Connection,
    events: Sequence[InteractionEvent],
    *,
    now: float,
    ttl_s: float = INTERACTION_TTL_S,
    max_held: int = MAX_HELD,
    max_hold_s: float = MAX_HOLD_S,
    hold_ttl_s: float = HOLD_TTL_S,
) -> list[Published]:
    """Store each event once (seq 0: assign the next). The scripts are pipelined, one per
    event, in order; InteractionStateError names the first event refused (`events[i]`);
    the others were stored or refused each on its own, and sending them again is safe."""
    calls: list[Coroutine[Any, Any, Any]] = []
    for event in events:
        shard = shard_of(event.interaction_id)
        customer = event.data.get("customer_id", "") if event.kind == "started" else ""
        iid = event.interaction_id
        keys = [
            interaction_state_key(iid), interaction_events_key(iid),
            interaction_event_ids_key(iid), moment_work_key(shard), moment_live_key(shard),
        ]  # fmt: skip
        args: list[str | float] = [
            event.event_id, str(event.seq) if event.seq else "", event.kind,
            repr(event.occurred_at), repr(now), encode_data(event.data), int(ttl_s * 1000),
            max_held, max_hold_s, int(hold_ttl_s * 1000), iid, str(customer), WORK_MAXLEN,
        ]  # fmt: skip
        calls.append(_PUBLISH(connection, keys, args))
    replies = await _gather(calls)
    published = []
    for index, (event, (status, detail)) in enumerate(zip(events, replies, strict=True)):
        template = _REFUSALS.get(status)
        if template is not None:
            raise InteractionStateError(
                f"events[{index}]",
                status,
                template.format(
                    interaction=event.interaction_id, seq=event.seq, detail=detail, hold=max_hold_s
                ),
            )
        published.append(Published(event.event_id, status, int(detail)))
    return published


async def _gather(calls: list[Coroutine[Any, Any, Any]]) -> list[list[str]]:
    """Every reply, once all are in (a failure is raised after the others finished)."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    replies: list[list[str]] = []
    for result in results:
        if isinstance(result, BaseException):
            raise result
        replies.append([str(part) for part in result])
    return replies


def parse_event(interaction_id: str, entry_id: str, flat: list[str]) -> StoredEvent:
    """A stream entry of `interaction_events_key` as the event it holds."""
    fields = pairs(flat)
    event = InteractionEvent(
        event_id=fields["id"],
        interaction_id=interaction_id,
        occurred_at=float(fields["at"]),
        seq=int(fields["seq"]),
        kind=fields["kind"],
        data=_decode_data(fields.get("data", "")),
    )
    return StoredEvent(entry_id, event, float(fields.get("pub", "0")))


async def read_events(
    connection: Connection, interaction_id: str, *, after: str = "", count: int = 1000
) -> list[StoredEvent]:
    """The interaction's events after the entry `after` ("": from the first), at most
    `count` of them."""
    start = f"({after}" if after else "-"
    reply = await connection.call(
        "XRANGE", interaction_events_key(interaction_id), start, "+", "COUNT", count
    )
    return [parse_event(interaction_id, entry_id, flat) for entry_id, flat in reply or ()]


async def read_all_events(
    connection: Connection, interaction_id: str, *, after: str = ""
) -> list[StoredEvent]:
    """Every event after `after`, in pages."""
    events: list[StoredEvent] = []
    while True:
        page = await read_events(connection, interaction_id, after=after)
        events.extend(page)
        if len(page) < 1000:
            return events
        after = page[-1].entry_id


async def interaction_done(connection: Connection, interaction_id: str) -> bool:
    """True once the end of the interaction's guidance is written."""
    return bool(await connection.call("HGET", interaction_state_key(interaction_id), "done"))


async def live_interactions(connection: Connection, shard: int) -> list[str]:
    """The shard's interactions started and not yet done."""
    return sorted(await connection.call("SMEMBERS", moment_live_key(shard)) or ())


async def forget_interaction(connection: Connection, interaction_id: str) -> None:
    """Take an interaction whose events are gone (expired) off its shard's live set."""
    await connection.call("SREM", moment_live_key(shard_of(interaction_id)), interaction_id)


async def guidance_written(connection: Connection, interaction_id: str, guidance_id: str) -> bool:
    return bool(await connection.call("HEXISTS", guidance_ids_key(interaction_id), guidance_id))


async def write_guidance(
    connection: Connection, record: GuidanceRecord, *, now: float,
    ttl_s: float = INTERACTION_TTL_S,
) -> tuple[int, bool]:  # fmt: skip
    """Write an item once: (its seq, True if written now). A guidance id written before
    keeps its seq; after the end of the interaction's guidance nothing is written (0)."""
    iid = record.interaction_id
    fields: list[str | float] = [
        "guidance_id", record.guidance_id, "moment_id", record.moment_id, "kind", record.kind,
        "title", record.title, "text", record.text, "severity", record.severity,
        "event_ids", " ".join(record.event_ids), "at", repr(record.at),
        "decision", record.decision, "route_queue", record.route_queue,
        "route_priority", record.route_priority, "supersedes", " ".join(record.supersedes),
        "published", repr(record.published_at), "written", repr(now),
        "outcome_id", record.outcome_id,
    ]  # fmt: skip
    status, seq = await _WRITE_GUIDANCE(
        connection,
        [interaction_state_key(iid), guidance_key(iid), guidance_ids_key(iid)],
        [record.guidance_id, int(ttl_s * 1000), *fields],
    )
    return int(seq), int(status) == 1


async def end_guidance(
    connection: Connection, interaction_id: str, *, now: float,
    ttl_s: float = INTERACTION_TTL_S,
) -> None:  # fmt: skip
    """Write the end marker after the last item (once) and take the interaction off its
    shard's live set."""
    await _END_GUIDANCE(
        connection,
        [
            interaction_state_key(interaction_id),
            guidance_key(interaction_id),
            moment_live_key(shard_of(interaction_id)),
        ],
        [interaction_id, int(ttl_s * 1000), repr(now)],
    )


def guidance_cursor(after_seq: int) -> str:
    """The stream id a watch that has seen `after_seq` reads after."""
    return f"{after_seq}-0"


def parse_guidance(interaction_id: str, entry_id: str, flat: list[str] | None) -> GuidanceEntry:
    """A guidance stream entry; the end marker has `record` None."""
    fields = pairs(flat or [])
    if "end" in fields or "guidance_id" not in fields:
        return GuidanceEntry(entry_id, None)
    return GuidanceEntry(
        entry_id,
        GuidanceRecord(
            guidance_id=fields["guidance_id"],
            moment_id=fields["moment_id"],
            interaction_id=interaction_id,
            kind=fields["kind"],
            title=fields["title"],
            text=fields["text"],
            severity=fields["severity"],
            event_ids=tuple(fields["event_ids"].split()),
            at=float(fields["at"]),
            decision=fields.get("decision", ""),
            route_queue=fields.get("route_queue", ""),
            route_priority=int(fields.get("route_priority", "0") or 0),
            supersedes=tuple(fields.get("supersedes", "").split()),
            published_at=float(fields.get("published", "0") or 0),
            outcome_id=fields.get("outcome_id", ""),
            seq=int(entry_id.split("-", 1)[0]),
        ),
    )


async def read_guidance(
    connection: Connection, interaction_id: str, *, after: str, count: int = 100
) -> list[GuidanceEntry]:
    """Guidance entries after the stream id `after`, at most `count`."""
    reply = await connection.call(
        "XRANGE", guidance_key(interaction_id), f"({after}", "+", "COUNT", count
    )
    return [parse_guidance(interaction_id, entry_id, flat) for entry_id, flat in reply or ()]
