"""Synthetic interactions that exercise every moment of a ruleset (for the trial and the
benchmark): per moment, events built to complete its pattern (values read off its
conditions), a customer that meets its `when`, and noise of every event kind around them.

Deterministic for a seed. Best effort: a condition it cannot read (arithmetic, dates)
simply leaves that moment's `when` to chance; the point is to drive every rule through
durable_rules, not to prove the moments right (that is what rule test cases do).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from decision_engine.moments.model import EventValue, InteractionEvent
from decision_engine.ruleset.compiled import CompiledRuleset
from decision_engine.ruleset.expr import Call, Compare, Field, Literal, Logic, Member, Node, Not
from decision_engine.ruleset.moment_fields import LIST_FIELDS, event_fields
from decision_engine.ruleset.runtime import TODAY
from decision_engine.ruleset.schema import FieldSpec
from decision_engine.ruleset.spec import ABSENCE, COUNT, SEQUENCE, MomentSpec, Step
from decision_engine.vocabulary import EVENT_FIELDS, EVENT_KINDS

START = 1_750_000_000.0
_WORDS = ("hello", "bill", "plan", "thanks", "router", "price", "line", "app", "help")


@dataclass(slots=True)
class _Script:
    """The events of one interaction, as (seconds after start, kind, data)."""

    steps: list[tuple[float, str, dict[str, EventValue]]] = field(default_factory=list)
    clock: float = 0.0

    def add(self, gap: float, kind: str, data: dict[str, EventValue]) -> None:
        self.clock += gap
        self.steps.append((self.clock, kind, data))


class Synthesizer:
    """Builds the events and customers for one ruleset's moments."""

    def __init__(self, ruleset: CompiledRuleset, seed: int = 7) -> None:
        self.moments = ruleset.source.moments
        self.fields = ruleset.source.fields
        intent = self.fields.get("intent")
        self.intents = intent.values if intent is not None else ()
        self.rng = random.Random(seed)

    def profile(self, moments: tuple[MomentSpec, ...]) -> dict[str, Any]:
        """Typed facts that meet as many of these moments' `when` as it can read."""
        facts: dict[str, Any] = {TODAY: 739_400, "profile_found": True}
        for spec in moments:
            for condition in spec.when:
                _satisfy(condition.node, facts, self.fields, self.rng)
        return facts

    def moment_events(self, spec: MomentSpec, script: _Script, *, complete: bool = True) -> None:
        """The events that complete the moment's pattern (or, for an absence, may not)."""
        pattern, rng = spec.pattern, self.rng
        if pattern.shape == COUNT:
            for _ in range(pattern.count):
                script.add(
                    rng.uniform(0.5, pattern.within / pattern.count / 2),
                    *self._step(pattern.steps[0]),
                )
        elif pattern.shape == SEQUENCE:
            script.add(rng.uniform(0.5, 5), *self._step(pattern.steps[0]))
            for step in pattern.steps[1:]:
                assert step.within is not None
                script.add(rng.uniform(0.1, step.within / 2), *self._step(step))
        elif pattern.shape == ABSENCE:
            anchor, missing = pattern.steps
            script.add(rng.uniform(0.5, 5), *self._step(anchor))
            if not complete:
                script.add(rng.uniform(0.1, pattern.within / 2), *self._step(missing))
            script.add(pattern.within + 1, *self.noise())
        else:
            script.add(rng.uniform(0.5, 5), *self._step(pattern.steps[0]))

    def noise(self) -> tuple[str, dict[str, EventValue]]:
        kind = self.rng.choice([k for k in EVENT_KINDS if k not in ("started", "ended")])
        return kind, self._random_data(kind)

    def _step(self, step: Step) -> tuple[str, dict[str, EventValue]]:
        data = self._random_data(step.kind)
        if step.where is not None:
            _satisfy(step.where.node, data, event_fields(step.kind, self.intents), self.rng)
        if step.says:
            phrase = self.rng.choice(step.says)
            data["text"] = f"{self.rng.choice(_WORDS)} {phrase.upper()} {self.rng.choice(_WORDS)}"
        return step.kind, data

    def _random_data(self, kind: str) -> dict[str, EventValue]:
        specs = event_fields(kind, self.intents)
        data: dict[str, EventValue] = {}
        for name in EVENT_FIELDS[kind]:
            if name in LIST_FIELDS:
                data[name] = tuple(self.rng.sample(_WORDS, 2))
            elif name in specs and self.rng.random() < 0.9:
                data[name] = _random_value(specs[name], self.rng)
        return data

    def interaction(
        self, iid: str, start: float, moments: tuple[MomentSpec, ...]
    ) -> list[InteractionEvent]:
        """One interaction: started, the moments' events with noise between, ended."""
        rng, script = self.rng, _Script()
        started = self._random_data("started")
        for spec in moments:
            step = spec.pattern.steps[0]
            if step.kind == "started" and step.where is not None:
                _satisfy(step.where.node, started, event_fields("started", self.intents), rng)
        for spec in moments:
            for _ in range(rng.randint(0, 2)):
                script.add(rng.uniform(0.5, 20), *self.noise())
            self.moment_events(spec, script, complete=rng.random() < 0.6)
        script.add(rng.uniform(1, 30), "ended", {"resolved": rng.random() < 0.5})
        events = [InteractionEvent(f"{iid}-0", iid, start, 0, "started", started)]
        for n, (at, kind, data) in enumerate(script.steps, start=1):
            events.append(InteractionEvent(f"{iid}-{n}", iid, start + at, n, kind, data))
        return events


