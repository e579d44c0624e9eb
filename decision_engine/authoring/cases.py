"""Rule test cases: business users prove a rule change before it goes live.

Case files are YAML in `<rules>/tests/*.yaml`. Each case describes a customer, their
earlier contacts and the live interaction, and what the agent should see. Cases run
through the same `decide()` as the server, so a passing case is what production does.

    now: 2025-03-03T10:00:00Z          # the clock for every case (UTC); a case may set its own
    cases:
      - name: valuable customer who wants to cancel
        profile: {clv: 48000, churn_risk: 0.82, first_name: Alice}   # omit: unknown customer
        contacts: [{days_ago: 2, channel: chat, intent: billing_dispute}]
        context: {channel: voice, intent: cancel}
        expect:
          routing: {queue: retention_specialists, priority: 1}
          offers: {first: retention-loyalty-credit, categories_exclude: [upsell]}
          script_contains: {retention-loyalty-credit: "EUR 480"}
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import yaml
import yaml.constructor

from decision_engine.config import setting_option
from decision_engine.decide.engine import decide
from decision_engine.decide.model import (
    Contact,
    Context,
    CustomerState,
    Decision,
    Explanation,
    OfferEvent,
)
from decision_engine.errors import Problem, RulesetError, Where
from decision_engine.ruleset.compiled import CompiledRuleset, load_compiled
from decision_engine.ruleset.schema import FieldSpec
from decision_engine.ruleset.sections import MAX_OFFERS_LIMIT
from decision_engine.ruleset.typecheck import did_you_mean
from decision_engine.ruleset.yaml_nodes import YAML_LOADER
from decision_engine.store.importer import ID_FIELD, canonical_profile
from decision_engine.vocabulary import CHANNELS, OFFER_OUTCOMES

CASES_SUBDIR = "tests"
DEFAULT_ROUTE = "default"
"""The rule id a decision carries when no routing rule applied."""

_DAY = 86_400.0
_FILE_KEYS = ("now", "description", "cases")
_CASE_KEYS = (
    "name", "description", "now", "profile", "contacts", "history", "caps_spent", "context",
    "interaction_id", "max_offers", "degraded", "expect",
)  # fmt: skip
_HISTORY_KEYS = ("offer", "outcome", "days_ago", "at", "interaction_id")
_CONTACT_KEYS = ("days_ago", "at", "channel", "intent", "interaction_id")
_CONTEXT_KEYS = ("channel", "intent", "queue", "agent_id", "sentiment", "ivr_path", "attributes")
_EXPECT_KEYS = ("routing", "offers", "script_contains", "profile_found", "degraded")
_ROUTING_KEYS = ("queue", "priority", "skip_ivr", "rule")
_OFFERS_KEYS = ("include", "exclude", "first", "order", "count", "categories_exclude")
_KIND_LABELS = {
    "routing": "routing rule",
    "offer": "offer",
    "policy": "policy",
    "contact policy": "contact policy",
}

# -- what a case says ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoutingExpectation:
    """Expected routing; None means "not checked"."""

    queue: str | None = None
    priority: int | None = None
    skip_ivr: bool | None = None
    rule: str | None = None


@dataclass(frozen=True, slots=True)
class OffersExpectation:
    """Expected offers; empty or None means "not checked"."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    first: str | None = None
    order: tuple[str, ...] | None = None
    """The exact offer ids, in order."""
    count: int | None = None
    categories_exclude: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Expectation:
    """Everything a case checks about its decision."""

    routing: RoutingExpectation | None = None
    offers: OffersExpectation | None = None
    script_contains: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(offer id, texts its script must contain)."""
    profile_found: bool | None = None
    degraded: bool | None = None


@dataclass(frozen=True, slots=True)
class Case:
    """One test case, ready to hand to `decide`."""

    name: str
    where: Where
    now: float
    state: CustomerState
    context: Context
    interaction_id: str
    max_offers: int
    degraded: bool
    """The store is down: decide gets no state at all."""
    expect: Expectation
    caps_spent: frozenset[str] = frozenset()
    """Capped offers whose budget for the day is spent."""


# -- what running says ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Failure:
    """One expectation that did not hold."""

    what: str
    """Which expectation, e.g. "routing.queue"."""
    expected: str
    actual: str
    why: str = ""
    """What the explanation says about the rule the case expected."""

    def __str__(self) -> str:
        return f"{self.what}: expected {self.expected}, got {self.actual}"


@dataclass(frozen=True, slots=True)
class CaseResult:
    """A case that ran (failures) or could not run (problems in its file)."""

    name: str
    where: Where
    failures: tuple[Failure, ...] = ()
    problems: tuple[Problem, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failures and not self.problems

    @property
    def status(self) -> str:
        if self.problems:
            return "error"
        return "fail" if self.failures else "pass"


@dataclass(frozen=True, slots=True)
class Unexercised:
    """A rule that no case made apply."""

    kind: str
    """"offer", "routing" or "policy", as in explanations."""
    rule_id: str
    where: Where


@dataclass(frozen=True, slots=True)
class Coverage:
    """How many of the ruleset's rules the cases exercised."""

    total: int
    unexercised: tuple[Unexercised, ...]

    @property
    def exercised(self) -> int:
        return self.total - len(self.unexercised)

    @property
    def percent(self) -> float:
        return 100.0 * self.exercised / self.total if self.total else 100.0


