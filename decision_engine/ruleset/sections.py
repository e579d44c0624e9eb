"""Build a Ruleset from the sections of rule files, collecting every located problem.

Any file may hold any of the top-level sections; a section's items may be spread
over several files (offers in one, routing in another).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TypeVar

import yaml

from decision_engine.errors import Problem, Where
from decision_engine.ruleset.fields import builtin_fields
from decision_engine.ruleset.formats import currency_problem, locale_problem
from decision_engine.ruleset.moment_section import MomentScope, check_moments, moment
from decision_engine.ruleset.notice_section import declared_notices, notice_rules
from decision_engine.ruleset.offer_section import (
    category_policy,
    declared_category,
    declared_id,
    items_of,
    offer,
)
from decision_engine.ruleset.population_section import field_population
from decision_engine.ruleset.rule_nodes import RuleNodes
from decision_engine.ruleset.schema import KINDS, UNKNOWN_ATTRIBUTES, FieldPopulation, FieldSpec
from decision_engine.ruleset.spec import (
    ContactPolicy,
    DefaultRoute,
    Learning,
    MomentSpec,
    NoticeSpec,
    OfferSpec,
    PolicySpec,
    RouteSpec,
    Ruleset,
)
from decision_engine.ruleset.typecheck import OutcomeNames, did_you_mean
from decision_engine.vocabulary import CHANNELS

SECTIONS = ("ruleset", "schema", "offers", "routing", "arbitration", "moments", "notices")
MAX_OFFERS_LIMIT = 20
T = TypeVar("T")


def build_ruleset(
    docs: list[tuple[RuleNodes, yaml.MappingNode]],
    version: str,
    problems: list[Problem],
    directory: str = "",
) -> Ruleset | None:
    """The ruleset the files' root mappings declare; None when there are problems.

    A problem of the ruleset as a whole is located where its fix belongs (the first
    `routing:` key for a missing default route), or at `directory` when there is no
    such place.
    """
    return _Builder(problems, directory).build(docs, version)


P = TypeVar("P", RouteSpec, PolicySpec)


def in_precedence_order(items: list[P]) -> tuple[P, ...]:
    """Lowest precedence first; a stable sort, so ties keep the order they were read in
    (files by name, then the order in the file)."""
    return tuple(sorted(items, key=lambda item: item.precedence))


RULESET_KEYS = ("label", "description", "locale", "currency")


def _setting(
    r: RuleNodes, node: yaml.Node | None, what: str, problem: Callable[[str], str | None]
) -> str:
    """A locale or currency of the `ruleset:` section; "" when absent or wrong."""
    if node is None:
        return ""
    value = r.text(node, f"ruleset {what}")
    found = problem(value) if value else None
    if found is not None:
        r.error(node, found)
        return ""
    return value


def _key_node(mapping: yaml.Node, key: str) -> yaml.Node | None:
    """The node of `key` in a mapping node (the first, when it is repeated)."""
    if isinstance(mapping, yaml.MappingNode):
        for key_node, _ in mapping.value:
            if str(key_node.value) == key:
                found: yaml.Node = key_node
                return found
    return None


@dataclass
class _Sections:
    label: str = ""
    locale: str = ""
    currency: str = ""
    schema: list[tuple[RuleNodes, yaml.Node]] = field(default_factory=list)
    offers: list[tuple[RuleNodes, yaml.Node]] = field(default_factory=list)
    routing: list[tuple[RuleNodes, yaml.Node]] = field(default_factory=list)
    arbitration: list[tuple[RuleNodes, yaml.Node]] = field(default_factory=list)
    moments: list[tuple[RuleNodes, yaml.Node]] = field(default_factory=list)
    notices: list[tuple[RuleNodes, yaml.Node]] = field(default_factory=list)


class _Builder:
    """Builds each section with the reader of the file it is in."""

    def __init__(self, problems: list[Problem], directory: str = "") -> None:
        self.problems = problems
        self.directory = directory
        self.offer_contact_policies: list[ContactPolicy] = []

    def build(self, docs: list[tuple[RuleNodes, yaml.MappingNode]], version: str) -> Ruleset | None:
        sections = _Sections()
        routing_key: tuple[RuleNodes, yaml.Node] | None = None
        for r, doc in docs:
            key_node = _key_node(doc, "routing")
            if routing_key is None and key_node is not None:
                routing_key = (r, key_node)
            for key, value in r.mapping(doc, "a rule file", SECTIONS).items():
                if key == "ruleset":
                    meta = r.mapping(value, "ruleset", RULESET_KEYS)
                    sections.label = r.text(meta.get("label"), "ruleset label", "")
                    sections.locale = _setting(r, meta.get("locale"), "locale", locale_problem)
                    sections.currency = _setting(
                        r, meta.get("currency"), "currency", currency_problem
                    )
                else:
                    getattr(sections, key).append((r, value))
        fields, intents, unknown_attributes = self._schema(sections.schema)
        # Offers, routing and arbitration may read the offer history by offer or category
        # (days_since_outcome): the names are those written, so an offer's condition may
        # name an offer that comes after it, and a broken offer does not cascade.
        written = [
            item
            for _, node in sections.offers
            if isinstance(node, yaml.SequenceNode)
            for item in node.value
        ]
        outcome_names = OutcomeNames(
            offers=frozenset(i for i in map(declared_id, written) if i),
            categories=frozenset(map(declared_category, written)),
            notices=declared_notices(sections.notices),
        )
        del written
        for r, _ in docs:
            r.outcomes = outcome_names
        offers = list(
            self._each(
                sections.offers,
                "offers",
                lambda r, n: offer(
                    r, n, fields, self.offer_contact_policies, currency=sections.currency
                ),
                release=True,
            )
        )
        routes: list[RouteSpec] = []
        default: DefaultRoute | None = None
        for r, node in sections.routing:
            section = r.mapping(node, "routing", ("default", "rules"))
            if "default" in section:
                if default is not None:
                    r.error(section["default"], f"a second default route (first: {default.where})")
                default = self._default_route(r, section["default"])
            if "rules" in section:
                rules = [(r, section["rules"])]
                routes.extend(
                    self._each(
                        rules, "routing rules", lambda r, n: self._route(r, n, fields), release=True
                    )
                )
        # Categories of every offer written, valid or not (see declared_category).
        categories = set(outcome_names.categories)
        max_offers, policies = 3, []
        category_policies: list[ContactPolicy] = []
        channel_limits: dict[str, int] = {}
        per_interaction: int | None = None
        learning = Learning()
        for r, node in sections.arbitration[:1]:
            keys = (
                "max_offers", "policies", "contact_policies", "channel_limits",
                "max_offers_per_interaction", "learning",
            )  # fmt: skip
            section = r.mapping(node, "arbitration", keys)
            max_offers = r.integer(section.get("max_offers"), "max_offers", 3, 1, MAX_OFFERS_LIMIT)
            policies = [
                p
                for item in r.sequence(section.get("policies"), "policies")
                if (p := self._policy(r, item, fields, categories)) is not None
            ]
            for item in r.sequence(section.get("contact_policies"), "contact_policies"):
                policy = category_policy(r, item, categories)
                if policy is not None:
                    category_policies.append(policy)
            for channel, limit_node in r.mapping(
                section.get("channel_limits"), "channel_limits"
            ).items():
                if channel not in CHANNELS:
                    r.error(
                        limit_node,
                        f"unknown channel {channel!r}{did_you_mean(channel, list(CHANNELS))}",
                    )
                channel_limits[channel] = r.integer(
                    limit_node, "channel limit", 1, 0, MAX_OFFERS_LIMIT
                )
            if "learning" in section:
                learning = self._learning(r, section["learning"], fields)
            if "max_offers_per_interaction" in section:
                per_interaction = r.integer(
                    section["max_offers_per_interaction"], "max_offers_per_interaction", 1, 0, 1000
                )
        for r, node in sections.arbitration[1:]:
            r.error(node, "arbitration is declared twice; keep it in one file")
        first = () if default is None else (default.queue,)
        queues = tuple(dict.fromkeys([*first, *(route.queue for route in routes)]))
        scope = MomentScope(fields, intents, queues, sections.currency)
        for r, _ in docs:
            r.outcomes = None  # moment conditions do not see the offer history
        moments = list(self._each(sections.moments, "moments", lambda r, n: moment(r, n, scope)))
        check_moments(moments, self.problems)
        notices = notice_rules(sections.notices, fields, self._field, currency=sections.currency)
        self._unique("offer", offers)
        self._unique("routing rule", routes)
        self._unique("policy", policies)
        self._unique("contact policy", [*self.offer_contact_policies, *category_policies])
        self._unique("moment", moments)
        self._unique("notice", list(notices.notices) if notices else [])
        if default is None:
            message = "no default route: add routing: default: {queue: ..., priority: ...}"
            if routing_key is not None:
                routing_key[0].error(routing_key[1], message)
            else:
                self.problems.append(Problem.at(self.directory, 0, 0, message))
            return None
        if self.problems:
            return None
        return Ruleset(
            version=version,
            label=sections.label,
            locale=sections.locale,
            currency=sections.currency,
            fields=fields,
            offers=tuple(offers),
            routes=in_precedence_order(routes),
            default_route=default,
            policies=in_precedence_order(policies),
            max_offers=max_offers,
            files=tuple(r.file for r, _ in docs),
            contact_policies=(*self.offer_contact_policies, *category_policies),
            channel_limits=channel_limits,
            max_offers_per_interaction=per_interaction,
            learning=learning,
            moments=tuple(moments),
            unknown_attributes=unknown_attributes,
            notices=notices,
        )

    def _each(
        self,
        parts: list[tuple[RuleNodes, yaml.Node]],
        what: str,
        build: Callable[[RuleNodes, yaml.Node], T | None],
        *,
        release: bool = False,
    ) -> Iterator[T]:
        """Each item built; with `release`, an item's nodes are dropped once it is built:
        at 10,000 offers the offers' node tree is most of a load's memory."""
        for r, node in parts:
            items = r.sequence(node, what)
            if release and isinstance(node, yaml.SequenceNode):
                node.value = []
            items.reverse()
            while items:
                with r.composed(items.pop()) as item:
                    built = build(r, item) if item is not None else None
                if built is not None:
                    yield built

    def _unique(
        self,
        what: str,
        items: (
            list[OfferSpec]
            | list[RouteSpec]
            | list[PolicySpec]
            | list[ContactPolicy]
            | list[MomentSpec]
            | list[NoticeSpec]
        ),
    ) -> None:
        seen: dict[str, Where] = {}
        for item in items:
            if item.id in seen:
                w = item.where
                self.problems.append(
                    Problem(
                        w,
                        f"duplicate {what} id {item.id!r} (first at {seen[item.id]})",
                    )
                )
            else:
                seen[item.id] = item.where

    def _schema(
        self, parts: list[tuple[RuleNodes, yaml.Node]]
    ) -> tuple[dict[str, FieldSpec], tuple[str, ...], str]:
        declared: dict[str, FieldSpec] = {}
        declared_at: dict[str, tuple[RuleNodes, yaml.Node]] = {}
        intents: tuple[str, ...] = ()
        intent_mix: FieldPopulation | None = None
        unknown_attributes = "ignore"
        for r, node in parts:
            section = r.mapping(
                node, "schema", ("profile", "attributes", "intents", "unknown_attributes")
            )
            if "unknown_attributes" in section:
                unknown_attributes = r.text(
                    section["unknown_attributes"], "unknown_attributes", "ignore"
                )
                if unknown_attributes not in UNKNOWN_ATTRIBUTES:
                    r.error(
                        section["unknown_attributes"],
                        f"unknown_attributes must be one of {', '.join(UNKNOWN_ATTRIBUTES)}"
                        + did_you_mean(unknown_attributes, list(UNKNOWN_ATTRIBUTES)),
                    )
                    unknown_attributes = "ignore"
            for source in ("profile", "attributes"):
                source_node = section.get(source)
                for field_name, spec_node in r.mapping(source_node, f"schema {source}").items():
                    kind = "attribute" if source == "attributes" else "profile"
                    earlier = [n for n, s in declared.items() if s.source == kind]
                    spec = self._field(r, field_name, spec_node, kind, earlier)
                    if spec is None:
                        continue
                    if field_name in declared:
                        r.error(spec_node, f"field {field_name!r} is declared twice")
                    declared[field_name] = spec
                    assert source_node is not None
                    declared_at[field_name] = (r, _key_node(source_node, field_name) or spec_node)
            if isinstance(section.get("intents"), yaml.MappingNode):
                # intent: weight, the mix a simulation draws the intents from
                weights = r.mapping(section["intents"], "intents")
                intents = tuple(weights)
                intent_mix = FieldPopulation(
                    "weights",
                    weights=tuple(
                        (i, r.number(w, f"intent {i} weight", 1.0, 0)) for i, w in weights.items()
                    ),
                )
            elif "intents" in section:
                intents = r.names(section["intents"], "intents")
                intent_mix = None
        has_contract_end = declared.get("contract_end", FieldSpec("", "string")).kind == "date"
        fields = builtin_fields(intents, has_contract_end=has_contract_end)
        if intent_mix is not None:
            fields["intent"] = replace(fields["intent"], population=intent_mix)
        for field_name, spec in declared.items():
            if field_name in fields:
                r, node = declared_at[field_name]
                r.error(node, f"field {field_name!r} is built in; pick another name")
            fields[field_name] = spec
        return fields, intents, unknown_attributes

    def _field(
        self, r: RuleNodes, name: str, node: yaml.Node, source: str, earlier: list[str]
    ) -> FieldSpec | None:
        keys = ("type", "values", "min", "max", "description", "population")
        spec = r.mapping(node, f"field {name}", keys)
        kind = r.text(spec.get("type"), f"{name} type", "")
        if kind not in KINDS:
            r.error(
                spec.get("type", node),
                f"field {name}: type must be one of {', '.join(KINDS)}"
                + did_you_mean(kind, list(KINDS)),
            )
            return None
        values = r.names(spec.get("values"), f"{name} values")
        if kind == "enum" and not values:
            r.error(node, f"field {name}: an enum lists its values")
        low = r.number(spec.get("min"), f"{name} min", float("nan")) if "min" in spec else None
        high = r.number(spec.get("max"), f"{name} max", float("nan")) if "max" in spec else None
        declared = FieldSpec(
            name,
            kind,
            values,
            low,
            high,
            source=source,
            description=r.text(spec.get("description"), "description", ""),
        )
        if "population" not in spec:
            return declared
        population = field_population(r, declared, spec["population"], earlier)
        return replace(declared, population=population)

    def _route(
        self, r: RuleNodes, node: yaml.Node, fields: dict[str, FieldSpec]
    ) -> RouteSpec | None:
        keys = (
            "id",
            "when",
            "queue",
            "priority",
            "reason",
            "skip_ivr",
            "precedence",
            "description",
        )
        if not isinstance(node, yaml.MappingNode):
            r.error(node, "a routing rule must be a mapping (id, when, queue, ...)")
            return None
        spec = r.mapping(node, "routing rule", keys)
        for required in ("id", "when", "queue"):
            if required not in spec:
                r.error(node, f"routing rule has no {required}")
                return None
        rule_id = r.text(spec["id"], "routing rule id")
        return RouteSpec(
            id=rule_id,
            when=r.conditions(spec["when"], f"routing {rule_id}", fields),
            queue=r.text(spec["queue"], "queue"),
            priority=r.integer(spec.get("priority"), "priority", 5, 1, 10),
            reason=r.text(spec.get("reason"), "reason", rule_id),
            skip_ivr=r.boolean(spec.get("skip_ivr"), "skip_ivr"),
            precedence=r.precedence(spec.get("precedence")),
            where=r.where(node),
        )

    def _default_route(self, r: RuleNodes, node: yaml.Node) -> DefaultRoute:
        spec = r.mapping(node, "default route", ("queue", "priority", "reason"))
        if "queue" not in spec:
            r.error(node, "the default route has no queue")
        return DefaultRoute(
            queue=r.text(spec.get("queue"), "queue", "general"),
            priority=r.integer(spec.get("priority"), "priority", 5, 1, 10),
            reason=r.text(spec.get("reason"), "reason", "default route"),
            where=r.where(node),
        )

    def _learning(self, r: RuleNodes, node: yaml.Node, fields: dict[str, FieldSpec]) -> Learning:
        keys = ("enabled", "prior_strength", "half_life_days", "by", "exploration")
        spec = r.mapping(node, "learning", keys)
        by = r.text(spec.get("by"), "learning by", "") or None
        if by is not None:
            field = fields.get(by)
            if field is None or field.kind != "enum" or field.source != "profile":
                r.error(spec["by"], f"learning by: {by!r} is not an enum profile field")
                by = None
        return Learning(
            enabled=r.boolean(spec.get("enabled"), "learning enabled")
            if "enabled" in spec
            else True,
            prior_strength=r.number(spec.get("prior_strength"), "prior_strength", 20, 1, 1e6),
            half_life_days=r.number(spec.get("half_life_days"), "half_life_days", 30, 0, 3650),
            by=by,
            exploration=r.number(spec.get("exploration"), "exploration", 0, 0, 1),
        )

    def _policy(
        self, r: RuleNodes, node: yaml.Node, fields: dict[str, FieldSpec], categories: set[str]
    ) -> PolicySpec | None:
        keys = ("id", "when", "first", "suppress", "precedence", "description")
        spec = r.mapping(node, "policy", keys)
        if "id" not in spec or "when" not in spec:
            r.error(node, "a policy has an id and a `when`")
            return None
        policy_id = r.text(spec["id"], "policy id")
        named = {}
        for key in ("first", "suppress"):
            named[key] = r.names(spec.get(key), key)
            # As for contact policies: a misspelt category would silently never match.
            for item, category in zip(items_of(spec.get(key)), named[key], strict=False):
                if category not in categories:
                    r.error(
                        item,
                        f"policy {policy_id} {key}: no offer has category {category!r}"
                        + did_you_mean(category, sorted(categories)),
                    )
        return PolicySpec(
            id=policy_id,
            when=r.conditions(spec["when"], f"policy {policy_id}", fields),
            first=named["first"],
            suppress=named["suppress"],
            where=r.where(node),
            precedence=r.precedence(spec.get("precedence")),
        )
