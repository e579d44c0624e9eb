"""Decisions, outcomes and volume caps in Redis: the write side of the loop.

Outcomes are acknowledged only once Redis has executed the script that records
them; with the shipped configuration (append-only file, fsync always) an
acknowledged outcome survives a crash of the Redis server.

The outcome script reads the decision to find the customer, so it touches keys
it computes itself: it needs a single Redis (with replicas), not Redis Cluster.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from decision_engine.errors import StoreUnavailableError
from decision_engine.ruleset.model import Learning
from decision_engine.store.connection import PipelinedConnection, Script
from decision_engine.store.keys import (
    ARM_STATS,
    LEARNING,
    OFFER_STATS,
    OUTCOME_STREAM,
    cap_key,
    decision_key,
)

log = logging.getLogger(__name__)

DEFAULT_DECISION_TTL_S = 7 * 86_400
DEFAULT_STREAM_MAXLEN = 1_000_000
HISTORY_DAYS = 400
"""Offer history older than this is dropped (longer than any contact policy window)."""
HISTORY_EVENTS = 50
"""At most this many events are kept per customer and offer."""

# KEYS: decision. ARGV: offer_id, outcome, channel, reason, at, stream maxlen,
# dedupe ttl (ms), history days, history events, is an offer outcome ("1"/"0"),
# learning half-life in seconds ("" when not learning), the profile field learned by.
_RECORD_LUA = (
    """
local raw = redis.call('GET', KEYS[1])
if not raw then return {'unknown'} end
local decision = cjson.decode(raw)
local offer = ARGV[1]
if ARGV[10] == '1' then
  local found = false
  for _, id in ipairs(decision.o) do if id == offer then found = true end end
  if not found then return {'not_offered'} end
end
local dedupe = 'nba:outcome:' .. KEYS[1] .. ':' .. offer .. ':' .. ARGV[2]
if not redis.call('SET', dedupe, '1', 'NX', 'PX', ARGV[7]) then return {'duplicate'} end
local channel = ARGV[3]
if channel == '' then channel = decision.ch end
local id = redis.call('XADD', '@STREAM@', 'MAXLEN', '~', ARGV[6], '*',
  'decision', decision.d, 'customer', decision.c, 'offer', offer, 'outcome', ARGV[2],
  'channel', channel, 'reason', ARGV[4], 'at', ARGV[5], 'arm', decision.a,
  'ruleset', decision.v, 'interaction', decision.i)
if ARGV[10] ~= '1' then
  redis.call('HINCRBY', '@ARMS@', decision.a .. '|' .. ARGV[2], 1)
  return {'ok', id, decision.a}
end