@dataclass(frozen=True, slots=True)
class CaseReport:
    """The outcome of every case, and the rules none of them exercised."""

    ruleset_version: str
    ruleset_label: str
    cases_dir: Path
    results: tuple[CaseResult, ...]
    coverage: Coverage

    @property
    def passed(self) -> int:
        return sum(1 for r in self.results if r.passed)

    @property
    def failed(self) -> int:
        return len(self.results) - self.passed

    @property
    def ok(self) -> bool:
        return self.failed == 0


# -- running -------------------------------------------------------------------------------


def run_cases(rules_dir: Path, *, cases_dir: Path | None = None) -> CaseReport:
    """Run every case in `cases_dir` (default `<rules_dir>/tests`) against the ruleset.

    Raises RulesetError when the ruleset itself does not load; problems in case files
    are results, so one bad file does not hide the others.
    """
    ruleset = load_compiled(rules_dir)
    cases_dir = cases_dir if cases_dir is not None else rules_dir / CASES_SUBDIR
    results: list[CaseResult] = []
    decisions: list[Decision] = []
    files = case_files(cases_dir)
    if not files:
        # A rule change "proven" by no case at all must not look like a pass.
        message = f"no test cases: add .yaml case files to {cases_dir}"
        results.append(_unreadable(cases_dir, message))
    names: dict[str, Where] = {}
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            results.append(_unreadable(path, f"cannot read the case file: {exc}"))
            continue
        for item in _CaseFile(str(path), ruleset, names).read(text):
            if isinstance(item, CaseResult):
                results.append(item)
                continue
            decision = decide(
                ruleset,
                state=None if item.degraded else item.state,
                context=item.context,
                now=item.now,
                decision_id=f"test:{item.where.file}:{item.where.line}",
                interaction_id=item.interaction_id,
                max_offers=item.max_offers,
                explain=True,
                degraded=item.degraded,
                exhausted=item.caps_spent,
            )
            decisions.append(decision)
            failures = tuple(_check(item.expect, decision, ruleset))
            results.append(CaseResult(item.name, item.where, failures))
    return CaseReport(
        ruleset_version=ruleset.version,
        ruleset_label=ruleset.source.label,
        cases_dir=cases_dir,
        results=tuple(results),
        coverage=_coverage(ruleset, decisions),
    )


def _unreadable(path: Path, message: str) -> CaseResult:
    return CaseResult(
        path.name, Where(str(path), 0, 0), problems=(Problem.at(str(path), 0, 0, message),)
    )


def case_files(directory: Path) -> list[Path]:
    """The case files of a directory, in name order (hidden files are skipped)."""
    if not directory.is_dir():
        return []
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and p.suffix in (".yaml", ".yml") and not p.name.startswith(".")
    )


