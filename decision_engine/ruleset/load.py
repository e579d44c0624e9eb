"""Read a rules directory into a checked Ruleset, or every problem with file:line:col.

Any file may hold any of the top-level sections; a section's items may be spread
over several files (offers in one, routing in another). Files are read in name order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import yaml

from decision_engine.errors import Problem, RulesetError, Where
from decision_engine.ruleset.expr import ExprError, parse
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
from decision_engine.ruleset.schema import KINDS, FieldSpec
from decision_engine.ruleset.template import Template, TemplateError, parse_template
from decision_engine.ruleset.typecheck import check, did_you_mean
from decision_engine.vocabulary import CHANNELS, id_problem

# libyaml's parser keeps line marks and parses large rulesets about twice as fast.
YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

SECTIONS = ("ruleset", "schema", "offers", "routing", "arbitration")
MAX_OFFERS_LIMIT = 20
T = TypeVar("T")


def rule_files(directory: Path) -> list[Path]:
    """The rule files of a directory (tests/ and hidden files are not rules)."""
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and p.suffix in (".yaml", ".yml") and not p.name.startswith(".")
    )


def content_version(files: list[Path], base: Path) -> str:
    """A short hash of the rule files' names and bytes: equal content, equal version."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(base)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def load_ruleset(directory: Path) -> Ruleset:
    """Parse and check every rule file; RulesetError lists all problems found."""
    directory = Path(directory)
    if not directory.is_dir():
        raise RulesetError([Problem.at(str(directory), 0, 0, "rules directory not found")])
    files = rule_files(directory)
    if not files:
        raise RulesetError([Problem.at(str(directory), 0, 0, "no .yaml rule files in directory")])
    reader = _Reader()
    docs: list[tuple[str, yaml.MappingNode]] = []
    for path in files:
        name = str(path)
        node = reader.compose(name, path.read_text(encoding="utf-8"))
        if node is not None:
            docs.append((name, node))
    ruleset = reader.build(docs, content_version(files, directory))
    if reader.problems:
        raise RulesetError(reader.problems)
    assert ruleset is not None
    return ruleset


def load_schema(directory: Path) -> dict[str, FieldSpec]:
    """The profile fields a ruleset declares (for validating imports)."""
    fields = load_ruleset(directory).fields
    return {name: spec for name, spec in fields.items() if spec.source == "profile"}


@dataclass
class _Sections:
    label: str = ""
    schema: list[tuple[str, yaml.Node]] = field(default_factory=list)
    offers: list[tuple[str, yaml.Node]] = field(default_factory=list)
    routing: list[tuple[str, yaml.Node]] = field(default_factory=list)
    arbitration: list[tuple[str, yaml.Node]] = field(default_factory=list)


