"""Moments → durable_rules ruleset definitions (plain JSON-able dicts), built once.

Every interaction event enters durable_rules as a *fact* (an event would be consumed by
the first rule it completes, and several moments may need the same utterance), flat:

    {"sid": <slot>, "id": <ring id>, "kind": "sentiment", "seq": 17, "t": <event time>,
     "value": -0.4, "speaker": "customer", "says": ["w0"]}

`seq` is the engine's own processing order and `t` the interaction's clock; durable_rules'
`all` does not order what it joins, so every later step says so explicitly
(`seq > previous.seq`) and states its window (`t < earlier.t + within`):

    event     m: [e0]
    count N   m: [e0, e1, g1$not, ..., e(N-1), g(N-1)$not]; e(i) after e(i-1) and less
              than `within` after e0; g(i): no matching event between e(i-1) and e(i),
              so each new event completes one join (its N-1 predecessors), not C(k, N)
    sequence  m: [e0, ..., ek]; e(i) after e(i-1), less than its `within` after it
    absence   a: [a]                       (records the anchor: the engine schedules its
                                            deadline in event time)
              m: [a, d, n$not]; d is the deadline fact the engine asserts when the time
              has come (and retracts at once); n: a `missing` event after the anchor and
              less than `within` after it

Only the fields some step tests are carried into a fact, and only events of the kinds some
step waits for enter durable_rules at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from decision_engine.moments.conditions import Test, conjuncts, durable_test
from decision_engine.moments.phrases import PhraseSet, phrase_sets
from decision_engine.ruleset.expr import Call, Compare, Field, Logic, Member, Node, Not
from decision_engine.ruleset.spec import ABSENCE, COUNT, EVENT, SEQUENCE, MomentSpec, Step

DEADLINE = "$deadline"
"""The kind of the facts that tell an absence moment its deadline has passed."""
OPEN = "$session"
"""The kind of the fact that opens every session (host.py says why)."""
DETECT, ANCHOR = "detect", "anchor"

Record = Callable[[int, dict[str, Any]], None]
"""What an action does: note (rule index, the matched facts by alias) and return."""


@dataclass(frozen=True, slots=True)
class StepPlan:
    """One element of a rule's `all`: an alias and the test of the fact it binds."""

    alias: str
    kind: str
    test: Test
    negated: bool = False


@dataclass(frozen=True, slots=True)
class RulePlan:
    """One durable_rules rule: a moment's detection, or an absence moment's anchor."""

    name: str
    moment: int
    """Index of the moment in the ruleset's moments."""
    role: str
    """DETECT or ANCHOR."""
    steps: tuple[StepPlan, ...]

    @property
    def aliases(self) -> tuple[str, ...]:
        """The aliases bound to interaction events, in the pattern's order."""
        return tuple(s.alias for s in self.steps if not s.negated and s.kind != DEADLINE)


@dataclass(frozen=True, slots=True)
class MomentProgram:
    """Everything the engine feeds durable_rules with, compiled from the moments."""

    moments: tuple[MomentSpec, ...]
    rules: tuple[RulePlan, ...]
    phrase_sets: tuple[PhraseSet, ...]
    step_tags: Mapping[tuple[str, ...], str]
    """A `says` list → its tag."""
    carried: Mapping[str, tuple[str, ...]]
    """Event kind → the data fields its facts carry (those some step tests)."""
    horizon: float
    """Seconds a fact may still take part in a match after its event (the longest span)."""

    def definition(self, record: Record) -> dict[str, dict[str, Any]]:
        """A fresh ruleset definition (durable_rules deletes `run` from what it is given)."""
        rules = {
            rule.name: {"all": [_element(s) for s in rule.steps], "run": _action(index, record)}
            for index, rule in enumerate(self.rules)
        }
        rules["open"] = {"all": [{"m": {"kind": OPEN}}], "run": _opened}
        return rules


def compile_moments(moments: tuple[MomentSpec, ...]) -> MomentProgram:
    """The durable_rules rules, phrase tags and fact shapes of a ruleset's moments."""
    sets = phrase_sets(step.says for m in moments for step in m.pattern.steps)
    tags = {phrases: s.tag for phrases, s in sets.items()}
    rules: list[RulePlan] = []
    carried: dict[str, set[str]] = {}
    for index, spec in enumerate(moments):
        for step in spec.pattern.steps:
            fields = carried.setdefault(step.kind, set())
            if step.where is not None:
                fields |= _fields(step.where.node)
        rules.extend(_rules(index, spec, tags))
    return MomentProgram(
        moments=moments,
        rules=tuple(rules),
        phrase_sets=tuple(sets.values()),
        step_tags=tags,
        carried={kind: tuple(sorted(names)) for kind, names in carried.items()},
        horizon=max((m.pattern.span for m in moments), default=0.0),
    )


def detect_rule(moment: int) -> str:
    """The name of the rule that detects a moment (its index in the ruleset's moments)."""
    return f"m{moment}"


