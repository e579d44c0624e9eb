"""Customer profiles and recent contacts in Redis.

A decision reads everything it needs in one round trip: a Lua script returns the
profile, records the current interaction and trims old contacts atomically.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import redis.asyncio as aioredis
import redis.asyncio.cluster
from redis.exceptions import RedisError

from decision_engine.decide.values import Contact, CustomerState, NoticeRecord, OfferEvent
from decision_engine.errors import StoreUnavailableError
from decision_engine.ruleset.compiled import DailyCap
from decision_engine.store.cluster import async_client, connect, is_cluster_url
from decision_engine.store.connection import Connection, Script
from decision_engine.store.keys import (
    audience_key,
    cap_key,
    contacts_key,
    customer_caps_key,
    history_key,
    notice_log_key,
    profile_key,
)
from decision_engine.store.replies import pairs

DEFAULT_RETENTION_S = 30 * 86400
AsyncClient = aioredis.Redis | redis.asyncio.cluster.RedisCluster

UNKNOWN_CUSTOMER_RETENTION_S = 3600
"""Contacts of a customer without a profile are kept this long: enough to see a repeat
call, while made-up ids cost a key for an hour rather than a month."""
MAX_CONTACTS_PER_DAY = 20
"""New interactions recorded per customer in 24 hours; later ones are decided on but
not recorded, so one caller cannot grow a customer's contact history without bound."""

# KEYS: profile, contacts, offer history, notice log, the customer's capped-offer counts
# of the day, then the day's counter of each capped offer (none on a Redis Cluster, where
# they live in other slots: the reservation finds a spent budget there).
# ARGV: now, retention_s, interaction_id ("" for none), entry, retention_s without a
# profile, contacts per day, then the id of each capped offer.
# Contacts are a hash so that a retried interaction counts once; their age lives in the
# value because Redis 6.2 cannot expire single hash fields.
_LOAD_LUA = """
local profile = redis.call('HGETALL', KEYS[1])
local now, retention = tonumber(ARGV[1]), tonumber(ARGV[2])
local cutoff, day_ago = now - retention, now - 86400
local raw = redis.call('HGETALL', KEYS[2])
local kept, stale, today, seen = {}, {}, 0, false
for i = 1, #raw, 2 do
  local at = tonumber(string.match(raw[i + 1], '^([^|]*)|[^|]*|'))
  if at == nil or at < cutoff then
    stale[#stale + 1] = raw[i]
  else
    kept[#kept + 1] = raw[i]
    kept[#kept + 1] = raw[i + 1]
    if at >= day_ago then today = today + 1 end
    if raw[i] == ARGV[3] then seen = true end
  end
end
-- HDEL in chunks: unpack() of thousands of values would overflow the Lua stack.
for i = 1, #stale, 500 do
  redis.call('HDEL', KEYS[2], unpack(stale, i, math.min(i + 499, #stale)))
end
local refused = 0
if ARGV[3] ~= '' and not seen then
  if today < tonumber(ARGV[6]) then
    redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
    kept[#kept + 1] = ARGV[3]
    kept[#kept + 1] = ARGV[4]
    local ttl = retention
    if #profile == 0 then ttl = math.min(ttl, tonumber(ARGV[5])) end
    redis.call('PEXPIRE', KEYS[2], math.floor(ttl * 1000))
  else
    refused = 1
  end
end
local history = redis.call('HGETALL', KEYS[3])
local notices = redis.call('HGETALL', KEYS[4])
local caps, mine = {}, {}
if #ARGV > 6 then
  mine = redis.call('HMGET', KEYS[5], unpack(ARGV, 7, #ARGV))
  for i = 1, #mine do mine[i] = mine[i] or '0' end
end
if #KEYS > 5 then
  caps = redis.call('MGET', unpack(KEYS, 6, #KEYS))
  for i = 1, #caps do caps[i] = caps[i] or '0' end
end
return {profile, kept, history, caps, mine, refused, notices}
"""


_LOAD = Script(_LOAD_LUA)


@dataclass(frozen=True, slots=True)
class Loaded:
    """What one decision read from the store."""

    state: CustomerState
    exhausted: frozenset[str] = frozenset()
    """Capped offers whose budget for today is spent."""
    customer_spent: frozenset[str] = frozenset()
    """Capped offers this customer has had their share of today."""
    skipped: Mapping[str, int] = field(default_factory=dict)
    """Stored entries that did not parse and were left out, by kind."""
    contact_refused: bool = False
    """The interaction was not recorded: the customer reached MAX_CONTACTS_PER_DAY."""


