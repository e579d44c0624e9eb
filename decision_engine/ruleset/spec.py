"""The parsed, checked ruleset: what the rule files say, with where they say it."""

from __future__ import annotations

from dataclasses import dataclass, field

from decision_engine.errors import Where
from decision_engine.ruleset.expr import Node
from decision_engine.ruleset.schema import FieldSpec
from decision_engine.ruleset.template import Template


@dataclass(frozen=True, slots=True)
class Condition:
    """A condition or numeric expression as written, parsed and type-checked."""

    text: str
    node: Node
    where: Where


@dataclass(frozen=True, slots=True)
class Weight:
    """Multiply an offer's score by `factor` when `when` holds."""

    when: Condition
    factor: float


@dataclass(frozen=True, slots=True)
class Limit:
    """At most `count` events within `days`."""

    count: int
    days: float


@dataclass(frozen=True, slots=True)
class ContactPolicy:
    """How often one customer may be offered an offer, or any offer of some categories."""

    id: str
    offers: tuple[str, ...]
    """The offer an offer's own policy is about (empty for a category policy)."""
    categories: tuple[str, ...]
    suppress_after_decline_days: float | None
    max_declines: Limit | None
    """Suppressed once the customer declined this often within the window."""
    max_presentations: Limit | None
    where: Where


@dataclass(frozen=True, slots=True)
class OfferSpec:
    """An action the agent can propose, and when it may be proposed."""

    id: str
    title: str
    category: str
    script: Template
    value: Condition
    cost: float
    propensity: float
    lever: float
    channels: tuple[str, ...]
    when: tuple[Condition, ...]
    weights: tuple[Weight, ...]
    params: tuple[tuple[str, Condition], ...]
    where: Where
    daily_cap: int | None = None
    """At most this many units of the offer are given per UTC day, across all replicas."""
    daily_cap_per_customer: int | None = None
    """Of which at most this many to one customer (1 unless set: the cap counts customers);
    set exactly when `daily_cap` is."""


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """A routing rule; among those that apply, the lowest precedence wins."""

    id: str
    when: tuple[Condition, ...]
    queue: str
    priority: int
    reason: str
    skip_ivr: bool
    precedence: int
    where: Where


@dataclass(frozen=True, slots=True)
class DefaultRoute:
    """Where an interaction goes when no routing rule applies."""

    queue: str
    priority: int
    reason: str
    where: Where


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """An arbitration policy: when it holds, some categories go first or are left out."""

    id: str
    when: tuple[Condition, ...]
    first: tuple[str, ...]
    suppress: tuple[str, ...]
    where: Where


@dataclass(frozen=True, slots=True)
class Learning:
    """How outcomes update the propensities arbitration uses."""

    enabled: bool = False
    prior_strength: float = 20.0
    """How many outcomes the rule file's propensity is worth."""
    half_life_days: float = 30.0
    """Evidence this old counts half."""
    by: str | None = None
    """An enum profile field to learn per value of (e.g. segment)."""
    exploration: float = 0.0
    """Share of decisions that sample propensities (Thompson sampling) instead of the mean."""


@dataclass(frozen=True, slots=True)
class Ruleset:
    """Everything the rule files declare, checked and ready to compile."""

    version: str
    label: str
    fields: dict[str, FieldSpec]
    offers: tuple[OfferSpec, ...]
    routes: tuple[RouteSpec, ...]
    default_route: DefaultRoute
    policies: tuple[PolicySpec, ...]
    max_offers: int
    files: tuple[str, ...] = field(default=())
    contact_policies: tuple[ContactPolicy, ...] = ()
    channel_limits: dict[str, int] = field(default_factory=dict)
    """At most this many offers per decision on a channel (an SMS carries one)."""
    max_offers_per_interaction: int | None = None
    """At most this many offers presented over all the decisions of one interaction."""
    learning: Learning = field(default_factory=Learning)