class _Reader:
    """Walks YAML nodes (which keep their marks) and collects located problems."""

    def __init__(self) -> None:
        self.offer_contact_policies: list[ContactPolicy] = []
        self.problems: list[Problem] = []
        self.file = ""
        self.sources: dict[str, list[str]] = {}

    # -- locating and reporting -------------------------------------------------------

    def where(self, node: yaml.Node) -> Where:
        return Where(self.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def error(self, node: yaml.Node | None, message: str) -> None:
        if node is None:
            self.problems.append(Problem.at(self.file, 0, 0, message))
            return
        w = self.where(node)
        self.problems.append(Problem(w, message))

    def compose(self, name: str, text: str) -> yaml.MappingNode | None:
        self.file = name
        self.sources[name] = text.splitlines()
        try:
            node = yaml.compose(text, Loader=YAML_LOADER)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
            self.problems.append(Problem.at(name, line, col, f"YAML syntax: {exc.problem}"))
            return None
        if node is None:
            return None
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f"a rule file is a mapping of sections ({', '.join(SECTIONS)})")
            return None
        return node

    # -- typed scalars ----------------------------------------------------------------

    def mapping(
        self, node: yaml.Node, what: str, allowed: tuple[str, ...] | None = None
    ) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f"{what} must be a mapping")
            return {}
        out: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in out:
                self.error(key_node, f"duplicate key {key!r} in {what}")
            elif allowed is not None and key not in allowed:
                self.error(
                    key_node, f"unknown key {key!r} in {what}{did_you_mean(key, list(allowed))}"
                )
            else:
                out[key] = value_node
        return out

    def sequence(self, node: yaml.Node, what: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, f"{what} must be a list")
            return []
        return list(node.value)

    def scalar(self, node: yaml.Node, what: str) -> str | None:
        if not isinstance(node, yaml.ScalarNode):
            self.error(node, f"{what} must be a single value")
            return None
        return str(node.value)

    def text(self, node: yaml.Node | None, what: str, default: str | None = None) -> str:
        if node is None:
            if default is None:
                return ""
            return default
        value = self.scalar(node, what)
        if value is not None and value.strip() == "" and default is None:
            self.error(node, f"{what} must not be empty")
        return value or ""

    def number(
        self,
        node: yaml.Node | None,
        what: str,
        default: float,
        low: float | None = None,
        high: float | None = None,
    ) -> float:
        if node is None:
            return default
        raw = self.scalar(node, what)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            self.error(node, f"{what} must be a number, got {raw!r}")
            return default
        if low is not None and high is not None and not low <= value <= high:
            self.error(node, f"{what} must be between {low:g} and {high:g}, got {raw}")
        elif low is not None and value < low:
            self.error(node, f"{what} must be at least {low:g}, got {raw}")
        elif high is not None and value > high:
            self.error(node, f"{what} must be at most {high:g}, got {raw}")
        return value

    def integer(self, node: yaml.Node | None, what: str, default: int, low: int, high: int) -> int:
        value = self.number(node, what, default, low, high)
        if node is not None and not float(value).is_integer():
            self.error(node, f"{what} must be a whole number")
        return int(value)

    def boolean(self, node: yaml.Node | None, what: str) -> bool:
        if node is None:
            return False
        raw = self.scalar(node, what)
        if raw in ("true", "false"):
            return raw == "true"
        self.error(node, f"{what} must be true or false")
        return False

    def names(self, node: yaml.Node | None, what: str) -> tuple[str, ...]:
        if node is None:
            return ()
        if isinstance(node, yaml.ScalarNode):
            return (str(node.value),)
        return tuple(
            v for item in self.sequence(node, what) if (v := self.scalar(item, what)) is not None
        )

    # -- conditions and templates -----------------------------------------------------

    def conditions(
        self, node: yaml.Node | None, what: str, fields: dict[str, FieldSpec]
    ) -> tuple[Condition, ...]:
        """`when:` as one condition or a list of conditions that must all hold."""
        if node is None:
            return ()
        items = [node] if isinstance(node, yaml.ScalarNode) else self.sequence(node, what)
        out = []
        for item in items:
            cond = self.expression(item, what, fields, want="bool")
            if cond is not None:
                out.append(cond)
        return tuple(out)

    def expression(
        self, node: yaml.Node, what: str, fields: dict[str, FieldSpec], *, want: str
    ) -> Condition | None:
        raw = self.scalar(node, what)
        if raw is None:
            return None
        where = self.where(node)
        try:
            tree = parse(raw)
            check(tree, fields, want=want)
        except ExprError as exc:
            assert isinstance(node, yaml.ScalarNode)
            line, col = self.locate(node, exc.col - 1)
            self.problems.append(Problem.at(self.file, line, col, f"{what}: {exc.message}"))
            return None
        return Condition(raw.strip(), tree, where)

    def locate(self, node: yaml.ScalarNode, offset: int) -> tuple[int, int]:
        """File line and column (1-based) of character `offset` of a scalar's value.

        A value may span lines (block `|`/`>` or a folded plain scalar); its text is
        the source lines without indentation, joined by one character each.
        """
        start, end = node.start_mark, node.end_mark
        lines = self.sources.get(self.file, [])
        quoted = 1 if node.style in ("'", '"') else 0
        if start.line == end.line or not lines:
            return start.line + 1, start.column + 1 + quoted + offset
        segments: list[tuple[int, int, str]] = []
        block = node.style in ("|", ">")
        for number in range(start.line + (1 if block else 0), min(end.line, len(lines) - 1) + 1):
            text = lines[number]
            first = (
                start.column + quoted if number == start.line else len(text) - len(text.lstrip())
            )
            last = end.column - quoted if number == end.line else len(text)
            if number == end.line and block:
                break
            segments.append((number, first, text[first:last].rstrip()))
        for number, first, text in segments:
            if offset <= len(text):
                return number + 1, first + offset + 1
            offset -= len(text) + 1
        return start.line + 1, start.column + 1

    # -- sections ---------------------------------------------------------------------

    def build(self, docs: list[tuple[str, yaml.MappingNode]], version: str) -> Ruleset | None:
        sections = _Sections()
        for name, doc in docs:
            self.file = name
            for key, value in self.mapping(doc, "a rule file", SECTIONS).items():
                if key == "ruleset":
                    meta = self.mapping(value, "ruleset", ("label", "description"))
                    sections.label = self.text(meta.get("label"), "ruleset label", "")
                else:
                    getattr(sections, key).append((name, value))
        fields, intents = self._schema(sections.schema)
        offers = list(self._each(sections.offers, "offers", lambda n: self._offer(n, fields)))
        routes: list[RouteSpec] = []
        default: DefaultRoute | None = None
        for name, node in sections.routing:
            self.file = name
            section = self.mapping(node, "routing", ("default", "rules"))
            if "default" in section:
                if default is not None:
                    self.error(
                        section["default"], f"a second default route (first: {default.where})"
                    )
                default = self._default_route(section["default"])
            if "rules" in section:
                routes.extend(
                    r
                    for item in self.sequence(section["rules"], "routing rules")
                    if (r := self._route(item, fields)) is not None
                )
        max_offers, policies = 3, []
        category_policies: list[ContactPolicy] = []
        channel_limits: dict[str, int] = {}
        per_interaction: int | None = None
        learning = Learning()
        for name, node in sections.arbitration[:1]:
            self.file = name
            keys = (
                "max_offers", "policies", "contact_policies", "channel_limits",
                "max_offers_per_interaction", "learning",
            )  # fmt: skip
            section = self.mapping(node, "arbitration", keys)
            max_offers = self.integer(
                section.get("max_offers"), "max_offers", 3, 1, MAX_OFFERS_LIMIT
            )
            policies = [
                p
                for item in self.sequence(section.get("policies") or _empty(), "policies")
                if (p := self._policy(item, fields)) is not None
            ]
            for item in self.sequence(
                section.get("contact_policies") or _empty(), "contact_policies"
            ):
                policy = self._category_policy(item, {o.category for o in offers})
                if policy is not None:
                    category_policies.append(policy)
            for channel, limit_node in self.mapping(
                section.get("channel_limits") or _empty_map(), "channel_limits"
            ).items():
                if channel not in CHANNELS:
                    self.error(
                        limit_node,
                        f"unknown channel {channel!r}{did_you_mean(channel, list(CHANNELS))}",
                    )
                channel_limits[channel] = self.integer(
                    limit_node, "channel limit", 1, 0, MAX_OFFERS_LIMIT
                )
            if "learning" in section:
                learning = self._learning(section["learning"], fields)
            if "max_offers_per_interaction" in section:
                per_interaction = self.integer(
                    section["max_offers_per_interaction"], "max_offers_per_interaction", 1, 0, 1000
                )
        for name, node in sections.arbitration[1:]:
            self.file = name
            self.error(node, "arbitration is declared twice; keep it in one file")
        self._unique("offer", offers)
        self._unique("routing rule", routes)
        self._unique("policy", policies)
        self._unique("contact policy", [*self.offer_contact_policies, *category_policies])
        if default is None:
            self.file = docs[0][0] if docs else ""
            self.error(None, "no default route: add routing: default: {queue: ..., priority: ...}")
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
            files=tuple(name for name, _ in docs),
            contact_policies=(*self.offer_contact_policies, *category_policies),
            channel_limits=channel_limits,
            max_offers_per_interaction=per_interaction,
            learning=learning,
        )

    def _each(
        self,
        parts: list[tuple[str, yaml.Node]],
        what: str,
        build: Callable[[yaml.Node], T | None],
    ) -> Iterator[T]:
        for name, node in parts:
            self.file = name
            for item in self.sequence(node, what):
                built = build(item)
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
        self, parts: list[tuple[str, yaml.Node]]
    ) -> tuple[dict[str, FieldSpec], tuple[str, ...]]:
        declared: dict[str, FieldSpec] = {}
        intents: tuple[str, ...] = ()
        for name, node in parts:
            self.file = name
            section = self.mapping(node, "schema", ("profile", "attributes", "intents"))
            for source in ("profile", "attributes"):
                for field_name, spec_node in self.mapping(
                    section.get(source) or _empty_map(), f"schema {source}"
                ).items():
                    spec = self._field(
                        field_name, spec_node, "attribute" if source == "attributes" else "profile"
                    )
                    if spec is None:
                        continue
                    if field_name in declared:
                        self.error(spec_node, f"field {field_name!r} is declared twice")
                    declared[field_name] = spec
            if "intents" in section:
                intents = self.names(section["intents"], "intents")
        has_contract_end = declared.get("contract_end", FieldSpec("", "string")).kind == "date"
        fields = builtin_fields(intents, has_contract_end=has_contract_end)
        for field_name, spec in declared.items():
            if field_name in fields:
                self.problems.append(
                    Problem.at(
                        self.file, 0, 0, f"field {field_name!r} is built in; pick another name"
                    )
                )
            fields[field_name] = spec
        return fields, intents

    def _field(self, name: str, node: yaml.Node, source: str) -> FieldSpec | None:
        spec = self.mapping(node, f"field {name}", ("type", "values", "min", "max", "description"))
        kind = self.text(spec.get("type"), f"{name} type", "")
        if kind not in KINDS:
            self.error(
                spec.get("type", node),
                f"field {name}: type must be one of {', '.join(KINDS)}"
                + did_you_mean(kind, list(KINDS)),
            )
            return None
        values = self.names(spec.get("values"), f"{name} values")
        if kind == "enum" and not values:
            self.error(node, f"field {name}: an enum lists its values")
        low = self.number(spec.get("min"), f"{name} min", float("nan")) if "min" in spec else None
        high = self.number(spec.get("max"), f"{name} max", float("nan")) if "max" in spec else None
        return FieldSpec(
            name,
            kind,
            values,
            low,
            high,
            source=source,
            description=self.text(spec.get("description"), "description", ""),
        )

    def _offer(self, node: yaml.Node, fields: dict[str, FieldSpec]) -> OfferSpec | None:
        keys = (
            "id", "title", "category", "script", "value", "cost", "propensity", "lever",
            "channels", "when", "weights", "params", "description", "contact_policy",
            "daily_cap", "daily_cap_per_customer",
        )  # fmt: skip
        if not isinstance(node, yaml.MappingNode):
            self.error(node, "an offer must be a mapping (id, title, when, value, script, ...)")
            return None
        spec = self.mapping(node, "offer", keys)
        if "id" not in spec:
            self.error(node, "offer has no id")
            return None
        offer_id = self.text(spec["id"], "offer id")
        problem = id_problem(offer_id) if offer_id else None
        if problem is not None:
            # Outcomes name the offer, and RecordOutcome refuses ids outside this alphabet.
            self.error(spec["id"], f"offer id {offer_id!r}: {problem}")
        # An absent key means every channel; an explicit `channels: []` means none
        # (rules check warns about it), so it is not widened to all channels.
        channels = self.names(spec["channels"], "channels") if "channels" in spec else CHANNELS
        for ch_node, ch in zip(_items(spec.get("channels")), channels, strict=False):
            if ch not in CHANNELS:
                self.error(
                    ch_node,
                    f"offer {offer_id}: unknown channel {ch!r}{did_you_mean(ch, list(CHANNELS))}",
                )
        params: list[tuple[str, Condition]] = []
        for pname, pnode in self.mapping(spec.get("params") or _empty_map(), "params").items():
            if pname in fields:
                self.error(pnode, f"param {pname!r} hides the field of the same name")
            cond = self.expression(pnode, f"offer {offer_id} param {pname}", fields, want="number")
            if cond is not None:
                params.append((pname, cond))
        value_node = spec.get("value")
        value = (
            self.expression(value_node, f"offer {offer_id} value", fields, want="number")
            if value_node
            else None
        )
        if value_node is None:
            self.error(node, f"offer {offer_id} has no value")
        weights = []
        for wnode in self.sequence(spec.get("weights") or _empty(), "weights"):
            w = self.mapping(wnode, "weight", ("when", "factor"))
            conds = self.conditions(w.get("when"), f"offer {offer_id} weight", fields)
            factor = self.number(w.get("factor"), "weight factor", 1.0, 0, 1000)
            if "when" not in w or "factor" not in w:
                self.error(wnode, "a weight has `when` and `factor`")
            for cond in conds:
                weights.append(Weight(cond, factor))
        script = self._script(node, spec.get("script"), offer_id, fields, {p for p, _ in params})
        # Everything is checked before giving up, so one run reports every problem.
        cost = self.number(spec.get("cost"), "cost", 0.0, 0)
        propensity = self.number(spec.get("propensity"), "propensity", 0.1, 0, 1)
        lever = self.number(spec.get("lever"), "lever", 1.0, 0, 1000)
        when = self.conditions(spec.get("when"), f"offer {offer_id}", fields)
        daily_cap = (
            self.integer(spec["daily_cap"], "daily_cap", 0, 1, 1_000_000_000)
            if "daily_cap" in spec
            else None
        )
        per_customer = None
        if "daily_cap_per_customer" in spec:
            node_per = spec["daily_cap_per_customer"]
            per_customer = self.integer(
                node_per, "daily_cap_per_customer", 1, 1, daily_cap or 1_000_000_000
            )
            if daily_cap is None:
                self.error(node_per, f"offer {offer_id}: daily_cap_per_customer needs a daily_cap")
        elif daily_cap is not None:
            per_customer = 1  # the cap counts customers, unless the file says otherwise
        if "contact_policy" in spec:
            policy = self._contact_policy(
                spec["contact_policy"], f"{offer_id}/contact-policy", (offer_id,), ()
            )
            if policy is not None:
                self.offer_contact_policies.append(policy)
        if value is None or script is None:
            return None
        return OfferSpec(
            id=offer_id,
            title=self.text(spec.get("title"), "title", offer_id),
            category=self.text(spec.get("category"), "category", "general"),
            script=script,
            value=value,
            cost=cost,
            propensity=propensity,
            lever=lever,
            channels=channels,
            when=when,
            weights=tuple(weights),
            params=tuple(params),
            where=self.where(node),
            daily_cap=daily_cap,
            daily_cap_per_customer=per_customer if daily_cap is not None else None,
        )

    _POLICY_KEYS = ("suppress_after_decline_days", "max_declines", "max_presentations")

    def _contact_policy(
        self,
        node: yaml.Node,
        policy_id: str,
        offers: tuple[str, ...],
        categories: tuple[str, ...],
        extra_keys: tuple[str, ...] = (),
    ) -> ContactPolicy | None:
        spec = self.mapping(node, "contact policy", self._POLICY_KEYS + extra_keys)
        if not any(key in spec for key in self._POLICY_KEYS):
            self.error(
                node, f"contact policy {policy_id} sets none of {', '.join(self._POLICY_KEYS)}"
            )
            return None
        days = spec.get("suppress_after_decline_days")
        return ContactPolicy(
            id=policy_id,
            offers=offers,
            categories=categories,
            suppress_after_decline_days=(
                None
                if days is None
                else self.number(days, "suppress_after_decline_days", 0, 0, 3650)
            ),
            max_declines=self._limit(spec.get("max_declines"), "max_declines"),
            max_presentations=self._limit(spec.get("max_presentations"), "max_presentations"),
            where=self.where(node),
        )

    def _limit(self, node: yaml.Node | None, what: str) -> Limit | None:
        if node is None:
            return None
        spec = self.mapping(node, what, ("count", "within_days"))
        if "count" not in spec or "within_days" not in spec:
            self.error(
                node, f"{what} needs count and within_days, e.g. {{count: 2, within_days: 30}}"
            )
            return None
        return Limit(
            self.integer(spec["count"], f"{what} count", 1, 1, 1_000_000),
            self.number(spec["within_days"], f"{what} within_days", 1, 0.001, 3650),
        )

    def _script(
        self,
        offer: yaml.Node,
        node: yaml.Node | None,
        offer_id: str,
        fields: dict[str, FieldSpec],
        params: set[str],
    ) -> Template | None:
        if node is None:
            self.error(offer, f"offer {offer_id} has no script")
            return None
        raw = self.text(node, "script")
        try:
            template = parse_template(raw)
        except TemplateError as exc:
            self.error(node, f"offer {offer_id} script: {exc.message}")
            return None
        for ph in template.names:
            if ph.name not in fields and ph.name not in params:
                known = list(fields) + sorted(params)
                self.error(
                    node,
                    f"offer {offer_id} script: unknown placeholder {{{ph.name}}}"
                    + did_you_mean(ph.name, known),
                )
        return template

    def _route(self, node: yaml.Node, fields: dict[str, FieldSpec]) -> RouteSpec | None:
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
            self.error(node, "a routing rule must be a mapping (id, when, queue, ...)")
            return None
        spec = self.mapping(node, "routing rule", keys)
        for required in ("id", "when", "queue"):
            if required not in spec:
                self.error(node, f"routing rule has no {required}")
                return None
        rule_id = self.text(spec["id"], "routing rule id")
        return RouteSpec(
            id=rule_id,
            when=self.conditions(spec["when"], f"routing {rule_id}", fields),
            queue=self.text(spec["queue"], "queue"),
            priority=self.integer(spec.get("priority"), "priority", 5, 1, 10),
            reason=self.text(spec.get("reason"), "reason", rule_id),
            skip_ivr=self.boolean(spec.get("skip_ivr"), "skip_ivr"),
            precedence=self.integer(spec.get("precedence"), "precedence", 100, 0, 1_000_000),
            where=self.where(node),
        )

    def _default_route(self, node: yaml.Node) -> DefaultRoute:
        spec = self.mapping(node, "default route", ("queue", "priority", "reason"))
        if "queue" not in spec:
            self.error(node, "the default route has no queue")
        return DefaultRoute(
            queue=self.text(spec.get("queue"), "queue", "general"),
            priority=self.integer(spec.get("priority"), "priority", 5, 1, 10),
            reason=self.text(spec.get("reason"), "reason", "default route"),
            where=self.where(node),
        )

    def _learning(self, node: yaml.Node, fields: dict[str, FieldSpec]) -> Learning:
        keys = ("enabled", "prior_strength", "half_life_days", "by", "exploration")
        spec = self.mapping(node, "learning", keys)
        by = self.text(spec.get("by"), "learning by", "") or None
        if by is not None:
            field = fields.get(by)
            if field is None or field.kind != "enum" or field.source != "profile":
                self.error(spec["by"], f"learning by: {by!r} is not an enum profile field")
                by = None
        return Learning(
            enabled=self.boolean(spec.get("enabled"), "learning enabled")
            if "enabled" in spec
            else True,
            prior_strength=self.number(spec.get("prior_strength"), "prior_strength", 20, 1, 1e6),
            half_life_days=self.number(spec.get("half_life_days"), "half_life_days", 30, 0, 3650),
            by=by,
            exploration=self.number(spec.get("exploration"), "exploration", 0, 0, 1),
        )

    def _category_policy(self, node: yaml.Node, categories: set[str]) -> ContactPolicy | None:
        if not isinstance(node, yaml.MappingNode):
            self.error(node, "a contact policy is a mapping with an id and categories")
            return None
        spec = self.mapping(
            node, "contact policy", ("id", "categories", "description", *self._POLICY_KEYS)
        )
        if "id" not in spec or "categories" not in spec:
            self.error(node, "a contact policy has an id and categories")
            return None
        policy_id = self.text(spec["id"], "contact policy id")
        named = self.names(spec["categories"], "categories")
        for category in named:
            if category not in categories:
                self.error(
                    spec["categories"],
                    f"contact policy {policy_id}: no offer has category {category!r}"
                    + did_you_mean(category, sorted(categories)),
                )
        return self._contact_policy(
            node, policy_id, (), named, extra_keys=("id", "categories", "description")
        )

    def _policy(self, node: yaml.Node, fields: dict[str, FieldSpec]) -> PolicySpec | None:
        spec = self.mapping(node, "policy", ("id", "when", "first", "suppress", "description"))
        if "id" not in spec or "when" not in spec:
            self.error(node, "a policy has an id and a `when`")
            return None
        policy_id = self.text(spec["id"], "policy id")
        return PolicySpec(
            id=policy_id,
            when=self.conditions(spec["when"], f"policy {policy_id}", fields),
            first=self.names(spec.get("first"), "first"),
            suppress=self.names(spec.get("suppress"), "suppress"),
            where=self.where(node),
        )


def _empty() -> yaml.SequenceNode:
    return yaml.SequenceNode("tag:yaml.org,2002:seq", [])


def _empty_map() -> yaml.MappingNode:
    return yaml.MappingNode("tag:yaml.org,2002:map", [])


def _items(node: yaml.Node | None) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return [node] if node is not None else []