class ProfileStore:
    """Async access to profiles and contact history over one connection pool."""

    def __init__(self, client: AsyncClient, fast: Connection, *, url: str = "") -> None:
        self._redis = client
        self._fast = fast
        self.url = url
        """Where it is (from_url's), for connections of their own (blocking reads)."""
        self.cluster = is_cluster_url(url)
        """On a Redis Cluster: the load reads no budgets (their keys are in other slots)."""

    @classmethod
    def from_url(
        cls, url: str, *, socket_timeout: float = 1.0, socket_connect_timeout: float = 1.0
    ) -> ProfileStore:
        """A store with its own pool (redis-py's cluster client for a `redis+cluster://`
        URL); the hiredis parser is used when installed."""
        options: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_connect_timeout,
        }
        client: AsyncClient = (
            async_client(url, **options)
            if is_cluster_url(url)
            else aioredis.Redis.from_url(url, **options)
        )
        return cls(client, connect(url, connect_timeout=socket_connect_timeout), url=url)

    @property
    def client(self) -> AsyncClient:
        """The underlying client (for markers and maintenance, not for decisions)."""
        return self._redis

    @property
    def connection(self) -> Connection:
        """The pipelined request-path connection (decisions, outcomes, caps)."""
        return self._fast

    async def load(
        self,
        customer_id: str,
        *,
        interaction: Contact | None,
        now: float,
        retention_s: float = DEFAULT_RETENTION_S,
    ) -> CustomerState:
        """Profile, recent contacts and offer history, recording `interaction` first."""
        loaded = await self.load_for_decision(
            customer_id, interaction=interaction, now=now, retention_s=retention_s
        )
        return loaded.state

    async def load_for_decision(
        self,
        customer_id: str,
        *,
        interaction: Contact | None,
        now: float,
        caps: Mapping[str, DailyCap] | None = None,
        retention_s: float = DEFAULT_RETENTION_S,
    ) -> Loaded:
        """Everything a decision reads, in one round trip, for the capped offers in
        `caps` too; records `interaction` first (within the daily limit)."""
        args: list[str | float] = [
            now, retention_s, "", "", UNKNOWN_CUSTOMER_RETENTION_S, MAX_CONTACTS_PER_DAY,
        ]  # fmt: skip
        if interaction is not None:
            args[2] = interaction.interaction_id
            args[3] = f"{interaction.at:.3f}|{interaction.channel}|{interaction.intent}"
        capped = list(caps.items()) if caps else []
        day = cap_day(now)
        keys = [
            profile_key(customer_id),
            contacts_key(customer_id),
            history_key(customer_id),
            notice_log_key(customer_id),
            customer_caps_key(customer_id, day),
        ]
        if not self.cluster:
            keys.extend(cap_key(offer_id, day) for offer_id, _ in capped)
        args.extend(offer_id for offer_id, _ in capped)
        reply = await _LOAD(self._fast, keys, args)
        raw_profile, raw_contacts, raw_history, counts, mine, refused, raw_notices = reply
        if self.cluster:
            counts = ["0"] * len(capped)  # not read: a spent budget is found on reserving
        skipped: dict[str, int] = {}
        contacts = []
        for interaction_id, entry in pairs(raw_contacts).items():
            contact = _contact(interaction_id, entry)
            if contact is None:
                skipped["contact"] = skipped.get("contact", 0) + 1
            else:
                contacts.append(contact)
        history = {}
        for offer_id, text in pairs(raw_history).items():
            events, bad = _events(text)
            history[offer_id] = events
            if bad:
                skipped["offer_event"] = skipped.get("offer_event", 0) + bad
        exhausted, customer_spent = set(), set()
        for (offer_id, cap), used, had in zip(capped, counts, mine, strict=True):
            taken, got = _count(used), _count(had)
            if taken is None or got is None:
                # A counter we cannot read is a budget we cannot check: spent.
                skipped["cap_counter"] = skipped.get("cap_counter", 0) + 1
                exhausted.add(offer_id)
                continue
            if taken >= cap.total:
                exhausted.add(offer_id)
            if got >= cap.per_customer:
                customer_spent.add(offer_id)
        state = CustomerState(
            profile=pairs(raw_profile) or None,
            contacts=tuple(sorted(contacts, key=lambda c: (c.at, c.interaction_id))),
            history=history,
            notices=parse_notice_log(pairs(raw_notices), skipped),
        )
        return Loaded(state, frozenset(exhausted), frozenset(customer_spent), skipped, refused == 1)

    async def put_profiles(
        self,
        rows: Iterable[tuple[str, Mapping[str, str]]],
        *,
        batch_size: int = 1000,
        audiences: Sequence[str] = (),
    ) -> int:
        """Replace each customer's profile hash (removed fields vanish); returns rows written.

        `audiences`: profile fields business events may address customers by; each
        customer is moved to the audience sets of their new values.
        """
        written = 0
        it = iter(rows)
        try:
            while batch := list(islice(it, batch_size)):
                old = await self._audience_values(batch, audiences)
                # No MULTI: each row is replaced on its own; batching only saves round trips.
                async with self._redis.pipeline(transaction=False) as pipe:
                    for (customer_id, fields), before in zip(batch, old, strict=True):
                        key = profile_key(customer_id)
                        pipe.delete(key)
                        if fields:
                            pipe.hset(key, items=[part for item in fields.items() for part in item])
                        for name, was in zip(audiences, before, strict=True):
                            now_in = fields.get(name) or None
                            if was is not None and was != now_in:
                                pipe.srem(audience_key(name, was), customer_id)
                            if now_in is not None:
                                pipe.sadd(audience_key(name, now_in), customer_id)
                    await pipe.execute()
                written += len(batch)
        except RedisError as exc:
            raise StoreUnavailableError(f"profile store: {exc}") from exc
        return written

    async def _audience_values(
        self, batch: list[tuple[str, Mapping[str, str]]], audiences: Sequence[str]
    ) -> list[list[str | None]]:
        if not audiences:
            return [[] for _ in batch]
        async with self._redis.pipeline(transaction=False) as pipe:
            for customer_id, _ in batch:
                pipe.hmget(profile_key(customer_id), list(audiences))
            replies = await pipe.execute()
        return [[_text_or_none(v) for v in reply] for reply in replies]

    async def aclose(self) -> None:
        """Close the pool's connections."""
        if self._fast is not None:
            await self._fast.aclose()
        await self._redis.aclose()


