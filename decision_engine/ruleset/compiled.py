"""The compiled ruleset: indexes, closures and parsers, built once per version."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

from babel import Locale

from decision_engine.ruleset.closures import (
    compile_all,
    compile_checks,
    compile_node,
    constant,
    shared_compilation,
)
from decision_engine.ruleset.expr import (
    NOTICE_DAYS,
    Arith,
    Field,
    Literal,
    Logic,
    Node,
    outcome_calls,
    render,
)
from decision_engine.ruleset.formats import DEFAULT_LOCALE
from decision_engine.ruleset.load import load_ruleset, paused_gc
from decision_engine.ruleset.rule_index import RuleIndex
from decision_engine.ruleset.runtime import Checks, Facts, Fn
from decision_engine.ruleset.schema import FieldSpec
from decision_engine.ruleset.spec import (
    Condition,
    ContactPolicy,
    NoticeRules,
    NoticeSpec,
    OfferSpec,
    PolicySpec,
    RouteSpec,
    Ruleset,
)
from decision_engine.ruleset.template import Render, Template, compile_template

Parser = Callable[[str], Any]


@dataclass(frozen=True, slots=True)
class TextStyle:
    """How a ruleset's scripts and guidance texts show values: its locale, currency, dates."""

    locale: Locale
    currency: str
    dates: frozenset[str]

    @classmethod
    def of(cls, ruleset: Ruleset) -> TextStyle:
        dates = frozenset(n for n, s in ruleset.fields.items() if s.kind == "date")
        return cls(Locale.parse(ruleset.locale or DEFAULT_LOCALE), ruleset.currency, dates)

    def compile(self, template: Template) -> Render:
        return compile_template(
            template, dates=self.dates, locale=self.locale, currency=self.currency
        )


@dataclass(frozen=True, slots=True)
class CompiledOffer:
    spec: OfferSpec
    value: Fn
    weights: tuple[tuple[Fn, float, str], ...]
    """(condition, factor, the reason shown when it applies: "weight x1.5: tenure_months >= 24")."""
    params: tuple[tuple[str, Fn], ...]
    script: Render
    """The script, formats and conditions resolved: (facts, params) → the text read out."""
    eligibility: str
    """The conditions as written, for the offer's reasons."""
    scale: float
    """value = scale x the group's base (a field, an expression, or 1 for fixed values)."""
    factor: float
    """propensity x lever: the part of the score fixed per ruleset."""
    bound: float
    """Upper bound of the score per unit of the group's base."""
    reach: float
    """The bound per unit of propensity (lever x scale x the largest weight), for
    bounds with learned propensities."""


@dataclass(frozen=True, slots=True)
class OfferGroup:
    """Offers whose values are multiples of one base: a field, an expression, or 1.

    Their bits are contiguous and ordered by descending `bound`: with the base
    known for a request, the score bounds fall along the group, so scoring can
    stop at the first offer that cannot beat the offers already kept.
    """

    mask: int
    base: Fn | None
    """The shared base, computed once per request; None means 1 (fixed values)."""
    prunable: bool
    """Whether bounds hold: every scale is non-negative."""
    start: int
    """The bit of its first offer."""


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    spec: PolicySpec
    test: Fn
    first: frozenset[str]
    suppress: frozenset[str]
    checks: Checks


@dataclass(frozen=True, slots=True)
class ContactScope:
    """A contact policy with the offers it covers."""

    policy: ContactPolicy
    offers: frozenset[str]
    mask: int
    """The offers' bits."""


@dataclass(frozen=True, slots=True)
class OutcomeLookup:
    """One days_since_outcome() the rules use: the facts key it is computed under."""

    key: str
    """The call's canonical text (the closure reads facts[key])."""
    offers: frozenset[str]
    """The offer named, or the offers of the category named."""
    outcome: str | None
    """Only outcomes of this kind (None: any)."""


@dataclass(frozen=True, slots=True)
class DailyCap:
    """A capped offer's budget for one UTC day; each offer returned takes one unit."""

    total: int
    """Units across all customers and replicas."""
    per_customer: int
    """Units one customer may take."""


@dataclass(frozen=True, slots=True)
class CompiledNotice:
    """A notice rule with its conditions and texts compiled."""

    spec: NoticeSpec
    test: Fn
    checks: Checks
    texts: dict[str, tuple[Render | None, Render]]
    """Channel → (subject, text)."""
    dedupe_key: Render | None


