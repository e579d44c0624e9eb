"""A moment's `pattern:`: one event, a count, a sequence, or an absence with a deadline.

    pattern: {event: utterance, says: [cancel, competitor], where: speaker == "customer"}
    pattern: {count: 3, within: 2m, event: sentiment, where: value < -0.5}
    pattern:
      sequence:
        - {event: hold_ended, where: duration_s >= 180}
        - {event: sentiment, where: value < -0.3, within: 60s}
    pattern:
      after: {event: intent_changed, where: intent == "payment"}
      missing: {event: agent_action, where: action == "disclosure_read"}
      within: 60s

A step's `where` tests the event's own fields and is matched inside durable_rules, so it
is limited to what its matcher does exactly: comparisons of a field with a value, `in`,
`exists`, `and` and `or`. Anything else (arithmetic, profile fields) belongs in `when`.
"""

from __future__ import annotations

import re

import yaml

from decision_engine.errors import Problem
from decision_engine.ruleset.expr import Call, Compare, Field, Literal, Logic, Member, Node, Not
from decision_engine.ruleset.moment_fields import event_fields
from decision_engine.ruleset.rule_nodes import RuleNodes
from decision_engine.ruleset.spec import ABSENCE, COUNT, EVENT, SEQUENCE, Condition, Pattern, Step
from decision_engine.ruleset.typecheck import did_you_mean
from decision_engine.vocabulary import EVENT_KINDS

MIN_WINDOW, MAX_WINDOW = 1.0, 24 * 3600.0
MAX_COUNT = 10
"""A count is a join of that many events in durable_rules (its frames hold 16 at most)."""
MAX_STEPS = 8
MAX_PHRASES = 50
_STEP_KEYS = ("event", "says", "where")
_SHAPE_KEYS = {
    EVENT: _STEP_KEYS,
    COUNT: ("count", "within", *_STEP_KEYS),
    SEQUENCE: ("sequence",),
    ABSENCE: ("after", "missing", "within"),
}
_WORD = re.compile(r"\w")


def pattern(r: RuleNodes, node: yaml.Node, what: str, intents: tuple[str, ...]) -> Pattern | None:
    """The pattern a moment waits for; None (with located problems) when it is wrong."""
    if not isinstance(node, yaml.MappingNode):
        r.error(node, f"{what}: a pattern is a mapping, e.g. {{event: utterance, says: [cancel]}}")
        return None
    keys = {str(k.value) for k, _ in node.value}
    shape = (
        SEQUENCE if "sequence" in keys
        else ABSENCE if keys & {"after", "missing"}
        else COUNT if "count" in keys
        else EVENT
    )  # fmt: skip
    spec = r.mapping(node, f"{what} pattern ({shape})", _SHAPE_KEYS[shape])
    reader = _PatternReader(r, what, intents)
    if shape == EVENT:
        step = reader.step(node, spec, sequence_index=None)
        return None if step is None else Pattern(EVENT, (step,), where=r.where(node))
    if shape == COUNT:
        count = r.integer(spec.get("count"), f"{what} count", 2, 2, MAX_COUNT)
        within = reader.window(node, spec, "a count")
        step = reader.step(node, spec, sequence_index=None)
        if step is not None and step.kind in ("started", "ended"):
            r.error(spec.get("event", node), f"{what}: an interaction has one {step.kind} event")
            return None
        if step is None or within is None:
            return None
        return Pattern(COUNT, (step,), count, within, r.where(node))
    if shape == SEQUENCE:
        return reader.sequence(node, spec["sequence"])
    return reader.absence(node, spec)


