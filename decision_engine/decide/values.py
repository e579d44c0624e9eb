"""Plain data that flows into and out of the decision core."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


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
class CustomerState:
    """What the store knows about a customer, untyped (the ruleset's schema types it)."""

    profile: Mapping[str, str] | None
    """Raw profile fields; None when the customer is unknown."""
    contacts: tuple[Contact, ...] = ()
    """Recent contacts, the current one included when it was recorded."""
    history: Mapping[str, tuple[OfferEvent, ...]] = field(default_factory=dict)
    """Outcomes of offers shown to this customer, by offer id, oldest first."""


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


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why one rule applied or not (only built when asked for)."""

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