@dataclass(frozen=True, slots=True)
class CompiledRuleset:
    """Everything `decide` needs, and nothing it has to build per request."""

    source: Ruleset
    offers: tuple[CompiledOffer, ...]
    """In bit order (grouped by value, best bound first); `file_order` lists them as written."""
    file_order: tuple[int, ...]
    written_ids: tuple[str, ...]
    """The offers' ids in file order (explain=True lists them so)."""
    offer_groups: tuple[OfferGroup, ...]
    offer_bounds: tuple[float, ...]
    """Each offer's `bound`, by bit."""
    category_masks: dict[str, int]
    """The offers of each category, as a bitmask."""
    offer_bits: dict[str, int]
    """Offer id → its bit in the offer index."""
    contact_scopes: tuple[ContactScope, ...]
    scopes_by_offer: dict[str, tuple[int, ...]]
    """Offer id → the contact scopes (positions) that cover it: a decision reads the
    customer's few offers' history, not every offer of a category."""
    daily_caps: dict[str, DailyCap]
    """Offer id → its budget per UTC day, for capped offers."""
    offer_index: RuleIndex
    routes: tuple[RouteSpec, ...]
    route_ids: tuple[str, ...]
    route_index: RuleIndex
    policies: tuple[CompiledPolicy, ...]
    profile_parsers: dict[str, Parser]
    attribute_parsers: dict[str, Parser]
    date_fields: frozenset[str]
    texts: TextStyle
    """For the texts compiled elsewhere (moments' guidance), read as the offers' scripts."""
    outcome_lookups: tuple[OutcomeLookup, ...] = ()
    """The days_since_outcome() values the facts need (none: nothing is computed)."""
    notice_lookups: tuple[tuple[str, str], ...] = ()
    """The days_since_notice() values the facts need: (facts key, notice id)."""
    notices_on: dict[str, tuple[CompiledNotice, ...]] = field(default_factory=dict)
    """Event type → the notices that react to it, in file order."""
    event_parsers: dict[str, dict[str, Parser]] = field(default_factory=dict)
    """Event type → its declared attributes' parsers."""

    @property
    def version(self) -> str:
        return self.source.version

    @property
    def rule_count(self) -> int:
        return len(self.offers) + len(self.routes) + len(self.policies)


def compile_ruleset(ruleset: Ruleset) -> CompiledRuleset:
    """Index offers and routing rules, compile every expression."""
    with paused_gc(), shared_compilation():
        return _compile_ruleset(ruleset)


def _compile_ruleset(ruleset: Ruleset) -> CompiledRuleset:
    texts = TextStyle.of(ruleset)
    offers, groups = _grouped_offers(ruleset.offers, texts)
    offer_terms = [
        [c.node for c in o.spec.when]
        + ([_channel_term(o.spec)] if _channel_term(o.spec) is not None else [])
        for o in offers
    ]
    position = {id(o.spec): i for i, o in enumerate(offers)}
    bits = {o.spec.id: i for i, o in enumerate(offers)}
    fields = ruleset.fields
    scopes = []
    for policy in ruleset.contact_policies:
        covered = frozenset(
            o.id for o in ruleset.offers if o.id in policy.offers or o.category in policy.categories
        )
        scopes.append(ContactScope(policy, covered, sum(1 << bits[o] for o in covered)))
    return CompiledRuleset(
        source=ruleset,
        offers=offers,
        file_order=tuple(position[id(spec)] for spec in ruleset.offers),
        written_ids=tuple(spec.id for spec in ruleset.offers),
        offer_groups=groups,
        offer_bounds=tuple(o.bound for o in offers),
        category_masks=_category_masks(offers),
        offer_bits=bits,
        contact_scopes=tuple(scopes),
        scopes_by_offer={
            o.spec.id: covering
            for o in offers
            if (covering := tuple(k for k, c in enumerate(scopes) if o.spec.id in c.offers))
        },
        daily_caps={
            o.id: DailyCap(o.daily_cap, o.daily_cap_per_customer or 1)
            for o in ruleset.offers
            if o.daily_cap is not None
        },
        offer_index=RuleIndex(
            [[t for t in terms if t is not None] for terms in offer_terms],
            # explain=True lists offers as written
            explain_order=[position[id(spec)] for spec in ruleset.offers],
        ),
        routes=ruleset.routes,
        route_ids=tuple(r.id for r in ruleset.routes),
        route_index=RuleIndex([[c.node for c in r.when] for r in ruleset.routes]),
        policies=tuple(
            CompiledPolicy(
                p,
                compile_all([c.node for c in p.when]) or (lambda facts: True),
                frozenset(p.first),
                frozenset(p.suppress),
                compile_checks([c.node for c in p.when]),
            )
            for p in ruleset.policies
        ),
        profile_parsers={n: fast_parser(s) for n, s in fields.items() if s.source == "profile"},
        attribute_parsers={n: fast_parser(s) for n, s in fields.items() if s.source == "attribute"},
        date_fields=frozenset(n for n, s in fields.items() if s.kind == "date")
        | _event_dates(ruleset.notices),
        texts=texts,
        outcome_lookups=_outcome_lookups(ruleset),
        notice_lookups=_notice_lookups(ruleset),
        notices_on=_notices_on(ruleset.notices, texts),
        event_parsers={
            name: {a: fast_parser(spec) for a, spec in event.attributes.items()}
            for name, event in (ruleset.notices.events.items() if ruleset.notices else ())
        },
    )


