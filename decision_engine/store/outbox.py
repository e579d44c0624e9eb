"""The notice outbox, in the durable Redis: what delivery workers take, settle or retry.

A notice due now is an entry of the outbox stream (consumer group `delivery`); a notice
due later (quiet hours, or a retry's backoff) is a member of the held sorted set,
scored by when it is due, and moves onto the stream when that time comes. Every move is
one script, so a notice is always in exactly one place: the stream (pending or not), the
held set, the dead-letter stream, or gone because it was delivered. A worker that dies
holding entries leaves them pending, and another worker claims them (XAUTOCLAIM).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from dataclasses import fields as dataclass_fields

from decision_engine.store.connection import Connection, Script
from decision_engine.store.keys import (
    NOTICE_DEAD,
    NOTICE_HELD,
    NOTICE_OUTBOX,
    OUTBOX_GROUP,
    notice_delivered_key,
)
from decision_engine.store.replies import stream_entries

DELIVERED_TTL_S = 30 * 86_400
"""How long a delivered notice's key is remembered, so a redelivery is not sent again."""
DEAD_MAXLEN = 100_000


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One notice to deliver, as the outbox holds it."""

    key: str
    """The idempotency key, `event/notice/customer/channel`: receivers drop a repeat."""
    notice_id: str
    event_id: str
    event_type: str
    customer_id: str
    channel: str
    address: str
    subject: str
    text: str
    urgent: bool
    decided_at: float
    not_before: float
    attempt: int = 0
    """Delivery attempts made so far."""
    last_error: str = ""


class BadOutboxEntry(ValueError):
    """An outbox entry that is not a notice (written by hand, or by an older version)."""


def encode(entry: OutboxEntry) -> dict[str, str]:
    """The entry as stream fields (all strings)."""
    out = {}
    for name in _FIELDS:  # not asdict(): it deep-copies, 60 µs an entry
        value = getattr(entry, name)
        if isinstance(value, bool):
            out[name] = "1" if value else "0"
        elif isinstance(value, float):
            out[name] = repr(value)
        else:
            out[name] = str(value)
    return out


_FIELDS = tuple(f.name for f in dataclass_fields(OutboxEntry))


def decode(fields: Mapping[str, str]) -> OutboxEntry:
    """The entry of stream fields; BadOutboxEntry names what is wrong."""
    try:
        return OutboxEntry(
            key=fields["key"],
            notice_id=fields["notice_id"],
            event_id=fields["event_id"],
            event_type=fields.get("event_type", ""),
            customer_id=fields["customer_id"],
            channel=fields["channel"],
            address=fields.get("address", ""),
            subject=fields.get("subject", ""),
            text=fields.get("text", ""),
            urgent=fields.get("urgent") == "1",
            decided_at=float(fields.get("decided_at") or 0.0),
            not_before=float(fields.get("not_before") or 0.0),
            attempt=int(fields.get("attempt") or 0),
            last_error=fields.get("last_error", ""),
        )
    except KeyError as exc:
        raise BadOutboxEntry(f"{exc.args[0]}: missing") from None
    except ValueError as exc:
        raise BadOutboxEntry(f"not a number: {exc}") from None


def held_member(entry: OutboxEntry) -> str:
    """The entry as a member of the held set (JSON of its fields, keys sorted)."""
    return json.dumps(encode(entry), sort_keys=True, separators=(",", ":"))


def flat(entry: OutboxEntry) -> list[str]:
    """The entry as XADD's field/value list."""
    return [part for item in encode(entry).items() for part in item]


