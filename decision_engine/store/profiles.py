"""Customer profiles and recent contacts in Redis.

A decision reads everything it needs in one round trip: a Lua script returns the
profile, records the current interaction and trims old contacts atomically.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from itertools import islice
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from decision_engine.decide.model import Contact, CustomerState
from decision_engine.errors import StoreUnavailableError
from decision_engine.store.connection import PipelinedConnection, ReplyError
from decision_engine.store.keys import contacts_key, profile_key

DEFAULT_RETENTION_S = 30 * 86400

# KEYS: profile, contacts. ARGV: now, retention_s, interaction_id ("" for none), entry.
# Contacts are a hash so that HSETNX makes a retried interaction count once; their
# age lives in the value because Redis 6.2 cannot expire single hash fields.
_LOAD_LUA = """
local profile = redis.call('HGETALL', KEYS[1])
if ARGV[3] ~= '' then
  redis.call('HSETNX', KEYS[2], ARGV[3], ARGV[4])
  redis.call('PEXPIRE', KEYS[2], math.floor(tonumber(ARGV[2]) * 1000))
end
local cutoff = tonumber(ARGV[1]) - tonumber(ARGV[2])
local raw = redis.call('HGETALL', KEYS[2])
local kept, stale = {}, {}
for i = 1, #raw, 2 do
  local at = tonumber(string.match(raw[i + 1], '^([^|]*)|[^|]*|'))
  if at == nil or at < cutoff then
    stale[#stale + 1] = raw[i]
  else
    kept[#kept + 1] = raw[i]
    kept[#kept + 1] = raw[i + 1]
  end
end
-- HDEL in chunks: unpack() of thousands of values would overflow the Lua stack.
for i = 1, #stale, 500 do
  redis.call('HDEL', KEYS[2], unpack(stale, i, math.min(i + 499, #stale)))
end
return {profile, kept}
"""


_LOAD_SHA = hashlib.sha1(_LOAD_LUA.encode()).hexdigest()


class ProfileStore:
    """Async access to profiles and contact history over one connection pool."""

    def __init__(self, client: aioredis.Redis, fast: PipelinedConnection | None = None) -> None:
        self._redis = client
        self._load = client.register_script(_LOAD_LUA)
        self._fast = fast

    @classmethod
    def from_url(
        cls, url: str, *, socket_timeout: float = 1.0, socket_connect_timeout: float = 1.0
    ) -> ProfileStore:
        """A store with its own pool; the hiredis parser is used when installed."""
        client = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
        )
        return cls(client, PipelinedConnection(url, connect_timeout=socket_connect_timeout))

    @property
    def client(self) -> aioredis.Redis:
        """The underlying client (for markers and maintenance, not for decisions)."""
        return self._redis

    async def load(
        self,
        customer_id: str,
        *,
        interaction: Contact | None,
        now: float,
        retention_s: float = DEFAULT_RETENTION_S,
    ) -> CustomerState:
        """Profile and recent contacts, recording `interaction` first; one round trip."""
        args: list[str | float] = [now, retention_s, "", ""]
        if interaction is not None:
            args[2] = interaction.interaction_id
            args[3] = f"{interaction.at:.3f}|{interaction.channel}|{interaction.intent}"
        keys = [profile_key(customer_id), contacts_key(customer_id)]
        reply: Any
        if self._fast is not None:
            reply = await self._load_pipelined(keys, args)
        else:
            try:
                reply = await self._load(keys=keys, args=args)
            except RedisError as exc:
                raise StoreUnavailableError(f"profile store: {exc}") from exc
        raw_profile, raw_contacts = reply
        return CustomerState(
            profile=_pairs(raw_profile) or None,
            contacts=tuple(
                sorted(
                    (_contact(i, entry) for i, entry in _pairs(raw_contacts).items()),
                    key=lambda c: (c.at, c.interaction_id),
                )
            ),
        )

    async def _load_pipelined(self, keys: list[str], args: list[str | float]) -> Any:
        assert self._fast is not None
        try:
            return await self._fast.call("EVALSHA", _LOAD_SHA, len(keys), *keys, *args)
        except ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise StoreUnavailableError(f"profile store: {exc}") from exc
        # A restarted or flushed Redis forgot the script: EVAL sends it along (and caches it).
        try:
            return await self._fast.call("EVAL", _LOAD_LUA, len(keys), *keys, *args)
        except ReplyError as exc:
            raise StoreUnavailableError(f"profile store: {exc}") from exc

    async def put_profiles(
        self, rows: Iterable[tuple[str, Mapping[str, str]]], *, batch_size: int = 1000
    ) -> int:
        """Replace each customer's profile hash (removed fields vanish); returns rows written."""
        written = 0
        it = iter(rows)
        try:
            while batch := list(islice(it, batch_size)):
                # No MULTI: each row is replaced on its own; batching only saves round trips.
                async with self._redis.pipeline(transaction=False) as pipe:
                    for customer_id, fields in batch:
                        key = profile_key(customer_id)
                        pipe.delete(key)
                        if fields:
                            pipe.hset(key, items=[part for item in fields.items() for part in item])
                    await pipe.execute()
                written += len(batch)
        except RedisError as exc:
            raise StoreUnavailableError(f"profile store: {exc}") from exc
        return written

    async def aclose(self) -> None:
        """Close the pool's connections."""
        if self._fast is not None:
            await self._fast.aclose()
        await self._redis.aclose()


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _contact(interaction_id: str, entry: str) -> Contact:
    at, channel, intent = entry.split("|", 2)
    return Contact(interaction_id=interaction_id, channel=channel, intent=intent, at=float(at))