def _decision_nodes(ruleset: Ruleset) -> list[Node]:
    """Every distinct expression a decision evaluates (offers, routing, policies), each
    once: the loader shares the node of a repeated text, and walking it again finds
    nothing new."""
    conditions = [
        cond
        for o in ruleset.offers
        for cond in (*o.when, o.value, *(w.when for w in o.weights), *(c for _, c in o.params))
    ]
    conditions += [cond for route in ruleset.routes for cond in route.when]
    conditions += [cond for policy in ruleset.policies for cond in policy.when]
    return list({id(c.node): c.node for c in conditions}.values())


def _notice_lookups(ruleset: Ruleset) -> tuple[tuple[str, str], ...]:
    """Every distinct days_since_notice() a decision reads: (facts key, notice id)."""
    found = {
        render(call): str(call.args[0].value)
        for node in _decision_nodes(ruleset)
        for call in outcome_calls(node, NOTICE_DAYS)
        if isinstance(call.args[0], Literal)
    }
    return tuple(found.items())


def _outcome_lookups(ruleset: Ruleset) -> tuple[OutcomeLookup, ...]:
    """Every distinct days_since_outcome() of the offers, routing rules and policies."""
    lookups: dict[str, OutcomeLookup] = {}
    for node in _decision_nodes(ruleset):
        for call in outcome_calls(node):
            key = render(call)
            if key in lookups:
                continue
            named = {name: str(literal.value) for name, literal in call.keywords}
            offers = frozenset(
                o.id
                for o in ruleset.offers
                if o.id == named.get("offer") or o.category == named.get("category")
            )
            lookups[key] = OutcomeLookup(key, offers, named.get("outcome"))
    return tuple(lookups.values())


def _notices_on(
    rules: NoticeRules | None, style: TextStyle
) -> dict[str, tuple[CompiledNotice, ...]]:
    if rules is None:
        return {}
    # Event attributes that are dates read as dates in the texts, like profile dates.
    style = replace(style, dates=style.dates | _event_dates(rules))
    by_event: dict[str, list[CompiledNotice]] = {}
    for spec in rules.notices:
        nodes = [c.node for c in spec.when]
        texts = {
            channel: (
                style.compile(m.subject) if m.subject is not None else None,
                style.compile(m.text),
            )
            for channel, m in spec.messages.items()
        }
        dedupe = style.compile(spec.dedupe_key) if spec.dedupe_key is not None else None
        compiled = CompiledNotice(
            spec, compile_all(nodes) or _always, compile_checks(nodes), texts, dedupe
        )
        by_event.setdefault(spec.on, []).append(compiled)
    return {event: tuple(notices) for event, notices in by_event.items()}


def _event_dates(rules: NoticeRules | None) -> frozenset[str]:
    """Date attributes of events (their names are distinct from every other field's)."""
    events = rules.events.values() if rules else ()
    return frozenset(a for e in events for a, spec in e.attributes.items() if spec.kind == "date")


def _always(facts: Facts) -> bool:
    return True


def load_compiled(directory: Path) -> CompiledRuleset:
    """Load, check and compile a rules directory (RulesetError if it cannot go live)."""
    with paused_gc():
        return compile_ruleset(load_ruleset(directory))


def _channel_term(offer: OfferSpec) -> Any:
    from decision_engine.ruleset.expr import Field, Literal, Member
    from decision_engine.vocabulary import CHANNELS

    if set(offer.channels) >= set(CHANNELS):
        return None
    return Member(Field("channel", 1), tuple(Literal(c, 1) for c in offer.channels), False, 1)


