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
from decision_engine.store.connection import (
    Connection,
    ReplyError,
    Script,
    ScriptCall,
    run_scripts,
)
from decision_engine.store.keys import (
    ARM_STATS,
    LEARNING,
    OFFER_STATS,
    OUTCOME_STREAM,
    PREFIX,
    cap_key,
    customer_caps_key,
    history_key,
    profile_key,
)

log = logging.getLogger(__name__)

Step = tuple[list[str], list[str | float]]

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

# What decisions read, on the decision path's Redis, in steps that each touch one slot
# of a Redis Cluster: the customer's keys, then each global counter. Each step is
# idempotent on a marker of its own, in its own slot, so running them again after a
# failure (or for a retried outcome) applies an outcome once, step by step.

# KEYS: the step's marker, the customer's offer history, the customer's profile.
# ARGV: offer, outcome, at, marker ttl (ms), history days, history events, interaction
# id, the profile field learned by. The reply: 1 or 0 (applied before), the customer's
# value of that field ('' for none).
_APPLY_CUSTOMER_LUA = """
local segment = ''
if ARGV[8] ~= '' then segment = redis.call('HGET', KEYS[3], ARGV[8]) or '' end
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[4]) then return {0, segment} end
local events = redis.call('HGET', KEYS[2], ARGV[1])
local kept = {}
local cutoff = tonumber(ARGV[3]) - tonumber(ARGV[5]) * 86400
if events then
  for item in string.gmatch(events, '[^;]+') do
    local at = tonumber(string.match(item, '^([^|]*)'))
    if at and at >= cutoff then kept[#kept + 1] = item end
  end
end
kept[#kept + 1] = ARGV[3] .. '|' .. ARGV[2] .. '|' .. ARGV[7]
local first = math.max(1, #kept - tonumber(ARGV[6]) + 1)
redis.call('HSET', KEYS[2], ARGV[1], table.concat(kept, ';', first))
redis.call('PEXPIRE', KEYS[2], math.floor(tonumber(ARGV[5]) * 86400000))
return {1, segment}
"""

# KEYS: the step's marker, the marker of the decision's first outcome, the arms'
# counters. ARGV: offer ('' for an interaction outcome), outcome, marker ttl (ms), arm.
_APPLY_ARM_LUA = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[3]) then return 0 end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) then
  redis.call('HINCRBY', KEYS[3], ARGV[4] .. '|decisions', 1)
end
if ARGV[1] == '' then redis.call('HINCRBY', KEYS[3], ARGV[4] .. '|' .. ARGV[2], 1) end
return 1
"""

# KEYS: the step's marker, the offers' counters. ARGV: offer, outcome, marker ttl, arm.
_APPLY_OFFER_LUA = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[3]) then return 0 end
redis.call('HINCRBY', KEYS[2], ARGV[1] .. '|' .. ARGV[2], 1)
redis.call('HINCRBY', KEYS[2], ARGV[4] .. '|' .. ARGV[1] .. '|' .. ARGV[2], 1)
return 1
"""

