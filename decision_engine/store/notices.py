"""Business events and the notices they decide, in Redis.

An event is stored once (by event id) on the events stream of the durable Redis; a
notice process reads it with a consumer group (at least once: a crashed process's
entries are claimed by another). For each customer it reads the profile (decision
Redis) and the notices already sent (durable Redis), plans with the pure planner, and
commits the plans in one script that also writes them to the outbox, provided the
customer's sent notices did not change in between (else it plans again). So a notice
is never counted without being queued, nor queued without being counted.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from decision_engine.decide.notices import HELD, SEND, BusinessEvent, NoticePlan, SentNotice
from decision_engine.errors import StoreUnavailableError
from decision_engine.store.connection import Connection, Script
from decision_engine.store.keys import (
    EVENTS_GROUP,
    EVENTS_REJECTED,
    EVENTS_STREAM,
    NOTICE_HELD,
    NOTICE_OUTBOX,
    audience_key,
    event_seen_key,
    notice_key_index,
    notices_sent_key,
    notices_version_key,
    profile_key,
)
from decision_engine.store.outbox import OutboxEntry, flat, held_member
from decision_engine.store.replies import pairs

EVENT_ID_TTL_S = 7 * 86_400
SENT_HORIZON_S = 400 * 86_400
"""Sent notices older than this are forgotten (longer than any dedupe window: 366 days)."""
EVENTS_MAXLEN = 1_000_000
KEY_TTL_S = 30 * 86_400
"""How long a notice's key finds its customer, for provider receipts."""
ACCEPTED, DUPLICATE = "accepted", "duplicate"

# KEYS: the stream, then each event's seen key. ARGV: ttl, maxlen, then per event the
# number of its fields and its fields. A duplicate id is not added again.
_PUBLISH_LUA = """
local ttl, maxlen = tonumber(ARGV[1]), ARGV[2]
local out, i = {}, 3
for k = 2, #KEYS do
  local n = tonumber(ARGV[i])
  if redis.call('SET', KEYS[k], '1', 'NX', 'EX', ttl) then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', unpack(ARGV, i + 1, i + n))
    out[#out + 1] = 'accepted'
  else
    out[#out + 1] = 'duplicate'
  end
  i = i + n + 1
end
return out
"""

# KEYS: version, sent, outbox, held, then each plan's key index. ARGV: expected version,
# now, horizon, key ttl, then per plan: sent member, held score ('' when due now), held
# member, key index value, n, outbox fields.
_COMMIT_LUA = """
local current = redis.call('GET', KEYS[1]) or '0'
if current ~= ARGV[1] then return 0 end
local now = tonumber(ARGV[2])
redis.call('INCR', KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[3]))
local i, k = 5, 5
while i <= #ARGV do
  redis.call('ZADD', KEYS[2], now, ARGV[i])
  redis.call('SET', KEYS[k], ARGV[i + 3], 'EX', ARGV[4])
  local n = tonumber(ARGV[i + 4])
  if ARGV[i + 1] == '' then
    redis.call('XADD', KEYS[3], '*', unpack(ARGV, i + 5, i + 4 + n))
  else
    redis.call('ZADD', KEYS[4], tonumber(ARGV[i + 1]), ARGV[i + 2])
  end
  i, k = i + 5 + n, k + 1
end
return 1
"""
_PUBLISH = Script(_PUBLISH_LUA)
_COMMIT = Script(_COMMIT_LUA)


def event_fields(event: BusinessEvent, *, published_at: float) -> list[str]:
    """The stream entry of an event (producers writing to Redis use the same fields)."""
    fields = [
        "event_id", event.event_id, "type", event.type,
        "occurred_at", repr(event.occurred_at), "published_at", repr(published_at),
        "attributes", json.dumps(dict(event.attributes), separators=(",", ":")),
    ]  # fmt: skip
    if event.customer_id:
        fields += ["customer_id", event.customer_id]
    if event.audience is not None:
        fields += ["audience_field", event.audience[0], "audience_value", event.audience[1]]
    return fields