class _PatternReader:
    def __init__(self, r: RuleNodes, what: str, intents: tuple[str, ...]) -> None:
        self.r = r
        self.what = what
        self.intents = intents

    def window(self, node: yaml.Node, spec: dict[str, yaml.Node], shape: str) -> float | None:
        if "within" not in spec:
            self.r.error(node, f"{self.what}: {shape} needs `within`, e.g. within: 60s")
            return None
        return self.r.duration(spec["within"], f"{self.what} within", MIN_WINDOW, MAX_WINDOW)

    def sequence(self, node: yaml.Node, items_node: yaml.Node) -> Pattern | None:
        r, what = self.r, self.what
        items = r.sequence(items_node, f"{what} sequence")
        if not 2 <= len(items) <= MAX_STEPS and isinstance(items_node, yaml.SequenceNode):
            r.error(items_node, f"{what}: a sequence has 2 to {MAX_STEPS} steps, got {len(items)}")
            return None
        steps = [self.step_node(item, sequence_index=i) for i, item in enumerate(items)]
        if not items or any(s is None for s in steps):
            return None
        done = [s for s in steps if s is not None]
        for index, (step, item) in enumerate(zip(done, items, strict=True)):
            if step.kind == "ended" and index < len(done) - 1:
                r.error(item, f"{what}: nothing follows the `ended` event of an interaction")
                return None
            if step.kind == "started" and index > 0:
                r.error(item, f"{what}: `started` is the first event of an interaction")
                return None
        return Pattern(SEQUENCE, tuple(done), where=r.where(node))

    def absence(self, node: yaml.Node, spec: dict[str, yaml.Node]) -> Pattern | None:
        r, what = self.r, self.what
        for key in ("after", "missing"):
            if key not in spec:
                r.error(node, f"{what}: an absence pattern has `after`, `missing` and `within`")
                return None
        within = self.window(node, spec, "an absence pattern")
        anchor = self.step_node(spec["after"], sequence_index=None)
        missing = self.step_node(spec["missing"], sequence_index=None)
        if anchor is not None and anchor.kind == "ended":
            r.error(spec["after"], f"{what}: no deadline can pass after the interaction ended")
            return None
        if anchor is None or missing is None or within is None:
            return None
        return Pattern(ABSENCE, (anchor, missing), 1, within, r.where(node))

    def step_node(self, node: yaml.Node, *, sequence_index: int | None) -> Step | None:
        keys = (*_STEP_KEYS, "within") if sequence_index is not None else _STEP_KEYS
        if not isinstance(node, yaml.MappingNode):
            self.r.error(node, f"{self.what}: a step is a mapping, e.g. {{event: hold_ended}}")
            return None
        spec = self.r.mapping(node, f"{self.what} step", keys)
        if sequence_index == 0 and "within" in spec:
            message = "the first step starts the sequence; it has no `within`"
            self.r.error(spec["within"], f"{self.what}: {message}")
            return None
        return self.step(node, spec, sequence_index=sequence_index)

    def step(
        self, node: yaml.Node, spec: dict[str, yaml.Node], *, sequence_index: int | None
    ) -> Step | None:
        r, what = self.r, self.what
        if "event" not in spec:
            r.error(node, f"{what}: a step names its event, e.g. event: utterance")
            return None
        kind = r.text(spec["event"], "event")
        if kind not in EVENT_KINDS:
            r.error(
                spec["event"],
                f"{what}: unknown event {kind!r}{did_you_mean(kind, list(EVENT_KINDS))}"
                f" (events: {', '.join(EVENT_KINDS)})",
            )
            return None
        says = self.says(spec.get("says"), kind)
        where = self.where(spec.get("where"), kind)
        within = None
        if sequence_index:
            if "within" not in spec:
                r.error(node, f"{what}: a later step of a sequence needs `within`, e.g. 60s")
                return None
            within = r.duration(spec["within"], f"{what} within", MIN_WINDOW, MAX_WINDOW)
            if within is None:
                return None
        if says is None or ("where" in spec and where is None):
            return None
        return Step(kind, where, says, within, r.where(node))

    def says(self, node: yaml.Node | None, kind: str) -> tuple[str, ...] | None:
        if node is None:
            return ()
        r, what = self.r, self.what
        if kind != "utterance":
            r.error(node, f"{what}: `says` is for utterance events, not {kind}")
            return None
        raw = r.names(node, "says")
        phrases = tuple(dict.fromkeys(" ".join(p.lower().split()) for p in raw))
        if not phrases:
            r.error(node, f"{what}: `says` lists at least one word or phrase")
            return None
        if len(phrases) > MAX_PHRASES:
            r.error(node, f"{what}: `says` lists at most {MAX_PHRASES} phrases")
            return None
        for phrase in phrases:
            if not _WORD.search(phrase):
                r.error(node, f"{what}: says {phrase!r} has no letters or digits")
                return None
        return phrases

    def where(self, node: yaml.Node | None, kind: str) -> Condition | None:
        if node is None:
            return None
        r = self.r
        fields = event_fields(kind, self.intents)
        if not fields:
            r.error(node, f"{self.what}: {kind} events have no fields to test")
            return None
        condition = r.expression(node, f"{self.what} where ({kind})", fields, want="bool")
        if condition is None:
            return None
        unsupported = _unsupported(condition.node)
        if unsupported is not None:
            col, message = unsupported
            assert isinstance(node, yaml.ScalarNode)
            line, column = r.locate(node, col - 1)
            r.problems.append(Problem.at(r.file, line, column, f"{self.what} where: {message}"))
            return None
        return condition


_HINT = "a step's `where` compares the event's fields with values (value < -0.3, "
_HINT += 'action == "disclosure_read", intent in ["payment"]); arithmetic, functions and '
_HINT += "other fields belong in the moment's `when`"


def _unsupported(node: Node) -> tuple[int, str] | None:
    """The first part of a `where` that durable_rules cannot match exactly, if any."""
    if isinstance(node, Logic):
        for operand in node.operands:
            found = _unsupported(operand)
            if found is not None:
                return found
        return None
    if isinstance(node, Compare):
        sides = (node.left, node.right)
        fields = [s for s in sides if isinstance(s, Field)]
        literals = [s for s in sides if isinstance(s, Literal)]
        if len(fields) == 1 and len(literals) == 1:
            return None
        return node.col, _HINT
    if isinstance(node, Member):
        return None if isinstance(node.left, Field) else (node.col, _HINT)
    if isinstance(node, Call) and node.function == "exists":
        return None
    if isinstance(node, Not) and isinstance(node.operand, Call):
        return _unsupported(node.operand)
    if isinstance(node, Not):
        return node.col, "write the opposite comparison instead of `not` (value >= 0, != ...)"
    return node.col, _HINT