local history = 'nba:{' .. decision.c .. '}:history'
local events = redis.call('HGET', history, offer)
local kept = {}
local cutoff = tonumber(ARGV[5]) - tonumber(ARGV[8]) * 86400
if events then
  for item in string.gmatch(events, '[^;]+') do
    local at = tonumber(string.match(item, '^([^|]*)'))
    if at and at >= cutoff then kept[#kept + 1] = item end
  end
end
kept[#kept + 1] = ARGV[5] .. '|' .. ARGV[2] .. '|' .. decision.i
local first = math.max(1, #kept - tonumber(ARGV[9]) + 1)
redis.call('HSET', history, offer, table.concat(kept, ';', first))
redis.call('PEXPIRE', history, math.floor(tonumber(ARGV[8]) * 86400000))
redis.call('HINCRBY', '@STATS@', offer .. '|' .. ARGV[2], 1)
redis.call('HINCRBY', '@STATS@', decision.a .. '|' .. offer .. '|' .. ARGV[2], 1)

-- Learning: accepted counts as a success, declined or unanswered as a failure;
-- older evidence halves every half-life.
local success = ARGV[2] == 'accepted' and 1 or 0
local failure = (ARGV[2] == 'declined' or ARGV[2] == 'no_response') and 1 or 0
if ARGV[11] == '' or success + failure == 0 then return {'ok', id, decision.a} end
local now, half_life = tonumber(ARGV[5]), tonumber(ARGV[11])
local fields = {offer}
if ARGV[12] ~= '' then
  local segment = redis.call('HGET', 'nba:{' .. decision.c .. '}:profile', ARGV[12])
  if segment then fields[2] = offer .. '|' .. segment end
end
for _, field in ipairs(fields) do
  local a, b, stamp, weight = 0, 0, now, 1
  local stored = redis.call('HGET', '@LEARNING@', field)
  if stored then
    local sa, sb, st = string.match(stored, '^([^,]+),([^,]+),([^,]+)$')
    st = tonumber(st)
    local decay = 1
    if half_life > 0 and now > st then decay = 0.5 ^ ((now - st) / half_life) end
    if half_life > 0 and now < st then
      -- A late (backdated) outcome: the counts keep their time, the outcome weighs less.
      weight, stamp = 0.5 ^ ((st - now) / half_life), st
    end
    a, b = tonumber(sa) * decay, tonumber(sb) * decay
  end
  local counts = string.format('%.6f,%.6f,%.3f', a + success * weight, b + failure * weight, stamp)
  redis.call('HSET', '@LEARNING@', field, counts)
end
return {'ok', id, decision.a}
""".replace("@STREAM@", OUTCOME_STREAM)
    .replace("@STATS@", OFFER_STATS)
    .replace("@LEARNING@", LEARNING)
    .replace("@ARMS@", ARM_STATS)
)

# KEYS: the day's counter of each offer to reserve. ARGV: cap of each, then ttl (s).
# All or nothing per offer: a counter is only incremented below its cap.
_RESERVE_LUA = """
local granted = {}
local ttl = ARGV[#ARGV]
for i = 1, #KEYS do
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  if used < tonumber(ARGV[i]) then
    redis.call('INCR', KEYS[i])
    redis.call('EXPIRE', KEYS[i], ttl)
    granted[i] = 1
  else
    granted[i] = 0
  end
end
return granted
"""

_RECORD = Script(_RECORD_LUA)
_RESERVE = Script(_RESERVE_LUA)


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """What an outcome is checked against."""

    decision_id: str
    customer_id: str
    offer_ids: tuple[str, ...]
    interaction_id: str
    channel: str
    ruleset_version: str
    arm: str
    at: float

    def encode(self) -> str:
        return json.dumps(
            {
                "d": self.decision_id,
                "c": self.customer_id,
                "o": list(self.offer_ids),
                "i": self.interaction_id,
                "ch": self.channel,
                "v": self.ruleset_version,
                "a": self.arm,
                "t": round(self.at, 3),
            },
            separators=(",", ":"),
        )


@dataclass(frozen=True, slots=True)
class Recorded:
    """The result of recording an outcome."""

    status: str
    """"ok", "duplicate", "unknown" (no such decision) or "not_offered"."""
    outcome_id: str = ""
    arm: str = ""


def remember_decision(
    connection: PipelinedConnection, record: DecisionRecord, *, ttl_s: float
) -> None:
    """Store the decision without waiting: the answer to the desktop does not wait on it."""
    try:
        future = connection.send_nowait(
            "SET", decision_key(record.decision_id), record.encode(), "PX", int(ttl_s * 1000)
        )
        counted = connection.send_nowait("HINCRBY", ARM_STATS, f"{record.arm}|decisions", 1)
    except StoreUnavailableError as exc:
        log.warning("decision not kept (outcomes for it will be refused): %s", exc)
        return
    future.add_done_callback(_log_failure)
    counted.add_done_callback(_log_failure)


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("a write to Redis failed: %s", future.exception())


async def record_outcome(
    connection: PipelinedConnection,
    *,
    decision_id: str,
    offer_id: str,
    outcome: str,
    channel: str,
    reason: str,
    at: float,
    offer_outcome: bool,
    decision_ttl_s: float = DEFAULT_DECISION_TTL_S,
    stream_maxlen: int = DEFAULT_STREAM_MAXLEN,
    learning: Learning | None = None,
) -> Recorded:
    """Record one outcome atomically: log entry, offer history, counters, and the
    acceptance counts learning reads (when the ruleset learns)."""
    learn = learning if learning is not None and learning.enabled else None
    reply = await _RECORD(
        connection,
        [decision_key(decision_id)],
        [
            offer_id, outcome, channel, reason, f"{at:.3f}", stream_maxlen,
            int(decision_ttl_s * 1000), HISTORY_DAYS, HISTORY_EVENTS, "1" if offer_outcome else "0",
            "" if learn is None else learn.half_life_days * 86_400,
            "" if learn is None else learn.by or "",
        ],
    )  # fmt: skip
    return Recorded(*(str(part) for part in reply))


async def load_learning(connection: PipelinedConnection) -> dict[str, str]:
    """The decayed acceptance counts: `offer` or `offer|segment` → `a,b,updated_at`."""
    reply = await connection.call("HGETALL", LEARNING)
    return dict(zip(reply[::2], reply[1::2], strict=True))


async def reserve_caps(
    connection: PipelinedConnection, caps: Sequence[tuple[str, int]], *, day: str
) -> frozenset[str]:
    """Take one unit of today's budget of each (offer, cap); returns the offers granted."""
    if not caps:
        return frozenset()
    reply = await _RESERVE(
        connection,
        [cap_key(offer_id, day) for offer_id, _ in caps],
        [*(cap for _, cap in caps), 2 * 86_400],
    )
    return frozenset(offer_id for (offer_id, _), ok in zip(caps, reply, strict=True) if ok == 1)


def release_caps(connection: PipelinedConnection, offer_ids: Sequence[str], *, day: str) -> None:
    """Give back budget reserved for offers that were not returned after all."""
    for offer_id in offer_ids:
        try:
            connection.send_nowait("DECR", cap_key(offer_id, day)).add_done_callback(_log_failure)
        except StoreUnavailableError as exc:
            log.warning("could not give back the budget of %s: %s", offer_id, exc)