# KEYS: held, outbox. ARGV: now, limit. Members due by now move onto the stream.
_RELEASE_LUA = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  local fields, flat = cjson.decode(member), {}
  for k, v in pairs(fields) do flat[#flat + 1] = k; flat[#flat + 1] = v end
  redis.call('XADD', KEYS[2], '*', unpack(flat))
  redis.call('ZREM', KEYS[1], member)
end
return #due
"""

# KEYS: outbox, delivered marker. ARGV: group, entry id, ttl. Delivered: forget the entry.
_DELIVERED_LUA = """
redis.call('SET', KEYS[2], '1', 'EX', tonumber(ARGV[3]))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return redis.call('XDEL', KEYS[1], ARGV[2])
"""

# KEYS: outbox, held. ARGV: group, entry id, due at, member. Try again later.
_RETRY_LUA = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]), ARGV[4])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""

# KEYS: outbox, dead. ARGV: group, entry id, maxlen, fields... Give up on it.
_DEAD_LUA = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4, #ARGV))
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""

# KEYS: dead, outbox. ARGV: dead entry id, fields... Back onto the outbox, attempts reset.
_REVIVE_LUA = """
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2, #ARGV))
return 1
"""
_RELEASE, _DELIVERED = Script(_RELEASE_LUA), Script(_DELIVERED_LUA)
_RETRY, _DEAD, _REVIVE = Script(_RETRY_LUA), Script(_DEAD_LUA), Script(_REVIVE_LUA)


async def release_due(durable: Connection, *, now: float, limit: int = 500) -> int:
    """Move held notices due by `now` onto the outbox stream; how many moved."""
    return int(await _RELEASE(durable, [NOTICE_HELD, NOTICE_OUTBOX], [repr(now), limit]))


async def was_delivered(durable: Connection, key: str) -> bool:
    """True when a notice of this key was delivered (a redelivery after a crash)."""
    return bool(await durable.call("EXISTS", notice_delivered_key(key)))


async def settle_delivered(durable: Connection, entry_id: str, key: str) -> None:
    """The notice is delivered: remember its key, drop its entry."""
    await _DELIVERED(
        durable,
        [NOTICE_OUTBOX, notice_delivered_key(key)],
        [OUTBOX_GROUP, entry_id, DELIVERED_TTL_S],
    )


async def retry_later(durable: Connection, entry_id: str, entry: OutboxEntry, *, at: float) -> bool:
    """Hold the notice (its attempt counted) until `at`; False if another worker settled
    the entry first."""
    member = held_member(replace(entry, not_before=at))
    return bool(
        await _RETRY(
            durable, [NOTICE_OUTBOX, NOTICE_HELD], [OUTBOX_GROUP, entry_id, repr(at), member]
        )
    )


async def dead_letter(durable: Connection, entry_id: str, entry: OutboxEntry) -> bool:
    """Move the notice to the dead-letter stream; False if another worker settled it first."""
    return bool(
        await _DEAD(
            durable,
            [NOTICE_OUTBOX, NOTICE_DEAD],
            [OUTBOX_GROUP, entry_id, DEAD_MAXLEN, *flat(entry)],
        )
    )


async def dead_letters(durable: Connection, *, count: int = 100) -> list[tuple[str, OutboxEntry]]:
    """The oldest dead letters: (entry id, notice)."""
    reply = await durable.call("XRANGE", NOTICE_DEAD, "-", "+", "COUNT", count)
    out = []
    for entry_id, fields in stream_entries(reply):
        try:
            out.append((entry_id, decode(fields)))
        except BadOutboxEntry:
            continue
    return out


async def revive(durable: Connection, entry_id: str, entry: OutboxEntry) -> bool:
    """A dead letter back onto the outbox with its attempts reset; False if it is gone."""
    fresh = replace(entry, attempt=0, last_error="")
    return bool(await _REVIVE(durable, [NOTICE_DEAD, NOTICE_OUTBOX], [entry_id, *flat(fresh)]))


async def oldest_age(durable: Connection, *, now: float) -> float:
    """Seconds since the oldest notice still on the outbox stream was added (0 if none):
    delivered entries are deleted, so this is how far delivery is behind."""
    reply = await durable.call("XRANGE", NOTICE_OUTBOX, "-", "+", "COUNT", 1)
    if not reply:
        return 0.0
    millis = int(str(reply[0][0]).partition("-")[0])
    return max(now - millis / 1000, 0.0)