# Learning: accepted counts as a success, declined or unanswered as a failure; older
# evidence halves every half-life. KEYS: the step's marker, the learning counters.
# ARGV: offer, outcome, at, marker ttl (ms), half-life (s), the customer's segment.
_APPLY_LEARNING_LUA = """
local success = ARGV[2] == 'accepted' and 1 or 0
local failure = (ARGV[2] == 'declined' or ARGV[2] == 'no_response') and 1 or 0
if success + failure == 0 then return 0 end
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[4]) then return 0 end
local now, half_life = tonumber(ARGV[3]), tonumber(ARGV[5])
local fields = {ARGV[1]}
if ARGV[6] ~= '' then fields[2] = ARGV[1] .. '|' .. ARGV[6] end
for _, field in ipairs(fields) do
  local a, b, stamp, weight = 0, 0, now, 1
  local stored = redis.call('HGET', KEYS[2], field)
  local sa, sb, st
  if stored then
    sa, sb, st = string.match(stored, '^([^,]+),([^,]+),([^,]+)$')
    sa, sb, st = tonumber(sa), tonumber(sb), tonumber(st)
  end
  -- Counts that do not parse (another tool's) are as if absent, as decisions read them:
  -- an error here would come after the marker is set, and lose the outcome.
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
  redis.call('HSET', KEYS[2], field, counts)
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

# The same in two steps, for a Redis Cluster, where the customer's counts and each
# offer's counter live in different slots: run together (one round trip, a master each),
# and a unit one side granted while the other denied is given back.
# KEYS: the customer's capped-offer counts of the day. ARGV: ttl (s), then per offer:
# offer id, cap per customer. The reply per offer: 1 granted, -1 share spent.
_RESERVE_SHARE_LUA = """
local reply = {}
for i = 2, #ARGV, 2 do
  local had = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0') or tonumber(ARGV[i + 1])
  if had >= tonumber(ARGV[i + 1]) then
    reply[#reply + 1] = -1
  else
    redis.call('HINCRBY', KEYS[1], ARGV[i], 1)
    redis.call('EXPIRE', KEYS[1], ARGV[1])
    reply[#reply + 1] = 1
  end
end
return reply
"""
# KEYS: an offer's counter of the day. ARGV: ttl (s), cap. 1 granted, 0 budget spent.
_RESERVE_BUDGET_LUA = """
local cap = tonumber(ARGV[2])
local used = tonumber(redis.call('GET', KEYS[1]) or '0') or cap
if used >= cap then return 0 end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""

_LOG = Script(_LOG_LUA)
_RESERVE_SHARE = Script(_RESERVE_SHARE_LUA)
_RESERVE_BUDGET = Script(_RESERVE_BUDGET_LUA)
_APPLY_CUSTOMER = Script(_APPLY_CUSTOMER_LUA)
_APPLY_ARM = Script(_APPLY_ARM_LUA)
_APPLY_OFFER = Script(_APPLY_OFFER_LUA)
_APPLY_LEARNING = Script(_APPLY_LEARNING_LUA)
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


def outcome_marker(decision_id: str, offer_id: str, outcome: str) -> str:
    """Set once an outcome is logged; in the outcome stream's cluster slot."""
    return f"{PREFIX}:outcome:{{{OUTCOME_STREAM}}}:{_digest(decision_id)}:{offer_id}:{outcome}"


async def log_outcome(
    log: Connection,
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
        [outcome_marker(decision.decision_id, offer_id, outcome), OUTCOME_STREAM],
        [
            decision.decision_id, decision.customer_id, offer_id, outcome,
            channel or decision.channel, reason, f"{at:.3f}", stream_maxlen,
            int(decision_ttl_s * 1000), decision.arm, decision.ruleset_version,
            decision.interaction_id,
        ],
    )  # fmt: skip
    return Recorded(*(str(part) for part in logged))


async def apply_outcome(
    apply: Connection,
    entry: LoggedOutcome,
    *,
    decision_ttl_s: float = DEFAULT_DECISION_TTL_S,
    learning: Learning | None = None,
) -> bool:
    """Apply a logged outcome to what decisions read (offer history, counters, learning);
    False when it was applied before, so applying again is always safe.

    One round trip, two when learning by a profile field (the customer's value of it
    comes from the first); on a Redis Cluster each step goes to its own slot's master.
    """
    learn = learning if learning is not None and learning.enabled else None
    ttl_ms = int(decision_ttl_s * 1000)
    which = f"{_digest(entry.decision_id)}:{entry.offer_id}:{entry.outcome}"
    offer, outcome, at = entry.offer_id, entry.outcome, f"{entry.at:.3f}"
    arm_step: Step = (
        [applied_key(ARM_STATS, which), applied_key(ARM_STATS, _digest(entry.decision_id)),
         ARM_STATS],
        [offer, outcome, ttl_ms, entry.arm],
    )  # fmt: skip
    if not offer:
        return bool(await _APPLY_ARM(apply, *arm_step))
    by = "" if learn is None else learn.by or ""
    customer_step: Step = (
        [f"{PREFIX}:{{{entry.customer_id}}}:applied:{which}", history_key(entry.customer_id),
         profile_key(entry.customer_id)],
        [offer, outcome, at, ttl_ms, HISTORY_DAYS, HISTORY_EVENTS, entry.interaction_id, by],
    )  # fmt: skip
    offer_step: Step = (
        [applied_key(OFFER_STATS, which), OFFER_STATS],
        [offer, outcome, ttl_ms, entry.arm],
    )

    def learning_step(segment: str) -> Step:
        assert learn is not None
        keys = [applied_key(LEARNING, which), LEARNING]
        return keys, [offer, outcome, at, ttl_ms, learn.half_life_days * 86_400, segment]

    calls: list[ScriptCall] = [
        (_APPLY_CUSTOMER, customer_step), (_APPLY_ARM, arm_step), (_APPLY_OFFER, offer_step),
    ]  # fmt: skip
    if learn is not None and not by:
        calls.append((_APPLY_LEARNING, learning_step("")))
    replies = await run_scripts(apply, calls)
    (customer_applied, segment), *others = replies
    applied = bool(customer_applied) or any(bool(r) for r in others)
    if learn is not None and by:
        applied = bool(await _APPLY_LEARNING(apply, *learning_step(str(segment)))) or applied
    return applied


def applied_key(counters: str, which: str) -> str:
    """The marker of applying an outcome to global `counters`, in their cluster slot."""
    return f"{PREFIX}:applied:{{{counters}}}:{which}"


async def record_outcome(
    log: Connection,
    apply: Connection,
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
    wait_replicas: int = 0,
) -> Recorded:
    """Write an outcome to the durable log, then apply it to what decisions read. The
    caller has checked that the decision returned `offer_id`. The two Redis may be one.

    `wait_replicas`: the log's replicas that must have the outcome (Redis WAIT, on the
    log's connection, which must then be one of its own: WAIT holds up what follows it)
    before it counts as logged; a duplicate waits too, so a retry is acknowledged only
    once the first attempt's write is on the replicas.

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
            if wait_replicas:
                await _on_replicas(log, wait_replicas, limit)
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


async def _on_replicas(log: Connection, replicas: int, limit: float | None) -> None:
    """Wait until `replicas` replicas of the log's master have every write so far."""
    timeout_ms = 1000 if limit is None else max(int(limit * 1000 * 0.9), 1)
    try:
        acked = int(await log.call_on(OUTCOME_STREAM, "WAIT", replicas, timeout_ms))
    except ReplyError as exc:
        raise StoreUnavailableError(str(exc)) from exc
    if acked < replicas:
        raise OutcomeLogUnavailableError(
            f"outcome logged but on {acked} of {replicas} replicas within {timeout_ms} ms; "
            "retry (it counts once)"
        )


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


async def load_learning(connection: Connection) -> dict[str, str]:
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
    connection: Connection,
    customer_id: str,
    caps: Sequence[tuple[str, DailyCap]],
    *,
    day: str,
    split: bool = False,
) -> Reservation:
    """Take one unit of today's budget of each capped offer, and of this customer's share;
    `split` on a Redis Cluster (the two are in different slots)."""
    if not caps:
        return Reservation(frozenset(), frozenset(), frozenset())
    if split:
        return await _reserve_split(connection, customer_id, caps, day=day)
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


async def _reserve_split(
    connection: Connection, customer_id: str, caps: Sequence[tuple[str, DailyCap]], *, day: str
) -> Reservation:
    mine = customer_caps_key(customer_id, day)
    share: ScriptCall = (
        _RESERVE_SHARE,
        ([mine], [CAP_TTL_S, *(part for o, cap in caps for part in (o, cap.per_customer))]),
    )
    budgets: list[ScriptCall] = [
        (_RESERVE_BUDGET, ([cap_key(offer_id, day)], [CAP_TTL_S, cap.total]))
        for offer_id, cap in caps
    ]
    shares, *budget_replies = await run_scripts(connection, [share, *budgets])
    granted, spent, customer_spent = set(), set(), set()
    for (offer_id, _), got_share, got_budget in zip(caps, shares, budget_replies, strict=True):
        if int(got_share) == 1 and int(got_budget) == 1:
            granted.add(offer_id)
        elif int(got_share) == 1:
            spent.add(offer_id)
            _give_back(connection, "HINCRBY", mine, offer_id, -1)
        else:
            customer_spent.add(offer_id)
            if int(got_budget) == 1:
                _give_back(connection, "DECR", cap_key(offer_id, day))
    return Reservation(frozenset(granted), frozenset(spent), frozenset(customer_spent))


def _give_back(connection: Connection, *command: str | int) -> None:
    try:
        connection.send_nowait(*command).add_done_callback(_log_failure)
    except StoreUnavailableError as exc:
        log.warning("could not give back a unit of budget: %s", exc)


def release_caps(
    connection: Connection, customer_id: str, offer_ids: Sequence[str], *, day: str
) -> None:
    """Give back budget reserved for offers that were not returned after all."""
    mine = customer_caps_key(customer_id, day)
    for offer_id in offer_ids:
        _give_back(connection, "DECR", cap_key(offer_id, day))
        _give_back(connection, "HINCRBY", mine, offer_id, -1)


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("a write to Redis failed: %s", future.exception())
