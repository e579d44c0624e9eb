"""The customer's notice log on the decision Redis: what Decide and the agent see.

One record per notice id (the latest notice of that id), written by three parties in
any order: the notice process (queued, held), the delivery worker (sent, rejected, dead_lettered)
and the provider's receipt (delivered, failed, bounced). One script merges each write,
so a late write never undoes a later fact: a status only moves forward (queued → sent →
a receipt; a dead letter an operator retries can still become sent), and a record of an
older notice never replaces that of a newer one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from decision_engine.errors import NoticeNotFoundError
from decision_engine.store.connection import Connection, Script
from decision_engine.store.keys import notice_key_index, notice_log_key

# KEYS: the notice log. ARGV: notice id, the record (JSON; `key` and `status` at least).
_WRITE_LUA = """
local new = cjson.decode(ARGV[2])
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw then
  local old = cjson.decode(raw)
  if old.key ~= new.key then
    if (old.at or 0) > (new.at or 0) then return 0 end
  else
    local rank = {queued = 1, held = 1, rejected = 1, dead_lettered = 1, sent = 2}
    if (rank[old.status] or 3) > (rank[new.status] or 3) then new.status = old.status end
    for k, v in pairs(old) do if new[k] == nil then new[k] = v end end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(new))
return 1
"""
_WRITE = Script(_WRITE_LUA)
LogWrite = tuple[list[str], list[str | float]]
"""The merge script's keys and arguments for one fact (log_write)."""


def log_write(
    customer_id: str,
    notice_id: str,
    *,
    key: str,
    status: str,
    now: float,
    at: float | None = None,
    channel: str | None = None,
    text: str | None = None,
    provider_ref: str | None = None,
) -> LogWrite:
    """One fact about a notice, as the merge script's keys and arguments."""
    record: dict[str, str | float] = {"key": key, "status": status, "updated": now}
    for name, value in (("at", at), ("channel", channel), ("text", text),
                        ("provider_ref", provider_ref)):  # fmt: skip
        if value is not None:
            record[name] = value
    return [notice_log_key(customer_id)], [notice_id, json.dumps(record)]


async def write_notice_logs(decision: Connection, writes: Sequence[LogWrite]) -> list[bool]:
    """Merge facts (log_write) into customers' logs, one pipeline; per fact False when the
    log holds a newer notice of the same id (the fact is about an older one: dropped)."""
    return [bool(r) for r in await _WRITE.many(decision, writes)]


async def write_notice_log(decision: Connection, write: LogWrite) -> bool:
    """Merge one fact (log_write) into a customer's log; see write_notice_logs."""
    return bool(await _WRITE(decision, *write))


async def record_receipt(
    decision: Connection,
    durable: Connection,
    key: str,
    status: str,
    provider_ref: str,
    *,
    now: float,
) -> None:
    """A provider's receipt onto the notice log; NoticeNotFoundError for an unknown key."""
    found = await durable.call("GET", notice_key_index(key))
    if found is None:
        raise NoticeNotFoundError(f"no notice with key {key[:200]!r} was sent in the last 30 days")
    customer_id, _, notice_id = str(found).rpartition("|")
    write = log_write(customer_id, notice_id, key=key, status=status, now=now,
                      provider_ref=provider_ref)  # fmt: skip
    await write_notice_log(decision, write)
