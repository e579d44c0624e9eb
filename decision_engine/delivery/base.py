"""What every sender shares: the result of one send, the sender protocol, the body.

Kept apart from senders.py so the sender modules can import it while senders.py
imports them (import-linter forbids cycles between sibling modules); senders.py
re-exports every name here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from decision_engine.store.outbox import OutboxEntry

DELIVERED = "delivered"
"""The provider took the notice."""
RETRY = "retry"
"""Transient trouble (timeout, overload, connection lost): try again later."""
FAILED = "failed"
"""Permanent: the provider refused the notice, and the same send would be refused again."""
STATUSES = frozenset({DELIVERED, RETRY, FAILED})
DETAIL_MAX = 200


@dataclass(frozen=True, slots=True)
class SendResult:
    """How one send went."""

    status: str
    """DELIVERED, RETRY or FAILED."""
    detail: str = ""
    """A short reason for the operator (`HTTP 503`), without customer data."""
    provider_ref: str = ""
    """The provider's id of the message, when it gives one."""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r}: not one of {sorted(STATUSES)}")
        if len(self.detail) > DETAIL_MAX:
            # Providers' error texts can be long; the outbox keeps this as last_error.
            object.__setattr__(self, "detail", self.detail[: DETAIL_MAX - 1] + "…")
        if len(self.provider_ref) > DETAIL_MAX:
            object.__setattr__(self, "provider_ref", self.provider_ref[:DETAIL_MAX])


class Sender(Protocol):
    """Delivers notices of one channel. `send` never raises for the provider's trouble:
    it says RETRY or FAILED."""

    name: str
    """What kind of sender: `webhook`, `smtp`, `file`."""

    async def send(self, entry: OutboxEntry) -> SendResult:
        """Deliver one notice."""
        ...

    async def aclose(self) -> None:
        """Release connections and files; the sender is not used afterwards."""
        ...


def notice_fields(entry: OutboxEntry) -> dict[str, object]:
    """The notice as the webhook posts it and the file sink writes it."""
    return {
        "key": entry.key,
        "notice_id": entry.notice_id,
        "event_id": entry.event_id,
        "event_type": entry.event_type,
        "customer_id": entry.customer_id,
        "channel": entry.channel,
        "address": entry.address,
        "subject": entry.subject,
        "text": entry.text,
        "urgent": entry.urgent,
        "decided_at": entry.decided_at,
        "attempt": entry.attempt,
    }


def compact_json(fields: dict[str, object]) -> bytes:
    """Compact JSON, keys sorted, UTF-8: the same notice always gives the same bytes."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")