def stream(
    ruleset: CompiledRuleset, *, interactions: int = 24, seed: int = 7, start: float = START
) -> Iterator[tuple[InteractionEvent, Mapping[str, Any] | None]]:
    """Interleaved interactions (with their profiles on `started`), in arrival order: some
    events arrive before their `started`, some twice."""
    synth = Synthesizer(ruleset, seed)
    rng, moments = synth.rng, synth.moments
    arrivals: list[tuple[float, int, InteractionEvent, Mapping[str, Any] | None]] = []
    for i in range(interactions):
        chosen = (
            tuple(rng.sample(moments, k=min(len(moments), rng.randint(1, 6)))) if moments else ()
        )
        profile: Mapping[str, Any] | None = synth.profile(chosen) if rng.random() < 0.8 else None
        events = synth.interaction(f"syn-{i}", start + rng.uniform(0, 600), chosen)
        for n, event in enumerate(events):
            arrival = event.occurred_at
            if n and rng.random() < 0.03:
                arrival = events[0].occurred_at - 1  # before its started: held
            arrivals.append((arrival, len(arrivals), event, profile if n == 0 else None))
            if rng.random() < 0.02:
                arrivals.append((arrival + 0.5, len(arrivals), event, None))  # redelivered
    for _, _, event, profile in sorted(arrivals, key=lambda a: (a[0], a[1])):
        yield event, profile


def _satisfy(
    node: Node, out: dict[str, Any], fields: Mapping[str, FieldSpec], rng: random.Random
) -> None:
    """Set `out` so that `node` holds, where it can tell how."""
    if isinstance(node, Logic):
        operands = node.operands if node.op == "and" else (rng.choice(node.operands),)
        for operand in operands:
            _satisfy(operand, out, fields, rng)
    elif isinstance(node, Compare):
        left, op, right = node.left, node.op, node.right
        if isinstance(left, Literal) and isinstance(right, Field):
            left, right = right, left
            op = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}.get(op, op)
        if isinstance(left, Field) and isinstance(right, Literal) and left.name in fields:
            out[left.name] = _meeting(fields[left.name], op, right.value)
    elif isinstance(node, Member) and isinstance(node.left, Field) and node.left.name in fields:
        spec = fields[node.left.name]
        values = [i.value for i in node.items]
        if not node.negated:
            out[node.left.name] = values[0]
        else:
            others = [v for v in spec.values if v not in values]
            out[node.left.name] = others[0] if others else "other"
    elif isinstance(node, Call) and node.function == "exists" and isinstance(node.args[0], Field):
        name = node.args[0].name
        if name in fields and name not in out:
            out[name] = _random_value(fields[name], rng)
    elif isinstance(node, Not) and isinstance(node.operand, Call) and node.operand.args:
        arg = node.operand.args[0]
        if isinstance(arg, Field):
            out.pop(arg.name, None)


def _meeting(spec: FieldSpec, op: str, value: float | str | bool) -> Any:
    if isinstance(value, bool | str):
        if op == "==":
            return value
        if isinstance(value, bool):
            return not value
        others = [v for v in spec.values if v != value]
        return others[0] if others else f"{value}-other"
    step = 0.05 if spec.maximum is not None and spec.maximum <= 1 else 1.0
    number = {"<": value - step, ">": value + step, "!=": value + step}.get(op, value)
    if spec.minimum is not None:
        number = max(number, spec.minimum)
    if spec.maximum is not None:
        number = min(number, spec.maximum)
    return int(number) if spec.kind == "integer" else float(number)


def _random_value(spec: FieldSpec, rng: random.Random) -> Any:
    if spec.kind == "enum":
        return rng.choice(spec.values) if spec.values else "x"
    if spec.kind in ("number", "integer"):
        low = spec.minimum if spec.minimum is not None else 0.0
        high = spec.maximum if spec.maximum is not None else low + 600.0
        number = rng.uniform(low, high)
        return int(number) if spec.kind == "integer" else round(number, 2)
    if spec.kind == "bool":
        return rng.random() < 0.5
    if spec.kind == "date":
        return 739_400 + rng.randint(-400, 400)
    return rng.choice(_WORDS)
