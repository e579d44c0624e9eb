"""Plain data that flows into and out of the decision core."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple


@dataclass(frozen=True, slots=True)
class Contact:
    """One earlier interaction of the customer, as kept by the store."""

    interaction_id: str
    channel: str
    intent: str
    at: float
    """Epoch seconds."""


@dataclass(frozen=True, slots=True)
class OfferEvent:
    """Something that happened to an offer shown to this customer."""

    at: float
    """Epoch seconds."""
    outcome: str
    """One of vocabulary.OFFER_OUTCOMES."""
    interaction_id: str = ""


@dataclass(frozen=True, slots=True)
class NoticeRecord:
    """A proactive notice the customer was sent (or is about to be), from the notice log."""

    notice_id: str
    channel: str
    status: str
    """queued, held, sent, rejected (by the provider), dead_lettered; or a receipt:
    delivered, failed, bounced."""
    text: str
    at: float
    """When it was decided, epoch seconds."""
    updated: float
    """When its status last changed."""

    @property
    def reached(self) -> bool:
        """Sent or on its way: what days_since_notice() counts (not held, not failed)."""
        return self.status in NOTIFIED


NOTIFIED = frozenset({"queued", "sent", "delivered"})
RECENT_NOTICES = 5
RECENT_NOTICE_DAYS = 30


def recent_notices(state: CustomerState | None, *, now: float) -> tuple[NoticeRecord, ...]:
    """What the agent's screen shows of the customer's notices: the latest few, newest first."""
    if state is None or not state.notices:
        return ()
    since = now - RECENT_NOTICE_DAYS * 86_400.0
    recent = sorted((n for n in state.notices.values() if n.at >= since), key=lambda n: -n.at)
    return tuple(recent[:RECENT_NOTICES])


@dataclass(frozen=True, slots=True)
class CustomerState:
    """What the store knows about a customer, untyped (the ruleset's schema types it)."""

    profile: Mapping[str, str] | None
    """Raw profile fields; None when the customer is unknown."""
    contacts: tuple[Contact, ...] = ()
    """Recent contacts, the current one included when it was recorded."""
    history: Mapping[str, tuple[OfferEvent, ...]] = field(default_factory=dict)
    """Outcomes of offers shown to this customer, by offer id, oldest first."""
    notices: Mapping[str, NoticeRecord] = field(default_factory=dict)
    """The latest proactive notice of each notice id."""


@dataclass(frozen=True, slots=True)
class Context:
    """The live interaction, as the desktop describes it."""

    channel: str
    intent: str = ""
    queue: str = ""
    agent_id: str = ""
    sentiment: float | None = None
    ivr_path: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RankedOffer:
    """An eligible offer, placed by arbitration."""

    offer_id: str
    title: str
    script: str
    category: str
    score: float
    expected_value: float
    propensity: float
    value: float
    rule_ids: tuple[str, ...]
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Routing:
    """Where the interaction goes."""

    queue: str
    priority: int
    reason: str
    rule_id: str
    skip_ivr: bool = False


class Explanation(NamedTuple):
    """Why one rule applied or not (only built when asked for).

    A NamedTuple, not a frozen dataclass: one is built per rule of the ruleset, and at
    1,000 offers the dataclass's construction (0.50 µs, against 0.24 for a NamedTuple and
    0.12 through tuple.__new__) was most of explain=True's cost.
    """

    kind: str
    """"offer", "routing" or "policy"."""
    rule_id: str
    matched: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Decision:
    """What the agent sees for one interaction."""

    decision_id: str
    offers: tuple[RankedOffer, ...]
    routing: Routing
    ruleset_version: str
    profile_found: bool
    degraded: bool = False
    explanations: tuple[Explanation, ...] = ()
    suppressed_by: tuple[str, ...] = ()
    """Contact policies and caps that kept an eligible-looking offer out."""
    arm: str = "champion"
    """The experiment arm the customer is in (set by the server)."""
    unparsed_fields: tuple[str, ...] = ()
    """Profile fields whose stored value does not fit the schema (decided without them)."""
    notices: tuple[NoticeRecord, ...] = ()
    """Notices the customer was sent recently, newest first (set by the server)."""
