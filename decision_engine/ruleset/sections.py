"""Build a Ruleset from the sections of rule files, collecting every located problem.

Any file may hold any of the top-level sections; a section's items may be spread
over several files (offers in one, routing in another).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import yaml

from decision_engine.errors import Problem, Where
from decision_engine.ruleset.fields import builtin_fields
from decision_engine.ruleset.model import (
    Condition,
    ContactPolicy,
    DefaultRoute,
    Learning,
    Limit,
    OfferSpec,
    PolicySpec,
    RouteSpec,
    Ruleset,
    Weight,
)
from decision_engine.ruleset.rule_nodes import RuleNodes
from decision_engine.ruleset.schema import KINDS, FieldSpec
from decision_engine.ruleset.template import Template, TemplateError, parse_template
from decision_engine.ruleset.typecheck import did_you_mean
from decision_engine.vocabulary import CHANNELS, id_problem

SECTIONS = ("ruleset", "schema", "offers", "routing", "arbitration")
MAX_OFFERS_LIMIT = 20
T = TypeVar("T")


def build_ruleset(
    docs: list[tuple[RuleNodes, yaml.MappingNode]], version: str, problems: list[Problem]
) -> Ruleset | None:
    """The ruleset the files' root mappings declare; None when there are problems."""
    return _Builder(problems).build(docs, version)


@dataclass
class _Sections:
    label: str = ""
    schema: list[tuple[RuleNodes, yaml.Node]] = field(default_factory=list)
    offers: list[tuple[RuleNodes, yaml.Node]] = field(default_factory=list)
    routing: list[tuple[RuleNodes, yaml.Node]] = field(default_factory=list)
    arbitration: list[tuple[RuleNodes, yaml.Node]] = field(default_factory=list)