def _coverage(ruleset: CompiledRuleset, decisions: list[Decision]) -> Coverage:
    """Exercised: applied (eligible, for an offer) in at least one case's explanation."""
    hit = {(e.kind, e.rule_id) for d in decisions for e in d.explanations if e.matched}
    # The default route has no explanation of its own; being routed to it exercises it.
    if any(d.routing.rule_id == DEFAULT_ROUTE for d in decisions):
        hit.add(("routing", DEFAULT_ROUTE))
    # A contact policy (or cap) is exercised when it kept a candidate offer out.
    hit |= {("contact policy", policy_id) for d in decisions for policy_id in d.suppressed_by}
    source = ruleset.source
    every = [("routing", DEFAULT_ROUTE, source.default_route.where)]
    # Routes are held in precedence order; list them as they read in the files.
    routes = sorted(source.routes, key=lambda r: (r.where.file, r.where.line))
    every += [("routing", r.id, r.where) for r in routes]
    every += [("offer", o.id, o.where) for o in source.offers]
    every += [("policy", p.id, p.where) for p in source.policies]
    every += [("contact policy", p.id, p.where) for p in source.contact_policies]
    missed = tuple(Unexercised(k, i, w) for k, i, w in every if (k, i) not in hit)
    return Coverage(len(every), missed)


# -- checking a decision against a case -----------------------------------------------------


def _check(expect: Expectation, decision: Decision, ruleset: CompiledRuleset) -> Iterator[Failure]:
    explained = {(e.kind, e.rule_id): e for e in decision.explanations}
    if expect.routing is not None:
        yield from _check_routing(expect.routing, decision, ruleset, explained)
    if expect.offers is not None:
        yield from _check_offers(expect.offers, decision, explained)
    ids = [o.offer_id for o in decision.offers]
    for offer_id, texts in expect.script_contains:
        offer = next((o for o in decision.offers if o.offer_id == offer_id), None)
        what = f"script_contains.{offer_id}"
        if offer is None:
            why = _offer_why(offer_id, decision, explained)
            for text in texts:
                yield Failure(what, _quote(text), f"no {offer_id} offer in {_list(ids)}", why)
            continue
        for text in texts:
            if text not in offer.script:
                yield Failure(what, _quote(text), _quote(offer.script))
    if expect.profile_found is not None and expect.profile_found != decision.profile_found:
        yield Failure("profile_found", _yes(expect.profile_found), _yes(decision.profile_found))
    if expect.degraded is not None and expect.degraded != decision.degraded:
        yield Failure("degraded", _yes(expect.degraded), _yes(decision.degraded))


def _check_routing(
    expect: RoutingExpectation,
    decision: Decision,
    ruleset: CompiledRuleset,
    explained: dict[tuple[str, str], Explanation],
) -> Iterator[Failure]:
    routing = decision.routing
    chosen = f"routed by {routing.rule_id}: {routing.reason}"
    if expect.queue is not None and expect.queue != routing.queue:
        candidates = [r.id for r in ruleset.routes if r.queue == expect.queue]
        if ruleset.source.default_route.queue == expect.queue:
            candidates.append(DEFAULT_ROUTE)
        why = "; ".join(_route_why(c, explained) for c in candidates) or chosen
        yield Failure("routing.queue", expect.queue, routing.queue, why)
    if expect.priority is not None and expect.priority != routing.priority:
        yield Failure("routing.priority", str(expect.priority), str(routing.priority), chosen)
    if expect.skip_ivr is not None and expect.skip_ivr != routing.skip_ivr:
        yield Failure("routing.skip_ivr", _yes(expect.skip_ivr), _yes(routing.skip_ivr), chosen)
    if expect.rule is not None and expect.rule != routing.rule_id:
        why = _route_why(expect.rule, explained) if expect.rule != DEFAULT_ROUTE else chosen
        yield Failure("routing.rule", expect.rule, routing.rule_id, why)


def _route_why(rule_id: str, explained: dict[tuple[str, str], Explanation]) -> str:
    if rule_id == DEFAULT_ROUTE:
        return "default: a routing rule applied"
    e = explained.get(("routing", rule_id))
    return f"{rule_id}: {e.detail}" if e is not None else ""


def _check_offers(
    expect: OffersExpectation,
    decision: Decision,
    explained: dict[tuple[str, str], Explanation],
) -> Iterator[Failure]:
    ids = [o.offer_id for o in decision.offers]
    got = _list(ids)
    missing = [i for i in expect.include if i not in ids]
    if missing:
        why = "; ".join(_offer_why(i, decision, explained) for i in missing)
        yield Failure("offers.include", f"{', '.join(missing)} among the offers", got, why)
    present = [i for i in expect.exclude if i in ids]
    if present:
        yield Failure("offers.exclude", f"no {', '.join(present)}", got)
    if expect.first is not None and (not ids or ids[0] != expect.first):
        why = _offer_why(expect.first, decision, explained)
        yield Failure("offers.first", expect.first, ids[0] if ids else "no offers", why)
    if expect.order is not None and tuple(ids) != expect.order:
        yield Failure("offers.order", _list(expect.order), got)
    if expect.count is not None and expect.count != len(ids):
        yield Failure("offers.count", str(expect.count), f"{len(ids)} {got}")
    banned = set(expect.categories_exclude)
    offending = [f"{o.offer_id} ({o.category})" for o in decision.offers if o.category in banned]
    if offending:
        cats = ", ".join(c for c in expect.categories_exclude if c in banned)
        yield Failure("offers.categories_exclude", f"no {cats} offers", _list(offending))


