"""Outcomes and volume caps in Redis: the write side of the loop.

Outcomes are acknowledged only once Redis has executed the script that records
them; with the shipped configuration (append-only file, fsync always) an
acknowledged outcome survives a crash of the Redis server.

The log (the stream) may live on a Redis of its own that fsyncs every write, while
what decisions read stays on a Redis that does not make every reply wait for a disk.

Decisions are not written at Decide time: the decision id itself carries what an
outcome is checked against, signed (server/decision_ids.py). A write per decision
would make every Redis event loop wait for an fsync, which measured +0.5 ms on
Decide's p99; outcomes are far rarer than decisions.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from decision_engine.errors import OutcomeLogUnavailableError, StoreUnavailableError
from decision_engine.ruleset.compiled import DailyCap
from decision_engine.ruleset.spec import Learning
from decision_engine.store.connection import PipelinedConnection, Script
from decision_engine.store.keys import (
    ARM_STATS,
    LEARNING,
    OFFER_STATS,
    OUTCOME_STREAM,
    cap_key,
    customer_caps_key,
    history_key,
    profile_key,
)

log = logging.getLogger(__name__)

DEFAULT_DECISION_TTL_S = 7 * 86_400
DEFAULT_OUTCOMES_TIMEOUT_S = 1.0
"""How long RecordOutcome waits for its two Redis calls before answering UNAVAILABLE."""
DEFAULT_STREAM_MAXLEN = 1_000_000
HISTORY_DAYS = 400
"""Offer history older than this is dropped (longer than any contact policy window)."""
HISTORY_EVENTS = 50
"""At most this many events are kept per customer and offer."""
CAP_TTL_S = 2 * 86_400
"""Cap counters are named by their UTC day; the expiry only clears them once it is over."""

# The outcome log, on the durable Redis. KEYS: the outcome's dedupe marker, the stream.
# ARGV: decision id, customer, offer ("" for an interaction outcome), outcome, channel,
# reason, at, stream maxlen, marker ttl (ms), arm, ruleset version, interaction id.
_LOG_LUA = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[9]) then return {'duplicate'} end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*',
  'decision', ARGV[1], 'customer', ARGV[2], 'offer', ARGV[3], 'outcome', ARGV[4],
  'channel', ARGV[5], 'reason', ARGV[6], 'at', ARGV[7], 'arm', ARGV[10],
  'ruleset', ARGV[11], 'interaction', ARGV[12])
return {'ok', id}
"""

# What decisions read, on the decision path's Redis: idempotent on its own marker, so
# running it again after a failure (or for a retried outcome) applies an outcome once.
# KEYS: applied marker, marker of the decision's first outcome, the customer's offer
# history, the customer's profile, the arms' counters, the offers' counters, the learning
# counters. ARGV: offer, outcome, at, marker ttl (ms), history
# days, history events, learning half-life in seconds ("" when not learning), the
# profile field learned by, arm, interaction id.
_APPLY_LUA = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[4]) then return 0 end
local offer, outcome, arm = ARGV[1], ARGV[2], ARGV[9]
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[4]) then
  redis.call('HINCRBY', KEYS[5], arm .. '|decisions', 1)
end
if offer == '' then
  redis.call('HINCRBY', KEYS[5], arm .. '|' .. outcome, 1)
  return 1
end