class _Builder:
    """Builds each section with the reader of the file it is in."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        self.offer_contact_policies: list[ContactPolicy] = []

    def build(self, docs: list[tuple[RuleNodes, yaml.MappingNode]], version: str) -> Ruleset | None:
        sections = _Sections()
        for r, doc in docs:
            for key, value in r.mapping(doc, "a rule file", SECTIONS).items():
                if key == "ruleset":
                    meta = r.mapping(value, "ruleset", ("label", "description"))
                    sections.label = r.text(meta.get("label"), "ruleset label", "")
                else:
                    getattr(sections, key).append((r, value))
        fields, intents = self._schema(sections.schema)
        offers = list(self._each(sections.offers, "offers", lambda r, n: self._offer(r, n, fields)))
        routes: list[RouteSpec] = []
        default: DefaultRoute | None = None
        for r, node in sections.routing:
            section = r.mapping(node, "routing", ("default", "rules"))
            if "default" in section:
                if default is not None:
                    r.error(section["default"], f"a second default route (first: {default.where})")
                default = self._default_route(r, section["default"])
            if "rules" in section:
                routes.extend(
                    route
                    for item in r.sequence(section["rules"], "routing rules")
                    if (route := self._route(r, item, fields)) is not None
                )
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
                for item in r.sequence(section.get("policies") or _empty(), "policies")
                if (p := self._policy(r, item, fields)) is not None
            ]
            for item in r.sequence(section.get("contact_policies") or _empty(), "contact_policies"):
                policy = self._category_policy(r, item, {o.category for o in offers})
                if policy is not None:
                    category_policies.append(policy)
            for channel, limit_node in r.mapping(
                section.get("channel_limits") or _empty_map(), "channel_limits"
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
        self._unique("offer", offers)
        self._unique("routing rule", routes)
        self._unique("policy", policies)
        self._unique("contact policy", [*self.offer_contact_policies, *category_policies])
        if default is None:
            file = docs[0][0].file if docs else ""
            message = "no default route: add routing: default: {queue: ..., priority: ...}"
            self.problems.append(Problem.at(file, 0, 0, message))
            return None
        if self.problems:
            return None
        del intents
        return Ruleset(
            version=version,
            label=sections.label,
            fields=fields,
            offers=tuple(offers),
            routes=tuple(sorted(routes, key=lambda r: r.precedence)),
            default_route=default,
            policies=tuple(policies),
            max_offers=max_offers,
            files=tuple(r.file for r, _ in docs),
            contact_policies=(*self.offer_contact_policies, *category_policies),
            channel_limits=channel_limits,
            max_offers_per_interaction=per_interaction,
            learning=learning,
        )

    def _each(
        self,
        parts: list[tuple[RuleNodes, yaml.Node]],
        what: str,
        build: Callable[[RuleNodes, yaml.Node], T | None],
    ) -> Iterator[T]:
        for r, node in parts:
            for item in r.sequence(node, what):
                built = build(r, item)
                if built is not None:
                    yield built

    def _unique(
        self,
        what: str,
        items: list[OfferSpec] | list[RouteSpec] | list[PolicySpec] | list[ContactPolicy],
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
    ) -> tuple[dict[str, FieldSpec], tuple[str, ...]]:
        declared: dict[str, FieldSpec] = {}
        intents: tuple[str, ...] = ()
        file = ""
        for r, node in parts:
            file = r.file
            section = r.mapping(node, "schema", ("profile", "attributes", "intents"))
            for source in ("profile", "attributes"):
                for field_name, spec_node in r.mapping(
                    section.get(source) or _empty_map(), f"schema {source}"
                ).items():
                    spec = self._field(
                        r,
                        field_name,
                        spec_node,
                        "attribute" if source == "attributes" else "profile",
                    )
                    if spec is None:
                        continue
                    if field_name in declared:
                        r.error(spec_node, f"field {field_name!r} is declared twice")
                    declared[field_name] = spec
            if "intents" in section:
                intents = r.names(section["intents"], "intents")
        has_contract_end = declared.get("contract_end", FieldSpec("", "string")).kind == "date"
        fields = builtin_fields(intents, has_contract_end=has_contract_end)
        for field_name, spec in declared.items():
            if field_name in fields:
                self.problems.append(
                    Problem.at(file, 0, 0, f"field {field_name!r} is built in; pick another name")
                )
            fields[field_name] = spec
        return fields, intents

    def _field(self, r: RuleNodes, name: str, node: yaml.Node, source: str) -> FieldSpec | None:
        spec = r.mapping(node, f"field {name}", ("type", "values", "min", "max", "description"))
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
        return FieldSpec(
            name,
            kind,
            values,
            low,
            high,
            source=source,
            description=r.text(spec.get("description"), "description", ""),
        )

    def _offer(
        self, r: RuleNodes, node: yaml.Node, fields: dict[str, FieldSpec]
    ) -> OfferSpec | None:
        keys = (
            "id", "title", "category", "script", "value", "cost", "propensity", "lever",
            "channels", "when", "weights", "params", "description", "contact_policy",
            "daily_cap", "daily_cap_per_customer",
        )  # fmt: skip
        if not isinstance(node, yaml.MappingNode):
            r.error(node, "an offer must be a mapping (id, title, when, value, script, ...)")
            return None
        spec = r.mapping(node, "offer", keys)
        if "id" not in spec:
            r.error(node, "offer has no id")
            return None
        offer_id = r.text(spec["id"], "offer id")
        problem = id_problem(offer_id) if offer_id else None
        if problem is not None:
            # Outcomes name the offer, and RecordOutcome refuses ids outside this alphabet.
            r.error(spec["id"], f"offer id {offer_id!r}: {problem}")
        # An absent key means every channel; an explicit `channels: []` means none
        # (rules check warns about it), so it is not widened to all channels.
        channels = r.names(spec["channels"], "channels") if "channels" in spec else CHANNELS
        for ch_node, ch in zip(_items(spec.get("channels")), channels, strict=False):
            if ch not in CHANNELS:
                r.error(
                    ch_node,
                    f"offer {offer_id}: unknown channel {ch!r}{did_you_mean(ch, list(CHANNELS))}",
                )
        params: list[tuple[str, Condition]] = []
        for pname, pnode in r.mapping(spec.get("params") or _empty_map(), "params").items():
            if pname in fields:
                r.error(pnode, f"param {pname!r} hides the field of the same name")
            cond = r.expression(pnode, f"offer {offer_id} param {pname}", fields, want="number")
            if cond is not None:
                params.append((pname, cond))
        value_node = spec.get("value")
        value = (
            r.expression(value_node, f"offer {offer_id} value", fields, want="number")
            if value_node
            else None
        )
        if value_node is None:
            r.error(node, f"offer {offer_id} has no value")
        weights = []
        for wnode in r.sequence(spec.get("weights") or _empty(), "weights"):
            w = r.mapping(wnode, "weight", ("when", "factor"))
            conds = r.conditions(w.get("when"), f"offer {offer_id} weight", fields)
            factor = r.number(w.get("factor"), "weight factor", 1.0, 0, 1000)
            if "when" not in w or "factor" not in w:
                r.error(wnode, "a weight has `when` and `factor`")
            for cond in conds:
                weights.append(Weight(cond, factor))
        script = self._script(r, node, spec.get("script"), offer_id, fields, {p for p, _ in params})
        # Everything is checked before giving up, so one run reports every problem.
        cost = r.number(spec.get("cost"), "cost", 0.0, 0)
        propensity = r.number(spec.get("propensity"), "propensity", 0.1, 0, 1)
        lever = r.number(spec.get("lever"), "lever", 1.0, 0, 1000)
        when = r.conditions(spec.get("when"), f"offer {offer_id}", fields)
        daily_cap = (
            r.integer(spec["daily_cap"], "daily_cap", 0, 1, 1_000_000_000)
            if "daily_cap" in spec
            else None
        )
        per_customer = None
        if "daily_cap_per_customer" in spec:
            node_per = spec["daily_cap_per_customer"]
            per_customer = r.integer(
                node_per, "daily_cap_per_customer", 1, 1, daily_cap or 1_000_000_000
            )
            if daily_cap is None:
                r.error(node_per, f"offer {offer_id}: daily_cap_per_customer needs a daily_cap")
        elif daily_cap is not None:
            per_customer = 1  # the cap counts customers, unless the file says otherwise
        if "contact_policy" in spec:
            policy = self._contact_policy(
                r, spec["contact_policy"], f"{offer_id}/contact-policy", (offer_id,), ()
            )
            if policy is not None:
                self.offer_contact_policies.append(policy)
        if value is None or script is None:
            return None
        return OfferSpec(
            id=offer_id,
            title=r.text(spec.get("title"), "title", offer_id),
            category=r.text(spec.get("category"), "category", "general"),
            script=script,
            value=value,
            cost=cost,
            propensity=propensity,
            lever=lever,
            channels=channels,
            when=when,
            weights=tuple(weights),
            params=tuple(params),
            where=r.where(node),
            daily_cap=daily_cap,
            daily_cap_per_customer=per_customer if daily_cap is not None else None,
        )

    _POLICY_KEYS = ("suppress_after_decline_days", "max_declines", "max_presentations")

    def _contact_policy(
        self,
        r: RuleNodes,
        node: yaml.Node,
        policy_id: str,
        offers: tuple[str, ...],
        categories: tuple[str, ...],
        extra_keys: tuple[str, ...] = (),
    ) -> ContactPolicy | None:
        spec = r.mapping(node, "contact policy", self._POLICY_KEYS + extra_keys)
        if not any(key in spec for key in self._POLICY_KEYS):
            r.error(node, f"contact policy {policy_id} sets none of {', '.join(self._POLICY_KEYS)}")
            return None
        days = spec.get("suppress_after_decline_days")
        return ContactPolicy(
            id=policy_id,
            offers=offers,
            categories=categories,
            suppress_after_decline_days=(
                None if days is None else r.number(days, "suppress_after_decline_days", 0, 0, 3650)
            ),
            max_declines=self._limit(r, spec.get("max_declines"), "max_declines"),
            max_presentations=self._limit(r, spec.get("max_presentations"), "max_presentations"),
            where=r.where(node),
        )

    def _limit(self, r: RuleNodes, node: yaml.Node | None, what: str) -> Limit | None:
        if node is None:
            return None
        spec = r.mapping(node, what, ("count", "within_days"))
        if "count" not in spec or "within_days" not in spec:
            r.error(node, f"{what} needs count and within_days, e.g. {{count: 2, within_days: 30}}")
            return None
        return Limit(
            r.integer(spec["count"], f"{what} count", 1, 1, 1_000_000),
            r.number(spec["within_days"], f"{what} within_days", 1, 0.001, 3650),
        )

    def _script(
        self,
        r: RuleNodes,
        offer: yaml.Node,
        node: yaml.Node | None,
        offer_id: str,
        fields: dict[str, FieldSpec],
        params: set[str],
    ) -> Template | None:
        if node is None:
            r.error(offer, f"offer {offer_id} has no script")
            return None
        raw = r.text(node, "script")
        try:
            template = parse_template(raw)
        except TemplateError as exc:
            r.error(node, f"offer {offer_id} script: {exc.message}")
            return None
        for ph in template.names:
            if ph.name not in fields and ph.name not in params:
                known = list(fields) + sorted(params)
                r.error(
                    node,
                    f"offer {offer_id} script: unknown placeholder {{{ph.name}}}"
                    + did_you_mean(ph.name, known),
                )
        return template

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
            precedence=r.integer(spec.get("precedence"), "precedence", 100, 0, 1_000_000),
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

    def _category_policy(
        self, r: RuleNodes, node: yaml.Node, categories: set[str]
    ) -> ContactPolicy | None:
        if not isinstance(node, yaml.MappingNode):
            r.error(node, "a contact policy is a mapping with an id and categories")
            return None
        spec = r.mapping(
            node, "contact policy", ("id", "categories", "description", *self._POLICY_KEYS)
        )
        if "id" not in spec or "categories" not in spec:
            r.error(node, "a contact policy has an id and categories")
            return None
        policy_id = r.text(spec["id"], "contact policy id")
        named = r.names(spec["categories"], "categories")
        for category in named:
            if category not in categories:
                r.error(
                    spec["categories"],
                    f"contact policy {policy_id}: no offer has category {category!r}"
                    + did_you_mean(category, sorted(categories)),
                )
        return self._contact_policy(
            r, node, policy_id, (), named, extra_keys=("id", "categories", "description")
        )

    def _policy(
        self, r: RuleNodes, node: yaml.Node, fields: dict[str, FieldSpec]
    ) -> PolicySpec | None:
        spec = r.mapping(node, "policy", ("id", "when", "first", "suppress", "description"))
        if "id" not in spec or "when" not in spec:
            r.error(node, "a policy has an id and a `when`")
            return None
        policy_id = r.text(spec["id"], "policy id")
        return PolicySpec(
            id=policy_id,
            when=r.conditions(spec["when"], f"policy {policy_id}", fields),
            first=r.names(spec.get("first"), "first"),
            suppress=r.names(spec.get("suppress"), "suppress"),
            where=r.where(node),
        )


def _empty() -> yaml.SequenceNode:
    return yaml.SequenceNode("tag:yaml.org,2002:seq", [])


def _empty_map() -> yaml.MappingNode:
    return yaml.MappingNode("tag:yaml.org,2002:map", [])


def _items(node: yaml.Node | None) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return [node] if node is not None else []