def _rules(index: int, spec: MomentSpec, tags: Mapping[tuple[str, ...], str]) -> list[RulePlan]:
    pattern = spec.pattern
    name = detect_rule(index)

    def test(step: Step, *extra: Test) -> Test:
        return step_test(step, tags, *extra)

    if pattern.shape == EVENT:
        return [
            RulePlan(
                name,
                index,
                DETECT,
                (StepPlan("e0", pattern.steps[0].kind, test(pattern.steps[0])),),
            )
        ]
    if pattern.shape == COUNT:
        step = pattern.steps[0]
        plans = [StepPlan("e0", step.kind, test(step))]
        for i in range(1, pattern.count):
            before = f"e{i - 1}"
            plans.append(
                StepPlan(
                    f"e{i}", step.kind, test(step, _after(before), _within("e0", pattern.within))
                )
            )
            plans.append(
                StepPlan(
                    f"g{i}", step.kind, test(step, _after(before), _before(f"e{i}")), negated=True
                )
            )
        return [RulePlan(name, index, DETECT, tuple(plans))]
    if pattern.shape == SEQUENCE:
        plans = [StepPlan("e0", pattern.steps[0].kind, test(pattern.steps[0]))]
        for i, step in enumerate(pattern.steps[1:], start=1):
            before = f"e{i - 1}"
            assert step.within is not None
            plans.append(
                StepPlan(
                    f"e{i}", step.kind, test(step, _after(before), _within(before, step.within))
                )
            )
        return [RulePlan(name, index, DETECT, tuple(plans))]
    assert pattern.shape == ABSENCE
    anchor, missing = pattern.steps
    anchor_plan = StepPlan("a", anchor.kind, test(anchor))
    anchor_ref: Test = {"anchor": {"a": "seq"}}
    deadline = StepPlan(
        "d",
        DEADLINE,
        {"$and": [{"kind": DEADLINE}, {"rule": name}, anchor_ref, _implied(anchor_ref)]},
    )
    absent = StepPlan(
        "n", missing.kind, test(missing, _after("a"), _within("a", pattern.within)), negated=True
    )
    return [
        RulePlan(f"a{index}", index, ANCHOR, (anchor_plan,)),
        RulePlan(name, index, DETECT, (anchor_plan, deadline, absent)),
    ]


def step_test(step: Step, tags: Mapping[tuple[str, ...], str], *references: Test) -> Test:
    """One flat `$and` chain for a step, in an order durable_rules evaluates correctly.

    durable_rules checks a step's references to earlier facts (`seq > e0.seq`) as a
    sequence of expressions, with two bugs in 2.0.28 (events.c, reduceExpressionSequence;
    found with an AddressSanitizer build): a nested `and`/`or` group ends the sequence
    early (every reference after it goes unchecked), and when the last expression of a
    group fails, the scan for the group's end runs past it, through memory it does not
    own (a crash, depending on what lies there). So the chain is:

        kind, the step's plain tests, its `says` tag,     (alpha tests only)
        the references, one reference implied by the first (never false when reached),
        the step's `or` groups                             (literal tests: no expressions)
    """
    parts: list[Test] = [{"kind": step.kind}]
    groups: list[Test] = []
    if step.where is not None:
        for part in conjuncts(durable_test(step.where.node)):
            (groups if {"$or", "$and"} & part.keys() else parts).append(part)
    if step.says:
        parts.append({"$iany": {"says": {"$i": tags[step.says]}}})
    if references:
        parts.extend(references)
        parts.append(_implied(references[0]))
    return {"$and": [*parts, *groups]}


def _implied(reference: Test) -> Test:
    """`x >= ref` from `x > ref` or `x == ref`: true whenever the first reference is."""
    ((op, body),) = reference.items()
    if op == "$gt":
        ((name, ref),) = body.items()
        return {"$gte": {name: ref}}
    assert isinstance(body, dict) and not op.startswith("$"), reference
    return {"$gte": {op: body}}


def _after(alias: str) -> Test:
    return {"$gt": {"seq": {alias: "seq"}}}


def _before(alias: str) -> Test:
    return {"$lt": {"seq": {alias: "seq"}}}


def _within(alias: str, seconds: float) -> Test:
    return {"$lt": {"t": {"$add": {"$l": {alias: "t"}, "$r": seconds}}}}


def _element(step: StepPlan) -> dict[str, Test]:
    return {f"{step.alias}$not" if step.negated else step.alias: step.test}


def _action(index: int, record: Record) -> Callable[[Any], None]:
    # Actions stay trivial: durable_rules swallows what they raise (upstream #305), so
    # they only note the match; everything else happens after the call returns.
    def action(c: Any) -> None:
        record(index, c._m)

    return action


def _opened(c: Any) -> None:
    return None


def _fields(node: Node) -> set[str]:
    if isinstance(node, Field):
        return {node.name}
    if isinstance(node, Logic):
        return set().union(*(_fields(o) for o in node.operands))
    if isinstance(node, Member):
        return _fields(node.left)
    if isinstance(node, Not):
        return _fields(node.operand)
    if isinstance(node, Call):
        return set().union(*(_fields(a) for a in node.args))
    if isinstance(node, Compare):
        return _fields(node.left) | _fields(node.right)
    return set()