def _offer_why(
    offer_id: str, decision: Decision, explained: dict[tuple[str, str], Explanation]
) -> str:
    e = explained.get(("offer", offer_id))
    if e is None:
        return ""
    if not e.matched:
        return f"{offer_id}: {e.detail}"
    position = next((n for n, o in enumerate(decision.offers, 1) if o.offer_id == offer_id), 0)
    if position:
        return f"{offer_id}: offer #{position}, {e.detail}"
    return f"{offer_id}: eligible ({e.detail}) but not in the top {len(decision.offers)}"


def _list(items: Collection[str]) -> str:
    return "[" + ", ".join(items) + "]"


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _yes(value: bool) -> str:
    return "true" if value else "false"


# -- reading case files ---------------------------------------------------------------------


class _CaseFile:
    """Reads one case file from YAML nodes, which keep line and column for every problem.

    Readers take the node of an optional key (None when the key is absent) and return
    None both when it is absent and when it is wrong; a wrong value is also a problem.
    """

    def __init__(self, file: str, ruleset: CompiledRuleset, names: dict[str, Where]) -> None:
        self.file = file
        self.names = names
        """Case names seen so far in any file: a name identifies a case in reports."""
        self.problems: list[Problem] = []
        self.constructor = yaml.constructor.SafeConstructor()
        fields = ruleset.source.fields
        self.profile_fields = {n: s for n, s in fields.items() if s.source == "profile"}
        self.attribute_fields = {n: s for n, s in fields.items() if s.source == "attribute"}
        intent = fields.get("intent")
        self.intents = intent.values if intent is not None and intent.kind == "enum" else ()
        # Names in expectations are checked against the ruleset: a misspelt id in
        # `exclude` would otherwise pass for ever without testing anything.
        self.offer_ids = [o.spec.id for o in ruleset.offers]
        self.categories = sorted({o.spec.category for o in ruleset.offers})
        self.route_ids = [DEFAULT_ROUTE, *(r.id for r in ruleset.routes)]
        source = ruleset.source
        self.queues = sorted({source.default_route.queue, *(r.queue for r in source.routes)})

    def read(self, text: str) -> Iterator[Case | CaseResult]:
        """Each case, or a CaseResult carrying the problems that keep it from running."""
        try:
            root = yaml.compose(text, Loader=YAML_LOADER)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
            self.problems.append(Problem.at(self.file, line, col, f"YAML syntax: {exc.problem}"))
            yield self.file_error()
            return
        if root is None:
            self.error(None, "the file is empty; it needs `now:` and `cases:`")
            yield self.file_error()
            return
        top = self.mapping(root, "a case file", _FILE_KEYS) or {}
        now = self.moment(top.get("now"), "now")
        items = self.sequence(top["cases"], "cases") if "cases" in top else []
        if "cases" not in top:
            self.error(root, "a case file has a `cases:` list")
        elif not items and not self.problems:
            self.error(top["cases"], "`cases:` is empty")
        if self.problems:
            # Without a readable top level no case can run; report the file once.
            yield self.file_error()
            return
        for node in items:
            start = len(self.problems)
            case = self.case(node, now)
            problems = tuple(sorted(self.problems[start:], key=lambda p: (p.line, p.column)))
            if case is not None and not problems:
                yield case
            else:
                yield CaseResult(self.case_name(node), self.where(node), problems=problems)

    # -- locating and reporting ------------------------------------------------------

    def file_error(self) -> CaseResult:
        """The whole file as one result, named after it, at its first problem."""
        first = min(self.problems, key=lambda p: (p.line, p.column))
        where = Where(self.file, first.line, first.column)
        return CaseResult(Path(self.file).name, where, problems=tuple(self.problems))

    def where(self, node: yaml.Node) -> Where:
        return Where(self.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def error(self, node: yaml.Node | None, message: str) -> None:
        w = self.where(node) if node is not None else Where(self.file, 0, 0)
        self.problems.append(Problem(w, message))

    def required(self, spec: dict[str, yaml.Node], key: str, node: yaml.Node, what: str) -> None:
        if key not in spec:
            self.error(node, f"{what} has no `{key}`")

    # -- shapes and scalars ----------------------------------------------------------

    def mapping(
        self, node: yaml.Node | None, what: str, allowed: tuple[str, ...] | None = None
    ) -> dict[str, yaml.Node] | None:
        if node is None:
            return None
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f"{what} must be a mapping")
            return None
        out: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in out:
                self.error(key_node, f"duplicate key {key!r} in {what}")
            elif allowed is not None and key not in allowed:
                hint = did_you_mean(key, list(allowed)) or f" (known: {', '.join(allowed)})"
                self.error(key_node, f"unknown key {key!r} in {what}{hint}")
            else:
                out[key] = value_node
        return out

    def sequence(self, node: yaml.Node | None, what: str) -> list[yaml.Node]:
        if node is None:
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, f"{what} must be a list")
            return []
        return list(node.value)

    def value(self, node: yaml.Node) -> Any:
        """A scalar as YAML types it (number, bool, date, text or None); None otherwise."""
        if not isinstance(node, yaml.ScalarNode):
            return None
        return self.constructor.construct_object(node)

    def text(self, node: yaml.Node | None, what: str) -> str | None:
        if node is None:
            return None
        if not isinstance(node, yaml.ScalarNode) or self.value(node) is None:
            self.error(node, f"{what} must be a single value")
            return None
        # The text as written: `queue: 007` stays "007", not 7.
        return str(node.value)

    def number(self, node: yaml.Node | None, what: str, low: float, high: float) -> float | None:
        if node is None:
            return None
        value = self.value(node)
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            self.error(node, f"{what} must be a number")
            return None
        if not low <= value <= high:
            self.error(node, f"{what} must be between {low:g} and {high:g}, got {value:g}")
            return None
        return float(value)

    def integer(self, node: yaml.Node | None, what: str, low: int, high: int) -> int | None:
        value = self.number(node, what, low, high)
        if node is not None and value is not None and not value.is_integer():
            self.error(node, f"{what} must be a whole number")
            return None
        return None if value is None else int(value)

    def boolean(self, node: yaml.Node | None, what: str) -> bool | None:
        if node is None:
            return None
        value = self.value(node)
        if not isinstance(value, bool):
            self.error(node, f"{what} must be true or false")
            return None
        return value

    def moment(self, node: yaml.Node | None, what: str) -> float | None:
        """An ISO datetime or date, UTC unless it says otherwise, as epoch seconds."""
        raw = self.text(node, what)
        if node is None or raw is None:
            return None
        try:
            moment = datetime.fromisoformat(raw.strip())
        except ValueError:
            self.error(node, f"{what}: {raw!r} is not an ISO date or datetime (UTC)")
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()

    def choice(self, node: yaml.Node | None, what: str, known: Collection[str]) -> str | None:
        """A name that must be one of `known` (any name when `known` is empty)."""
        name = self.text(node, what)
        if node is not None and name is not None and known and name not in known:
            hint = did_you_mean(name, list(known)) or f" (known: {', '.join(known)})"
            self.error(node, f"{what}: unknown {name!r}{hint}")
            return None
        return name

    def choices(
        self, node: yaml.Node | None, what: str, known: Collection[str]
    ) -> tuple[str, ...] | None:
        """One name or a list of names; None when the key is absent."""
        if node is None:
            return None
        items = [node] if isinstance(node, yaml.ScalarNode) else self.sequence(node, what)
        return tuple(n for item in items if (n := self.choice(item, what, known)) is not None)

    def typed(self, node: yaml.Node, where: str, spec: FieldSpec) -> str | None:
        """A schema-declared value in the canonical text the store would hold."""
        if not isinstance(node, yaml.ScalarNode):
            self.error(node, f"{where}: {spec.name} must be a single value")
            return None
        try:
            # The importer's own canonicalisation: a case sees exactly what an import stores.
            record = {ID_FIELD: "case", spec.name: self.value(node)}
            _, fields = canonical_profile(record, {spec.name: spec})
        except ValueError as exc:
            # The schema's message names the field already.
            self.error(node, f"{where}: {exc}")
            return None
        return fields.get(spec.name)

    # -- a case ----------------------------------------------------------------------

    def case_name(self, node: yaml.Node) -> str:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == "name" and isinstance(value, yaml.ScalarNode) and value.value:
                    return str(value.value)
        return f"case at line {node.start_mark.line + 1}"

    def case(self, node: yaml.Node, file_now: float | None) -> Case | None:
        spec = self.mapping(node, "a case", _CASE_KEYS)
        if spec is None:
            return None
        for key in ("name", "context", "expect"):
            self.required(spec, key, node, "a case")
        name = self.text(spec.get("name"), "name")
        if name is not None and name in self.names:
            self.error(spec["name"], f"duplicate case name {name!r} (first at {self.names[name]})")
        elif name is not None:
            self.names[name] = self.where(node)
        now = self.moment(spec["now"], "now") if "now" in spec else file_now
        if "now" not in spec and file_now is None:
            self.error(node, "no `now`: set it at the top of the file or in the case")
        degraded = self.boolean(spec.get("degraded"), "degraded") is True
        if degraded and ("profile" in spec or "contacts" in spec):
            self.error(node, "a degraded case has no profile or contacts: the store is down")
        profile = self.profile(spec["profile"]) if "profile" in spec else None
        contacts = self.contacts(spec.get("contacts"), now) if now is not None else ()
        history = self.history(spec.get("history"), now) if now is not None else {}
        caps_spent = self.choices(spec.get("caps_spent"), "caps_spent", self.offer_ids) or ()
        context = self.context(spec["context"]) if "context" in spec else None
        interaction_id = self.text(spec.get("interaction_id"), "interaction_id") or ""
        max_offers = self.integer(spec.get("max_offers"), "max_offers", 1, MAX_OFFERS_LIMIT)
        expect = self.expect(spec["expect"]) if "expect" in spec else None
        if name is None or now is None or context is None or expect is None:
            return None
        return Case(
            name=name,
            where=self.where(node),
            now=now,
            state=CustomerState(profile, contacts, history),
            context=context,
            interaction_id=interaction_id,
            max_offers=max_offers or 0,
            degraded=degraded,
            expect=expect,
            caps_spent=frozenset(caps_spent),
        )

    def history(self, node: yaml.Node | None, now: float) -> dict[str, tuple[OfferEvent, ...]]:
        """Earlier outcomes of offers: `{offer, outcome, days_ago | at, interaction_id}`."""
        out: dict[str, list[OfferEvent]] = {}
        for item in self.sequence(node, "history"):
            spec = self.mapping(item, "a history event", _HISTORY_KEYS)
            if spec is None:
                continue
            self.required(spec, "offer", item, "a history event")
            self.required(spec, "outcome", item, "a history event")
            if ("days_ago" in spec) == ("at" in spec):
                self.error(item, "a history event has either `days_ago` or `at`")
            days = self.number(spec.get("days_ago"), "days_ago", 0, 3650)
            at = self.moment(spec.get("at"), "at") if days is None else now - days * _DAY
            offer = self.choice(spec.get("offer"), "offer", self.offer_ids)
            outcome = self.choice(spec.get("outcome"), "outcome", OFFER_OUTCOMES)
            interaction_id = self.text(spec.get("interaction_id"), "interaction_id") or ""
            if at is not None and offer is not None and outcome is not None:
                out.setdefault(offer, []).append(OfferEvent(at, outcome, interaction_id))
        return {offer: tuple(sorted(events, key=lambda e: e.at)) for offer, events in out.items()}

    def profile(self, node: yaml.Node) -> dict[str, str] | None:
        """None (unknown customer) for `profile: null`; else the stored text of each field."""
        if isinstance(node, yaml.ScalarNode) and self.value(node) is None:
            return None
        out: dict[str, str] = {}
        for key, value_node in (self.mapping(node, "profile") or {}).items():
            field_spec = self.profile_fields.get(key)
            if field_spec is None:
                # The import would keep it, but no rule can read it: most likely a typo.
                hint = did_you_mean(key, list(self.profile_fields))
                self.error(value_node, f"profile: {key!r} is not a profile field{hint}")
            elif (text := self.typed(value_node, "profile", field_spec)) is not None:
                out[key] = text
        return out

    def contacts(self, node: yaml.Node | None, now: float) -> tuple[Contact, ...]:
        out: list[Contact] = []
        for n, item in enumerate(self.sequence(node, "contacts"), start=1):
            spec = self.mapping(item, "a contact", _CONTACT_KEYS)
            if spec is None:
                continue
            self.required(spec, "channel", item, "a contact")
            if ("days_ago" in spec) == ("at" in spec):
                self.error(item, "a contact has either `days_ago` or `at`")
            days = self.number(spec.get("days_ago"), "days_ago", 0, 3650)
            at = self.moment(spec.get("at"), "at") if days is None else now - days * _DAY
            channel = self.choice(spec.get("channel"), "channel", CHANNELS)
            intent = self.choice(spec.get("intent"), "intent", self.intents) or ""
            contact_id = self.text(spec.get("interaction_id"), "interaction_id")
            if at is not None and channel is not None:
                out.append(Contact(contact_id or f"case-contact-{n}", channel, intent, at))
        return tuple(out)

    def context(self, node: yaml.Node) -> Context | None:
        spec = self.mapping(node, "context", _CONTEXT_KEYS)
        if spec is None:
            return None
        self.required(spec, "channel", node, "context")
        channel = self.choice(spec.get("channel"), "channel", CHANNELS)
        attributes: dict[str, str] = {}
        for key, value_node in (self.mapping(spec.get("attributes"), "attributes") or {}).items():
            attr = self.attribute_fields.get(key)
            if attr is None:
                # The server would pass it on, but no rule can read it: most likely a typo.
                hint = did_you_mean(key, list(self.attribute_fields))
                self.error(value_node, f"attributes: {key!r} is not a declared attribute{hint}")
            elif (text := self.typed(value_node, "attributes", attr)) is not None:
                attributes[key] = text
        # Every key is read before giving up, so one run reports all of its problems.
        context = Context(
            channel=channel or "",
            intent=self.choice(spec.get("intent"), "intent", self.intents) or "",
            queue=self.text(spec.get("queue"), "queue") or "",
            agent_id=self.text(spec.get("agent_id"), "agent_id") or "",
            sentiment=self.number(spec.get("sentiment"), "sentiment", -1, 1),
            ivr_path=self.text(spec.get("ivr_path"), "ivr_path") or "",
            attributes=attributes,
        )
        return context if channel is not None else None

    def expect(self, node: yaml.Node) -> Expectation | None:
        spec = self.mapping(node, "expect", _EXPECT_KEYS)
        if spec is None:
            return None
        if isinstance(node, yaml.MappingNode) and not node.value:
            self.error(node, "expect says nothing: add routing, offers, script_contains, ...")
            return None
        scripts: list[tuple[str, tuple[str, ...]]] = []
        for key, value in (
            self.mapping(spec.get("script_contains"), "script_contains") or {}
        ).items():
            if key not in self.offer_ids:
                hint = did_you_mean(key, self.offer_ids)
                self.error(value, f"script_contains: unknown offer {key!r}{hint}")
                continue
            items = [value] if isinstance(value, yaml.ScalarNode) else self.sequence(value, key)
            scripts.append((key, tuple(t for i in items if (t := self.text(i, key)) is not None)))
        return Expectation(
            routing=self.routing(spec.get("routing")),
            offers=self.offers(spec.get("offers")),
            script_contains=tuple(scripts),
            profile_found=self.boolean(spec.get("profile_found"), "profile_found"),
            degraded=self.boolean(spec.get("degraded"), "degraded"),
        )

    def routing(self, node: yaml.Node | None) -> RoutingExpectation | None:
        spec = self.mapping(node, "expect routing", _ROUTING_KEYS)
        if spec is None:
            return None
        return RoutingExpectation(
            queue=self.choice(spec.get("queue"), "routing queue", self.queues),
            priority=self.integer(spec.get("priority"), "routing priority", 1, 10),
            skip_ivr=self.boolean(spec.get("skip_ivr"), "skip_ivr"),
            rule=self.choice(spec.get("rule"), "routing rule", self.route_ids),
        )

    def offers(self, node: yaml.Node | None) -> OffersExpectation | None:
        spec = self.mapping(node, "expect offers", _OFFERS_KEYS)
        if spec is None:
            return None

        def ids(key: str) -> tuple[str, ...] | None:
            return self.choices(spec.get(key), f"offers {key}", self.offer_ids)

        categories = self.choices(
            spec.get("categories_exclude"), "categories_exclude", self.categories
        )
        return OffersExpectation(
            include=ids("include") or (),
            exclude=ids("exclude") or (),
            first=self.choice(spec.get("first"), "offers first", self.offer_ids),
            order=ids("order"),
            count=self.integer(spec.get("count"), "offers count", 0, MAX_OFFERS_LIMIT),
            categories_exclude=categories or (),
        )


