"""Plain data that flows into and out of the decision core."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Final


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


class Record:
    """Equality, hash and repr by field, for the records a decision builds many of.

    They are plain classes with Final attributes, not frozen dataclasses: compiled with
    the core (build_core.py) one is built in ~50 ns and its attributes are read-only,
    while a frozen dataclass's __init__ stays Python that sets each field through
    object.__setattr__ (1.2 µs for a RankedOffer, three of them and a Routing per
    decision: a fifth of decide() at 1,000 offers).
    """

    FIELDS: ClassVar[tuple[str, ...]] = ()

    def values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.FIELDS)

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and isinstance(other, Record)
            and (self.values() == other.values())
        )

    def __hash__(self) -> int:
        return hash(self.values())

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.FIELDS)
        return f"{type(self).__name__}({shown})"


class RankedOffer(Record):
    """An eligible offer, placed by arbitration."""

    FIELDS = ("offer_id", "title", "script", "category", "score", "expected_value",
              "propensity", "value", "rule_ids", "reasons")  # fmt: skip

    def __init__(
        self,
        offer_id: str,
        title: str,
        script: str,
        category: str,
        score: float,
        expected_value: float,
        propensity: float,
        value: float,
        rule_ids: tuple[str, ...],
        reasons: tuple[str, ...],
    ) -> None:
        self.offer_id: Final = offer_id
        self.title: Final = title
        self.script: Final = script
        self.category: Final = category
        self.score: Final = score
        self.expected_value: Final = expected_value
        self.propensity: Final = propensity
        self.value: Final = value
        self.rule_ids: Final = rule_ids
        self.reasons: Final = reasons


class Routing(Record):
    """Where the interaction goes."""

    FIELDS = ("queue", "priority", "reason", "rule_id", "skip_ivr")

    def __init__(
        self, queue: str, priority: int, reason: str, rule_id: str, skip_ivr: bool = False
    ) -> None:
        self.queue: Final = queue
        self.priority: Final = priority
        self.reason: Final = reason
        self.rule_id: Final = rule_id
        self.skip_ivr: Final = skip_ivr


class Explanation(Record):
    """Why one rule applied or not (only built when asked for: one per rule)."""

    FIELDS = ("kind", "rule_id", "matched", "detail")

    def __init__(self, kind: str, rule_id: str, matched: bool, detail: str) -> None:
        self.kind: Final = kind
        """"offer", "routing" or "policy"."""
        self.rule_id: Final = rule_id
        self.matched: Final = matched
        self.detail: Final = detail


class Decision(Record):
    """What the agent sees for one interaction."""

    FIELDS = ("decision_id", "offers", "routing", "ruleset_version", "profile_found",
              "degraded", "explanations", "suppressed_by", "arm", "unparsed_fields",
              "notices")  # fmt: skip

    def __init__(
        self,
        decision_id: str,
        offers: tuple[RankedOffer, ...],
        routing: Routing,
        ruleset_version: str,
        profile_found: bool,
        degraded: bool = False,
        explanations: tuple[Explanation, ...] = (),
        suppressed_by: tuple[str, ...] = (),
        arm: str = "champion",
        unparsed_fields: tuple[str, ...] = (),
        notices: tuple[NoticeRecord, ...] = (),
    ) -> None:
        self.decision_id: Final = decision_id
        self.offers: Final = offers
        self.routing: Final = routing
        self.ruleset_version: Final = ruleset_version
        self.profile_found: Final = profile_found
        self.degraded: Final = degraded
        self.explanations: Final = explanations
        self.suppressed_by: Final = suppressed_by
        """Contact policies and caps that kept an eligible-looking offer out."""
        self.arm: Final = arm
        """The experiment arm the customer is in (set by the server)."""
        self.unparsed_fields: Final = unparsed_fields
        """Profile fields whose stored value does not fit the schema (decided without them)."""
        self.notices: Final = notices
        """Notices the customer was sent recently, newest first (set by the server)."""

    def replace(
        self,
        *,
        decision_id: str | None = None,
        offers: tuple[RankedOffer, ...] | None = None,
        arm: str | None = None,
        notices: tuple[NoticeRecord, ...] | None = None,
    ) -> Decision:
        """A copy with what the server sets after deciding: the id, the arm, the notices,
        and the offers a cap let through."""
        return Decision(
            self.decision_id if decision_id is None else decision_id,
            self.offers if offers is None else offers,
            self.routing,
            self.ruleset_version,
            self.profile_found,
            self.degraded,
            self.explanations,
            self.suppressed_by,
            self.arm if arm is None else arm,
            self.unparsed_fields,
            self.notices if notices is None else notices,
        )