async def publish(durable: Connection, events: Sequence[BusinessEvent], *, now: float) -> list[str]:
    """Store each event once; ACCEPTED or DUPLICATE per event, in order."""
    keys = [EVENTS_STREAM, *(event_seen_key(e.event_id) for e in events)]
    args: list[str | float] = [EVENT_ID_TTL_S, EVENTS_MAXLEN]
    for event in events:
        fields = event_fields(event, published_at=now)
        args += [len(fields), *fields]
    reply = await _PUBLISH(durable, keys, args)
    return [str(status) for status in reply]


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as read from the stream: its entry id, and whether it was published
    through the RPC (its id already counted once) or written by a producer directly."""

    entry_id: str
    event: BusinessEvent
    published_at: float
    checked: bool
    page: tuple[str, ...] | None = None
    """A page of an audience event: the customers this entry is for."""


class BadEventEntry(ValueError):
    """A stream entry that is not an event (a producer wrote it wrong)."""


def parse_entry(entry_id: str, fields: Mapping[str, str]) -> StoredEvent:
    """An event of the stream; BadEventEntry names what is wrong."""
    try:
        attributes = json.loads(fields.get("attributes") or "{}")
    except json.JSONDecodeError as exc:
        raise BadEventEntry(f"attributes: not JSON ({exc.msg})") from None
    if not isinstance(attributes, dict):
        raise BadEventEntry("attributes: not a JSON object")
    for field in ("event_id", "type"):
        if not fields.get(field):
            raise BadEventEntry(f"{field}: missing")
    audience = None
    if fields.get("audience_field"):
        audience = (fields["audience_field"], fields.get("audience_value", ""))
    try:
        occurred = float(fields.get("occurred_at") or 0.0)
        published = float(fields.get("published_at") or 0.0)
    except ValueError:
        raise BadEventEntry("occurred_at: not epoch seconds") from None
    event = BusinessEvent(
        event_id=fields["event_id"],
        type=fields["type"],
        occurred_at=occurred,
        attributes={str(k): str(v) for k, v in attributes.items()},
        customer_id=fields.get("customer_id", ""),
        audience=audience,
    )
    return StoredEvent(
        entry_id, event, published, checked="published_at" in fields, page=_page(fields)
    )


MAX_PAGE = 10_000


def _page(fields: Mapping[str, str]) -> tuple[str, ...] | None:
    if "customers" not in fields:
        return None
    try:
        customers = json.loads(fields["customers"])
    except json.JSONDecodeError as exc:
        raise BadEventEntry(f"customers: not JSON ({exc.msg})") from None
    if not isinstance(customers, list) or not all(isinstance(c, str) and c for c in customers):
        raise BadEventEntry("customers: not a list of customer ids")
    if len(customers) > MAX_PAGE:
        raise BadEventEntry(f"customers: more than {MAX_PAGE} in one entry")
    return tuple(customers)


async def split_audience(
    durable: Connection,
    stored: StoredEvent,
    pages: Sequence[Sequence[str]],
) -> None:
    """An audience event as page entries on the events stream, which every notice process
    shares; then the event itself is acknowledged. Split twice (a crash before the
    acknowledgement) the pages repeat, and deduplication sends nothing twice."""
    # A page counts as published (its event id was seen once already): event_fields says so.
    base = event_fields(stored.event, published_at=stored.published_at)
    commands = [
        ("XADD", EVENTS_STREAM, "*", *base, "customers", json.dumps(list(page))) for page in pages
    ]
    for start in range(0, len(commands), 200):
        for reply in await durable.pipeline(commands[start : start + 200]):
            if isinstance(reply, Exception):
                raise StoreUnavailableError(str(reply)) from reply
    await durable.call("XACK", EVENTS_STREAM, EVENTS_GROUP, stored.entry_id)


REJECTED_MAXLEN = 100_000

# KEYS: rejected stream, events stream. ARGV: group, entry id, maxlen, reason, fields...
_REJECT_LUA = """
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'reason', ARGV[4], 'entry', ARGV[2],
  unpack(ARGV, 5, #ARGV))
return redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
"""
_REJECT = Script(_REJECT_LUA)


async def reject(
    durable: Connection, entry_id: str, fields: Mapping[str, str], reason: str
) -> None:
    """Move an entry that is not a good event aside, with why (and acknowledge it)."""
    flat = [part for item in fields.items() for part in item]
    await _REJECT(
        durable,
        [EVENTS_REJECTED, EVENTS_STREAM],
        [EVENTS_GROUP, entry_id, REJECTED_MAXLEN, reason[:500], *flat],
    )


async def first_sight(durable: Connection, event_id: str) -> bool:
    """True the first time an event id is seen (for events written to the stream directly)."""
    return bool(
        await durable.call("SET", event_seen_key(event_id), "1", "NX", "EX", EVENT_ID_TTL_S)
    )


@dataclass(frozen=True, slots=True)
class CustomerNotices:
    """What planning a customer's notices reads: profile, notices sent, their version."""

    customer_id: str
    profile: dict[str, str] | None
    sent: tuple[SentNotice, ...]
    version: str


async def read_customers(
    decision: Connection,
    durable: Connection,
    customer_ids: Sequence[str],
    *,
    now: float,
) -> list[CustomerNotices]:
    """Each customer's profile and sent notices: one pipeline to each Redis."""
    since = now - SENT_HORIZON_S
    profiles, reads = await asyncio.gather(
        decision.pipeline([("HGETALL", profile_key(c)) for c in customer_ids]),
        durable.pipeline(
            [command for c in customer_ids for command in (
                ("GET", notices_version_key(c)),
                ("ZRANGEBYSCORE", notices_sent_key(c), since, "+inf", "WITHSCORES"),
            )]
        ),
    )  # fmt: skip
    out = []
    for n, customer_id in enumerate(customer_ids):
        profile, version, members = profiles[n], reads[2 * n], reads[2 * n + 1]
        for reply in (profile, version, members):
            if isinstance(reply, Exception):
                raise StoreUnavailableError(str(reply)) from reply
        sent = (_sent(str(m), float(s)) for m, s in zip(members[::2], members[1::2], strict=True))
        out.append(
            CustomerNotices(
                customer_id,
                pairs([str(p) for p in profile]) or None,
                tuple(sent),
                "0" if version is None else str(version),
            )
        )
    return out


def _sent(member: str, at: float) -> SentNotice:
    notice_id, _, rest = member.partition("|")
    key, _, rest = rest.partition("|")
    urgent, _, _event = rest.partition("|")
    return SentNotice(notice_id, key, at, urgent == "1")


def _sent_member(plan: NoticePlan, event_id: str) -> str:
    # The dedupe key is rendered text: keep it from splitting the member.
    key = plan.dedupe_key.replace("|", "/")
    return f"{plan.notice_id}|{key}|{int(plan.urgent)}|{event_id}"


def notice_key(event_id: str, notice_id: str, customer_id: str, channel: str) -> str:
    """The idempotency key of one notice: receivers drop a second delivery of it."""
    return f"{event_id}/{notice_id}/{customer_id}/{channel}"


def outbox_entry(
    plan: NoticePlan, event: BusinessEvent, customer_id: str, *, now: float
) -> OutboxEntry:
    """A notice planned to send, as the outbox holds it for the delivery workers."""
    return OutboxEntry(
        key=notice_key(event.event_id, plan.notice_id, customer_id, plan.channel),
        notice_id=plan.notice_id,
        event_id=event.event_id,
        event_type=event.type,
        customer_id=customer_id,
        channel=plan.channel,
        address=plan.address,
        subject=plan.subject,
        text=plan.text,
        urgent=plan.urgent,
        decided_at=now,
        not_before=plan.not_before,
    )


async def commit(
    durable: Connection,
    event: BusinessEvent,
    planned: Sequence[tuple[CustomerNotices, Sequence[NoticePlan]]],
    *,
    now: float,
) -> list[bool]:
    """Count and queue each customer's plans that send (now or held), one pipeline for
    all; per customer False if their sent notices changed since they were read (plan
    again)."""
    calls = []
    committed = [True] * len(planned)
    for n, (customer, plans) in enumerate(planned):
        call = _commit_call(customer, event, plans, now=now)
        if call is not None:
            calls.append((n, call))
    replies = await _COMMIT.many(durable, [call for _, call in calls])
    for (n, _), reply in zip(calls, replies, strict=True):
        committed[n] = bool(reply)
    return committed


def _commit_call(
    customer: CustomerNotices, event: BusinessEvent, plans: Sequence[NoticePlan], *, now: float
) -> tuple[list[str], list[str | float]] | None:
    """The commit script's keys and arguments for one customer; None if nothing sends."""
    args: list[str | float] = [customer.version, repr(now), SENT_HORIZON_S, KEY_TTL_S]
    keys = [
        notices_version_key(customer.customer_id),
        notices_sent_key(customer.customer_id),
        NOTICE_OUTBOX,
        NOTICE_HELD,
    ]
    for plan in plans:
        if plan.status not in (SEND, HELD):
            continue
        entry = outbox_entry(plan, event, customer.customer_id, now=now)
        held = plan.status == HELD
        fields = [] if held else flat(entry)
        keys.append(notice_key_index(entry.key))
        args += [
            _sent_member(plan, event.event_id),
            repr(plan.not_before) if held else "",
            held_member(entry) if held else "",
            f"{customer.customer_id}|{plan.notice_id}",
            len(fields),
            *fields,
        ]
    return None if len(keys) == 4 else (keys, args)


async def audience_members(
    decision: Connection, field: str, value: str, *, cursor: int, count: int
) -> tuple[int, list[str]]:
    """One page of an audience (SSCAN): the next cursor (0 at the end) and customer ids."""
    reply = await decision.call("SSCAN", audience_key(field, value), cursor, "COUNT", count)
    return int(reply[0]), [str(c) for c in reply[1]]