# -- reporting ------------------------------------------------------------------------------


def format_text(report: CaseReport, *, coverage: bool = False) -> str:
    """Test-runner style: one line per case, readable diffs, the summary on the last line."""
    label = f" ({report.ruleset_label})" if report.ruleset_label else ""
    lines = [f"ruleset {report.ruleset_version}{label}: cases in {report.cases_dir}"]
    for result in report.results:
        lines.append(f"{result.status.upper()} {result.name} ({_at(result.where)})")
        for problem in result.problems:
            lines.append(f"  {problem}" if problem.line else f"  {problem.file}: {problem.message}")
        for failure in result.failures:
            lines.append(f"  {failure}")
            if failure.why:
                lines.append(f"    why: {failure.why}")
    if coverage:
        cov = report.coverage
        lines.append("")
        lines.append(
            f"coverage: {cov.exercised} of {cov.total} rules exercised ({math.floor(cov.percent)}%)"
        )
        if cov.unexercised:
            lines.append("  not exercised by any case:")
        for item in cov.unexercised:
            label = "default route" if item.rule_id == DEFAULT_ROUTE else _KIND_LABELS[item.kind]
            lines.append(f"    {label} {item.rule_id} ({_at(item.where)})")
    lines.append(f"{report.passed} passed, {report.failed} failed")
    return "\n".join(lines)


