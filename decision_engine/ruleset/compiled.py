"""The compiled ruleset: indexes, closures and parsers, built once per version."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from decision_engine.ruleset.compile import Fn, RuleIndex, compile_all, compile_node
from decision_engine.ruleset.expr import Logic
from decision_engine.ruleset.load import load_ruleset
from decision_engine.ruleset.model import Condition, OfferSpec, PolicySpec, RouteSpec, Ruleset
from decision_engine.ruleset.schema import FieldSpec

Parser = Callable[[str], Any]


@dataclass(frozen=True, slots=True)
class CompiledOffer:
    spec: OfferSpec
    value: Fn
    weights: tuple[tuple[Fn, float, str], ...]
    """(condition, factor, condition text)."""
    params: tuple[tuple[str, Fn], ...]
    eligibility: str
    """The conditions as written, for the offer's reasons."""


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    spec: PolicySpec
    test: Fn
    first: frozenset[str]
    suppress: frozenset[str]


@dataclass(frozen=True, slots=True)
class CompiledRuleset:
    """Everything `decide` needs, and nothing it has to build per request."""

    source: Ruleset
    offers: tuple[CompiledOffer, ...]
    offer_index: RuleIndex
    routes: tuple[RouteSpec, ...]
    route_index: RuleIndex
    policies: tuple[CompiledPolicy, ...]
    profile_parsers: dict[str, Parser]
    attribute_parsers: dict[str, Parser]
    date_fields: frozenset[str]

    @property
    def version(self) -> str:
        return self.source.version

    @property
    def rule_count(self) -> int:
        return len(self.offers) + len(self.routes) + len(self.policies)


def compile_ruleset(ruleset: Ruleset) -> CompiledRuleset:
    """Index offers and routing rules, compile every expression."""
    offers = tuple(_offer(o) for o in ruleset.offers)
    offer_terms = [
        [c.node for c in o.when] + ([_channel_term(o)] if _channel_term(o) is not None else [])
        for o in ruleset.offers
    ]
    fields = ruleset.fields
    return CompiledRuleset(
        source=ruleset,
        offers=offers,
        offer_index=RuleIndex([[t for t in terms if t is not None] for terms in offer_terms]),
        routes=ruleset.routes,
        route_index=RuleIndex([[c.node for c in r.when] for r in ruleset.routes]),
        policies=tuple(
            CompiledPolicy(
                p,
                compile_all([c.node for c in p.when]) or (lambda facts: True),
                frozenset(p.first),
                frozenset(p.suppress),
            )
            for p in ruleset.policies
        ),
        profile_parsers={n: fast_parser(s) for n, s in fields.items() if s.source == "profile"},
        attribute_parsers={n: fast_parser(s) for n, s in fields.items() if s.source == "attribute"},
        date_fields=frozenset(n for n, s in fields.items() if s.kind == "date"),
    )


def load_compiled(directory: Path) -> CompiledRuleset:
    """Load, check and compile a rules directory (RulesetError if it cannot go live)."""
    return compile_ruleset(load_ruleset(directory))


def _channel_term(offer: OfferSpec) -> Any:
    from decision_engine.decide.model import CHANNELS
    from decision_engine.ruleset.expr import Field, Literal, Member

    if set(offer.channels) >= set(CHANNELS):
        return None
    return Member(Field("channel", 1), tuple(Literal(c, 1) for c in offer.channels), False, 1)


def _offer(spec: OfferSpec) -> CompiledOffer:
    return CompiledOffer(
        spec=spec,
        value=compile_node(spec.value.node),
        weights=tuple((compile_node(w.when.node), w.factor, w.when.text) for w in spec.weights),
        params=tuple((name, compile_node(c.node)) for name, c in spec.params),
        eligibility=" and ".join(_bracketed(c, len(spec.when)) for c in spec.when) or "always",
    )


def _bracketed(condition: Condition, count: int) -> str:
    """A condition's text, bracketed when joined to others by `and` would change its reading."""
    node = condition.node
    if count > 1 and isinstance(node, Logic) and node.op == "or":
        return f"({condition.text})"
    return condition.text


def fast_parser(spec: FieldSpec) -> Parser:
    """Type a stored text value quickly; ValueError when it does not fit the field.

    Stored values were validated on import; this is the hot path, so it only
    converts and checks enum membership (a bad value is treated as absent).
    """
    if spec.kind in ("number", "integer"):
        return float
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