local events = redis.call('HGET', KEYS[3], offer)
local kept = {}
local cutoff = tonumber(ARGV[3]) - tonumber(ARGV[5]) * 86400
if events then
  for item in string.gmatch(events, '[^;]+') do
    local at = tonumber(string.match(item, '^([^|]*)'))
    if at and at >= cutoff then kept[#kept + 1] = item end
  end
end
kept[#kept + 1] = ARGV[3] .. '|' .. outcome .. '|' .. ARGV[10]
local first = math.max(1, #kept - tonumber(ARGV[6]) + 1)
redis.call('HSET', KEYS[3], offer, table.concat(kept, ';', first))
redis.call('PEXPIRE', KEYS[3], math.floor(tonumber(ARGV[5]) * 86400000))
redis.call('HINCRBY', KEYS[6], offer .. '|' .. outcome, 1)
redis.call('HINCRBY', KEYS[6], arm .. '|' .. offer .. '|' .. outcome, 1)

-- Learning: accepted counts as a success, declined or unanswered as a failure;
-- older evidence halves every half-life.
local success = outcome == 'accepted' and 1 or 0
local failure = (outcome == 'declined' or outcome == 'no_response') and 1 or 0
if ARGV[7] == '' or success + failure == 0 then return 1 end
local now, half_life = tonumber(ARGV[3]), tonumber(ARGV[7])
local fields = {offer}
if ARGV[8] ~= '' then
  local segment = redis.call('HGET', KEYS[4], ARGV[8])
  if segment then fields[2] = offer .. '|' .. segment end
end
for _, field in ipairs(fields) do
  local a, b, stamp, weight = 0, 0, now, 1
  local stored = redis.call('HGET', KEYS[7], field)
  local sa, sb, st
  if stored then
    sa, sb, st = string.match(stored, '^([^,]+),([^,]+),([^,]+)$')
    sa, sb, st = tonumber(sa), tonumber(sb), tonumber(st)
  end
  -- Counts that do not parse (another tool's) are as if absent, as decisions read them:
  -- an error here would come after the markers are set, and lose the outcome.
  if sa and sb and st then
    local decay = 1
    if half_life > 0 and now > st then decay = 0.5 ^ ((now - st) / half_life) end
    if half_life > 0 and now < st then
      -- A late (backdated) outcome: the counts keep their time, the outcome weighs less.
      weight, stamp = 0.5 ^ ((st - now) / half_life), st
    end
    a, b = sa * decay, sb * decay
  end
  local counts = string.format('%.6f,%.6f,%.3f', a + success * weight, b + failure * weight, stamp)
  redis.call('HSET', KEYS[7], field, counts)
end
return 1
"""
# KEYS: the customer's capped-offer counts of the day, then the day's counter of each
# offer to reserve. ARGV: ttl (s), then per offer: offer id, cap, cap per customer.
# All or nothing per offer: both counters are taken, or neither. The reply per offer:
# 1 granted, 0 the day's budget is spent, -1 this customer has had their share.
_RESERVE_LUA = """
local ttl = ARGV[1]
local reply = {}
for i = 2, #KEYS do
  local at = 2 + (i - 2) * 3
  local offer, cap, share = ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  -- A counter that is not a number (another tool's) cannot be checked: as if spent.
  local used = tonumber(redis.call('GET', KEYS[i]) or '0') or cap
  local had = tonumber(redis.call('HGET', KEYS[1], offer) or '0') or share
  if had >= share then
    reply[#reply + 1] = -1
  elseif used >= cap then
    reply[#reply + 1] = 0
  else
    redis.call('INCR', KEYS[i])
    redis.call('EXPIRE', KEYS[i], ttl)
    redis.call('HINCRBY', KEYS[1], offer, 1)
    redis.call('EXPIRE', KEYS[1], ttl)
    reply[#reply + 1] = 1
  end
end
return reply
"""

_LOG = Script(_LOG_LUA)
_APPLY = Script(_APPLY_LUA)
_RESERVE = Script(_RESERVE_LUA)


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """What an outcome is checked against (carried by the decision id)."""

    decision_id: str
    """As issued: the one spelling of this decision, so outcomes are deduplicated on it."""
    customer_id: str
    offer_ids: tuple[str, ...]
    interaction_id: str
    channel: str
    ruleset_version: str
    arm: str
    at: float


@dataclass(frozen=True, slots=True)
class Recorded:
    """The result of recording an outcome."""

    status: str
    """"ok" or "duplicate"."""
    outcome_id: str = ""


@dataclass(frozen=True, slots=True)
class LoggedOutcome:
    """What applying an outcome needs; all of it is in the outcome's log entry."""

    decision_id: str
    customer_id: str
    offer_id: str
    """"" for an outcome of the interaction."""
    outcome: str
    at: float
    arm: str
    interaction_id: str


async def log_outcome(
    log: PipelinedConnection,
    *,
    decision: DecisionRecord,
    offer_id: str,
    outcome: str,
    channel: str,
    reason: str,
    at: float,
    decision_ttl_s: float = DEFAULT_DECISION_TTL_S,
    stream_maxlen: int = DEFAULT_STREAM_MAXLEN,
) -> Recorded:
    """Write an outcome to the durable log, once (a repeat is "duplicate")."""
    logged = await _LOG(
        log,
        [f"nba:outcome:{_digest(decision.decision_id)}:{offer_id}:{outcome}", OUTCOME_STREAM],
        [
            decision.decision_id, decision.customer_id, offer_id, outcome,
            channel or decision.channel, reason, f"{at:.3f}", stream_maxlen,
            int(decision_ttl_s * 1000), decision.arm, decision.ruleset_version,
            decision.interaction_id,
        ],
    )  # fmt: skip
    return Recorded(*(str(part) for part in logged))


async def apply_outcome(
    apply: PipelinedConnection,
    entry: LoggedOutcome,
    *,
    decision_ttl_s: float = DEFAULT_DECISION_TTL_S,
    learning: Learning | None = None,
) -> bool:
    """Apply a logged outcome to what decisions read (offer history, counters, learning);
    False when it was applied before, so applying again is always safe."""
    learn = learning if learning is not None and learning.enabled else None
    digest = _digest(entry.decision_id)
    applied = await _APPLY(
        apply,
        [
            f"nba:applied:{digest}:{entry.offer_id}:{entry.outcome}",
            f"nba:applied:{digest}",
            history_key(entry.customer_id),
            profile_key(entry.customer_id),
            ARM_STATS,
            OFFER_STATS,
            LEARNING,
        ],
        [
            entry.offer_id, entry.outcome, f"{entry.at:.3f}", int(decision_ttl_s * 1000),
            HISTORY_DAYS, HISTORY_EVENTS,
            "" if learn is None else learn.half_life_days * 86_400,
            "" if learn is None else learn.by or "",
            entry.arm, entry.interaction_id,
        ],
    )  # fmt: skip
    return bool(applied)


async def record_outcome(
    log: PipelinedConnection,
    apply: PipelinedConnection,
    *,
    decision: DecisionRecord,
    offer_id: str,
    outcome: str,
    channel: str,
    reason: str,
    at: float,
    decision_ttl_s: float = DEFAULT_DECISION_TTL_S,
    stream_maxlen: int = DEFAULT_STREAM_MAXLEN,
    learning: Learning | None = None,
    budget: Callable[[], float] | None = None,
) -> Recorded:
    """Write an outcome to the durable log, then apply it to what decisions read. The
    caller has checked that the decision returned `offer_id`. The two Redis may be one.

    `budget` gives the seconds each of the two steps may take, asked as the step starts
    (None: no limit of ours). A failure names the Redis that did not answer:
    OutcomeLogUnavailableError for the log; StoreUnavailableError for what decisions
    read, once the outcome is logged (the reconciler applies it later).
    """
    limit = None if budget is None else budget()
    try:
        async with asyncio.timeout(limit):
            recorded = await log_outcome(
                log,
                decision=decision,
                offer_id=offer_id,
                outcome=outcome,
                channel=channel,
                reason=reason,
                at=at,
                decision_ttl_s=decision_ttl_s,
                stream_maxlen=stream_maxlen,
            )
    except TimeoutError:
        raise OutcomeLogUnavailableError(_no_answer(limit)) from None
    except StoreUnavailableError as exc:
        raise OutcomeLogUnavailableError(str(exc)) from exc
    # Also for a duplicate: if an earlier attempt was logged but not applied, this applies it.
    entry = logged_outcome(decision, offer_id=offer_id, outcome=outcome, at=at)
    limit = None if budget is None else budget()
    later = "the outcome is logged and will be applied by the reconciler"
    try:
        async with asyncio.timeout(limit):
            await apply_outcome(apply, entry, decision_ttl_s=decision_ttl_s, learning=learning)
    except TimeoutError:
        raise StoreUnavailableError(f"{_no_answer(limit)}; {later}") from None
    except StoreUnavailableError as exc:
        raise StoreUnavailableError(f"{exc}; {later}") from exc
    return recorded


def _no_answer(limit: float | None) -> str:
    return "no answer" if limit is None else f"no answer within {limit * 1e3:.0f} ms"


def logged_outcome(
    decision: DecisionRecord, *, offer_id: str, outcome: str, at: float
) -> LoggedOutcome:
    """The part of an outcome of `decision` that applying it needs."""
    return LoggedOutcome(
        decision.decision_id,
        decision.customer_id,
        offer_id,
        outcome,
        at,
        decision.arm,
        decision.interaction_id,
    )


def _digest(decision_id: str) -> str:
    return hashlib.sha1(decision_id.encode()).hexdigest()


async def load_learning(connection: PipelinedConnection) -> dict[str, str]:
    """The decayed acceptance counts: `offer` or `offer|segment` → `a,b,updated_at`."""
    reply = await connection.call("HGETALL", LEARNING)
    return dict(zip(reply[::2], reply[1::2], strict=True))


@dataclass(frozen=True, slots=True)
class Reservation:
    """What reserving capped offers for one decision got."""

    granted: frozenset[str]
    spent: frozenset[str]
    """Denied: the day's budget is spent."""
    customer_spent: frozenset[str]
    """Denied: this customer has had their share of it today."""


async def reserve_caps(
    connection: PipelinedConnection,
    customer_id: str,
    caps: Sequence[tuple[str, DailyCap]],
    *,
    day: str,
) -> Reservation:
    """Take one unit of today's budget of each capped offer, and of this customer's share."""
    if not caps:
        return Reservation(frozenset(), frozenset(), frozenset())
    reply = await _RESERVE(
        connection,
        [customer_caps_key(customer_id, day), *(cap_key(offer_id, day) for offer_id, _ in caps)],
        [
            CAP_TTL_S,
            *(part for offer_id, cap in caps for part in (offer_id, cap.total, cap.per_customer)),
        ],
    )
    by_reply: dict[int, set[str]] = {1: set(), 0: set(), -1: set()}
    for (offer_id, _), status in zip(caps, reply, strict=True):
        by_reply[int(status)].add(offer_id)
    return Reservation(frozenset(by_reply[1]), frozenset(by_reply[0]), frozenset(by_reply[-1]))


def release_caps(
    connection: PipelinedConnection, customer_id: str, offer_ids: Sequence[str], *, day: str
) -> None:
    """Give back budget reserved for offers that were not returned after all."""
    mine = customer_caps_key(customer_id, day)
    for offer_id in offer_ids:
        try:
            connection.send_nowait("DECR", cap_key(offer_id, day)).add_done_callback(_log_failure)
            connection.send_nowait("HINCRBY", mine, offer_id, -1).add_done_callback(_log_failure)
        except StoreUnavailableError as exc:
            log.warning("could not give back the budget of %s: %s", offer_id, exc)


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("a write to Redis failed: %s", future.exception())