def _category_masks(offers: tuple[CompiledOffer, ...]) -> dict[str, int]:
    masks: dict[str, int] = {}
    for i, offer in enumerate(offers):
        masks[offer.spec.category] = masks.get(offer.spec.category, 0) | 1 << i
    return masks


def linear_value(node: Node) -> tuple[str, Node | None, float]:
    """(base key, base node, scale) with value = scale x base; the base is None for constants.

    `clv * 0.1` and `clv * 0.25` share the base `clv`, so one ordering by bound
    serves both; any other expression is its own base with scale 1.
    """
    fixed = constant(node)
    if fixed is not None:
        return "", None, fixed
    if isinstance(node, Field):
        return node.name, node, 1.0
    if isinstance(node, Arith) and node.op in ("*", "/"):
        left, right = node.left, node.right
        if node.op == "*" and isinstance(left, Literal) and isinstance(right, Field):
            left, right = right, left
        factor = constant(right)
        if isinstance(left, Field) and factor is not None and (node.op == "*" or factor != 0):
            return left.name, left, factor if node.op == "*" else 1 / factor
    return render(node), node, 1.0


def _grouped_offers(
    specs: tuple[OfferSpec, ...], texts: TextStyle
) -> tuple[tuple[CompiledOffer, ...], tuple[OfferGroup, ...]]:
    """Offers in bit order: by value base, then by descending score bound."""
    by_base: dict[str, tuple[Node | None, list[tuple[OfferSpec, float]]]] = {}
    for spec in specs:
        key, base, scale = linear_value(spec.value.node)
        by_base.setdefault(key, (base, []))[1].append((spec, scale))
    offers: list[CompiledOffer] = []
    groups: list[OfferGroup] = []
    for base, members in by_base.values():
        compiled = sorted(
            (_offer(spec, scale, texts) for spec, scale in members), key=lambda o: -o.bound
        )
        start = len(offers)
        offers.extend(compiled)
        mask = ((1 << len(offers)) - 1) ^ ((1 << start) - 1)
        groups.append(
            OfferGroup(
                mask,
                None if base is None else compile_node(base),
                prunable=all(o.scale >= 0 for o in compiled),
                start=start,
            )
        )
    return tuple(offers), tuple(groups)


def _offer(spec: OfferSpec, scale: float, texts: TextStyle) -> CompiledOffer:
    factor = spec.propensity * spec.lever
    # Weights multiply the score; for a non-negative base the largest product bounds it.
    high = 1.0
    for w in spec.weights:
        high *= max(w.factor, 1.0)
    return CompiledOffer(
        spec=spec,
        value=compile_node(spec.value.node),
        weights=tuple(
            (compile_node(w.when.node), w.factor, f"weight x{w.factor:g}: {w.when.text}")
            for w in spec.weights
        ),
        params=tuple((name, compile_node(c.node)) for name, c in spec.params),
        script=texts.compile(spec.script),
        eligibility=" and ".join(_bracketed(c, len(spec.when)) for c in spec.when) or "always",
        scale=scale,
        factor=factor,
        bound=factor * scale * high,
        reach=spec.lever * scale * high,
    )


def _bracketed(condition: Condition, count: int) -> str:
    """A condition's text, bracketed when joined to others by `and` would change its reading."""
    node = condition.node
    if count > 1 and isinstance(node, Logic) and node.op == "or":
        return f"({condition.text})"
    return condition.text


def _finite(raw: str) -> float:
    number = float(raw)
    if number - number != 0:  # inf or nan: float() takes them, no schema does
        raise ValueError(raw)
    return number


def fast_parser(spec: FieldSpec) -> Parser:
    """Type a stored text value quickly; ValueError when it does not fit the field.

    Stored values were validated on import; this is the hot path, so it only
    converts and checks enum membership (a bad value is treated as absent).
    """
    if spec.kind in ("number", "integer"):
        return _finite
    if spec.kind == "date":
        return lambda raw: date.fromisoformat(raw[:10]).toordinal()
    if spec.kind == "bool":
        return lambda raw: spec.parse(raw)
    if spec.kind == "enum":
        allowed = frozenset(spec.values)

        def enum(raw: str) -> str:
            if raw not in allowed:
                raise ValueError(raw)
            return raw

        return enum
    return str