def _at(where: Where) -> str:
    """file:line, or the file alone for a problem with the whole file."""
    return f"{where.file}:{where.line}" if where.line else where.file


def report_dict(report: CaseReport) -> dict[str, Any]:
    """The report as plain data (for --format json)."""
    cov = report.coverage
    return {
        "ruleset_version": report.ruleset_version,
        "ruleset_label": report.ruleset_label,
        "cases_dir": str(report.cases_dir),
        "passed": report.passed,
        "failed": report.failed,
        "cases": [
            {
                "name": r.name,
                "file": r.where.file,
                "line": r.where.line,
                "status": r.status,
                "failures": [
                    {"what": f.what, "expected": f.expected, "actual": f.actual, "why": f.why}
                    for f in r.failures
                ],
                "problems": [_problem_dict(p) for p in r.problems],
            }
            for r in report.results
        ],
        "coverage": {
            "total": cov.total,
            "exercised": cov.exercised,
            "percent": round(cov.percent, 1),
            "unexercised": [
                {"kind": u.kind, "id": u.rule_id, "file": u.where.file, "line": u.where.line}
                for u in cov.unexercised
            ],
        },
    }


def _problem_dict(problem: Problem) -> dict[str, Any]:
    return {
        "file": problem.file,
        "line": problem.line,
        "column": problem.column,
        "message": problem.message,
    }


@click.command(name="test")
@click.argument(
    "directory",
    type=click.Path(path_type=Path),
    default=Path("rules"),
    envvar=setting_option("rules_dir").env,
)
@click.option(
    "--cases",
    "cases_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Directory of case files [default: DIRECTORY/tests].",
)
@click.option("--coverage", is_flag=True, help="List the rules that no case exercised.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
)
def test_command(directory: Path, cases_dir: Path | None, coverage: bool, fmt: str) -> None:
    """Run the rule test cases; exit 1 when one fails, 2 when the ruleset does not load."""
    try:
        report = run_cases(directory, cases_dir=cases_dir)
    except RulesetError as exc:
        if fmt == "json":
            problems = [_problem_dict(p) for p in exc.problems]
            click.echo(json.dumps({"ruleset_problems": problems}, indent=2))
        else:
            for problem in exc.problems:
                click.echo(str(problem), err=True)
            click.echo(f"{len(exc.problems)} problem(s); this ruleset cannot go live", err=True)
        raise SystemExit(2) from None
    if fmt == "json":
        click.echo(json.dumps(report_dict(report), indent=2, ensure_ascii=False))
    else:
        click.echo(format_text(report, coverage=coverage))
    raise SystemExit(0 if report.ok else 1)
