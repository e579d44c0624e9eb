"""The parsed, checked ruleset: what the rule files say, with where they say it."""

from __future__ import annotations

from dataclasses import dataclass, field

from decision_engine.errors import Where
from decision_engine.ruleset.expr import Node
from decision_engine.ruleset.schema import FieldSpec
from decision_engine.ruleset.template import Template

DEFAULT_PRECEDENCE = 100
"""Of routing rules or arbitration policies that hold, the lowest precedence wins."""
MAX_PRECEDENCE = 1_000_000


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
    max_acceptances: Limit | None = None
    """Suppressed once the customer accepted this often within the window (a retention
    credit at most once a year: count 1 within 365 days)."""


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
    """An arbitration policy: when it holds, some categories go first or are left out.

    Of the policies that hold, the one of lowest precedence (then file order) wins: the
    categories it puts first rank above those of the next, and so on; `suppress` is the
    union over all of them, and beats `first`.
    """

    id: str
    when: tuple[Condition, ...]
    first: tuple[str, ...]
    suppress: tuple[str, ...]
    where: Where
    precedence: int = DEFAULT_PRECEDENCE


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


# -- moments (live guidance) ---------------------------------------------------------------

EVENT, COUNT, SEQUENCE, ABSENCE = "event", "count", "sequence", "absence"
SHAPES = (EVENT, COUNT, SEQUENCE, ABSENCE)


@dataclass(frozen=True, slots=True)
class Step:
    """One event a pattern waits for: its kind and the tests on its fields."""

    kind: str
    where: Condition | None
    """Tests on the event's own fields (comparisons with values, `in`, `and`, `or`)."""
    says: tuple[str, ...]
    """Words or phrases (lower case), any of which an utterance must contain."""
    within: float | None
    """In a sequence: at most this many seconds after the previous step (None for the first)."""
    where_at: Where


@dataclass(frozen=True, slots=True)
class Pattern:
    """What a moment waits for.

    event:    steps = (the event,)
    count:    steps = (the event,), `count` of them less than `within` s apart (first to last)
    sequence: steps in order, each less than its `within` after the previous one
    absence:  steps = (anchor, missing): no `missing` event less than `within` s after
              the anchor (detected when the deadline passes)
    """

    shape: str
    steps: tuple[Step, ...]
    count: int = 1
    within: float = 0.0
    where: Where = field(default=Where("", 0))

    @property
    def trigger(self) -> Step:
        """The step whose event the guidance is about: the last one, or the anchor."""
        return self.steps[0] if self.shape == ABSENCE else self.steps[-1]

    @property
    def span(self) -> float:
        """How many seconds of events the pattern looks back over (0 for one event)."""
        if self.shape in (COUNT, ABSENCE):
            return self.within
        if self.shape == SEQUENCE:
            return sum(s.within or 0.0 for s in self.steps)
        return 0.0


@dataclass(frozen=True, slots=True)
class Guidance:
    """What the agent sees when the moment is detected."""

    kind: str
    """One of GUIDANCE_KINDS."""
    title: Template
    text: Template
    severity: str
    """One of SEVERITIES."""


@dataclass(frozen=True, slots=True)
class Transfer:
    """Where the interaction goes when the moment is detected."""

    queue: str
    priority: int


@dataclass(frozen=True, slots=True)
class MomentSpec:
    """One moment of the `moments:` section."""

    id: str
    pattern: Pattern
    when: tuple[Condition, ...]
    """Over the profile, the context and the interaction's state, when the pattern completes."""
    once: bool
    """At most once per interaction (the default); otherwise at most once per `cooldown`."""
    cooldown: float
    supersedes: tuple[str, ...]
    """Moments whose guidance this one replaces; they are not detected after it."""
    guidance: Guidance
    context: tuple[tuple[str, str], ...]
    """`set:` updates to the interaction's context (field, canonical text), in file order."""
    decide: bool
    """Ask for a re-decision (with the updated context)."""
    transfer: Transfer | None
    where: Where
    description: str = ""


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
    """Arbitration policies in precedence order (lowest first; ties in file order)."""
    max_offers: int
    files: tuple[str, ...] = field(default=())
    contact_policies: tuple[ContactPolicy, ...] = ()
    channel_limits: dict[str, int] = field(default_factory=dict)
    """At most this many offers per decision on a channel (an SMS carries one)."""
    max_offers_per_interaction: int | None = None
    """At most this many offers presented over all the decisions of one interaction."""
    learning: Learning = field(default_factory=Learning)
    moments: tuple[MomentSpec, ...] = ()
    """Live guidance: patterns in an interaction's events (none without a `moments:` section)."""
    locale: str = ""
    """Locale of formatted placeholders (`{clv:money}`), e.g. de_DE; "" reads as en_US."""
    currency: str = ""
    """ISO 4217 code that `{field:money}` shows; "" when the ruleset sets none."""
    unknown_attributes: str = "ignore"
    """What Decide does with a context attribute the schema does not declare: "ignore"
    (counted in unknown_attributes_total) or "reject" (INVALID_ARGUMENT)."""
    notices: NoticeRules | None = None
    """Proactive notices (none without a `notices:` section)."""


# -- notices (proactive care) --------------------------------------------------------------

NOTICE_CHANNELS = ("sms", "email", "app", "voice")
"""Channels a notice can go out on (outbound, unlike the channels of an interaction)."""


@dataclass(frozen=True, slots=True)
class NoticeChannel:
    """How one channel reaches a customer: the profile field holding the address, and the
    consent (must be true) or opt-out (must not be true) field that is always honoured."""

    channel: str
    address: str
    consent: str | None
    opt_out: str | None
    where: Where


@dataclass(frozen=True, slots=True)
class EventType:
    """A business event a notice can react to, with its typed attributes; a key-date event
    (`date`, `days_before`) is raised by the sweep from a profile date."""

    name: str
    attributes: dict[str, FieldSpec]
    where: Where
    date_field: str | None = None
    days_before: int = 0


@dataclass(frozen=True, slots=True)
class Message:
    """What a notice says on one channel."""

    channel: str
    subject: Template | None
    text: Template


@dataclass(frozen=True, slots=True)
class NoticeSpec:
    """A notice: on which event, under which conditions, what it says on each channel."""

    id: str
    on: str
    when: tuple[Condition, ...]
    urgent: bool
    channels: tuple[str, ...]
    """Allowed channels in fallback order (the customer's preferred one, if allowed, first)."""
    use_preferred: bool
    """False: the declared order only, whatever the customer prefers (fraud goes by SMS)."""
    messages: dict[str, Message]
    dedupe_key: Template | None
    """Rendered per event; one notice per (customer, notice, key) within `dedupe_within`."""
    dedupe_within: float
    where: Where
    description: str = ""


@dataclass(frozen=True, slots=True)
class QuietHours:
    """Local times (minutes after midnight) between which non-urgent notices are held."""

    start: int
    end: int


@dataclass(frozen=True, slots=True)
class NoticeRules:
    """The `notices:` section."""

    channels: dict[str, NoticeChannel]
    events: dict[str, EventType]
    notices: tuple[NoticeSpec, ...]
    preferred: str | None = None
    """A profile field naming the customer's preferred channel."""
    timezone_field: str | None = None
    default_timezone: str = "UTC"
    quiet_hours: QuietHours | None = None
    per_day: int | None = None
    per_week: int | None = None
    audiences: tuple[str, ...] = ()
    """Profile fields an event's audience may select customers by (indexed in the store)."""