def _text_or_none(value: object) -> str | None:
    if value is None or value in ("", b""):
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_notice_log(raw: Mapping[str, str], skipped: dict[str, int]) -> dict[str, NoticeRecord]:
    """The notice log's records by notice id; one that does not parse is counted, left out."""
    records = {}
    for notice_id, text in raw.items():
        try:
            data = json.loads(text)
            records[notice_id] = NoticeRecord(
                notice_id,
                str(data.get("channel", "")),
                str(data.get("status", "")),
                str(data.get("text", "")),
                float(data["at"]),
                float(data.get("updated", data["at"])),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            skipped["notice"] = skipped.get("notice", 0) + 1
    return records


def _contact(interaction_id: str, entry: str) -> Contact | None:
    """`at|channel|intent`, or None when it does not parse (written by another tool)."""
    at, _, rest = entry.partition("|")
    channel, sep, intent = rest.partition("|")
    when = _time(at)
    if when is None or not sep:
        return None
    return Contact(interaction_id=interaction_id, channel=channel, intent=intent, at=when)


def _time(text: str) -> float | None:
    try:
        at = float(text)
    except ValueError:
        return None
    return at if math.isfinite(at) else None


def _count(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def cap_day(now: float) -> str:
    """The UTC day a volume cap counts in (YYYYMMDD)."""
    return time.strftime("%Y%m%d", time.gmtime(now))


def parse_events(text: str) -> tuple[OfferEvent, ...]:
    """`at|outcome|interaction;...` as stored by the outcome script, oldest first."""
    return _events(text)[0]


def _events(text: str) -> tuple[tuple[OfferEvent, ...], int]:
    """The events that parse, and how many did not (an entry split by a stray `;` or
    `|`, as ids before they were checked could make, or an entry of another tool)."""
    events = []
    bad = 0
    for item in text.split(";"):
        if not item:
            continue
        at, _, rest = item.partition("|")
        outcome, _, interaction_id = rest.partition("|")
        when = _time(at)
        if when is None or not outcome:
            bad += 1
        else:
            events.append(OfferEvent(when, outcome, interaction_id))
    return tuple(events), bad
