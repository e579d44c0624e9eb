"""The live-guidance part of a case: its timed events and the guidance it expects.

A case with `events:` is a moment case. Its `context` is the `started` event (at 0 s);
each event comes `at` seconds after it; the clock is the events' time, so a case always
runs the same way:

    - name: a customer who mentions cancelling hears about retention
      profile: {first_name: Alice, clv: 48000, churn_risk: 0.82}
      context: {channel: voice, intent: general_inquiry}
      events:
        - {at: 5, event: utterance, speaker: customer, text: "I want to cancel"}
        - {at: 20, event: intent_changed, intent: payment}
      until: 90                       # let time pass: deadlines due by then fire
      expect:
        guidance:                     # exactly these, in this order
          - {moment: cancel-high-value-transfer, route: {queue: retention_specialists}}
          - {moment: payment-disclosure-missing, at: 80, text_contains: disclosure}
        none: [cancel-mentioned]      # these never fire
"""

from __future__ import annotations

import yaml

from decision_engine.authoring.case_model import CaseEvent, GuidanceExpectation, MomentExpectation
from decision_engine.authoring.case_nodes import CaseNodes
from decision_engine.moments.model import EventValue
from decision_engine.ruleset.compiled import CompiledRuleset
from decision_engine.ruleset.moment_fields import LIST_FIELDS
from decision_engine.vocabulary import (
    AGENT_ACTIONS,
    CHANNELS,
    EVENT_FIELDS,
    EVENT_KINDS,
    GUIDANCE_KINDS,
    SEVERITIES,
    SPEAKERS,
)

MAX_AT = 7 * 86_400.0
_EXPECT_KEYS = ("guidance", "none")
_GUIDANCE_KEYS = (
    "moment", "kind", "severity", "title_contains", "text_contains", "route", "decide", "set",
    "at",
)  # fmt: skip
_NUMBERS = {"value": (-1.0, 1.0), "duration_s": (0.0, MAX_AT)}


class MomentCaseReader:
    """Reads the moment parts of cases with the scalar readers of their file."""

    def __init__(self, r: CaseNodes, ruleset: CompiledRuleset, intents: tuple[str, ...]) -> None:
        self.r = r
        self.moment_ids = [m.id for m in ruleset.source.moments]
        self.intents = intents
        source = ruleset.source
        self.queues = sorted({source.default_route.queue, *(r.queue for r in source.routes)})
        self._choices = {
            "speaker": SPEAKERS,
            "action": AGENT_ACTIONS,
            "channel": CHANNELS,
            "intent": intents,
        }

    def events(self, node: yaml.Node | None) -> tuple[CaseEvent, ...] | None:
        r = self.r
        items = r.sequence(node, "events")
        if node is not None and isinstance(node, yaml.SequenceNode) and not items:
            r.error(node, "`events:` is empty; a moment case needs at least one event")
            return None
        out: list[CaseEvent] = []
        for item in items:
            event = self.event(item, out[-1].at if out else 0.0)
            if event is None:
                return None
            out.append(event)
        return tuple(out)

    def event(self, node: yaml.Node, earliest: float) -> CaseEvent | None:
        r = self.r
        if not isinstance(node, yaml.MappingNode):
            r.error(node, "an event is a mapping, e.g. {at: 5, event: utterance, text: ...}")
            return None
        raw = r.mapping(node, "an event") or {}
        if "event" not in raw or "at" not in raw:
            r.error(node, "an event has `at` (seconds after the start) and `event` (its kind)")
            return None
        kind = r.choice(raw["event"], "event", EVENT_KINDS)
        at = r.number(raw["at"], "at", 0.0, MAX_AT)
        if kind == "started":
            r.error(raw["event"], "the case's `context` is the started event; leave it out")
            return None
        if kind is None or at is None:
            return None
        if at < earliest:
            r.error(raw["at"], f"events come in time order: at {at:g} is before {earliest:g}")
            return None
        data: dict[str, EventValue] = {}
        for name, value_node in raw.items():
            if name in ("at", "event"):
                continue
            if name not in EVENT_FIELDS[kind]:
                known = ", ".join(EVENT_FIELDS[kind]) or "none"
                r.error(value_node, f"{kind} events have no field {name!r} (their fields: {known})")
                return None
            value = self.field(name, value_node)
            if value is None:
                return None
            data[name] = value
        return CaseEvent(at, kind, data, r.where(node))

    def field(self, name: str, node: yaml.Node) -> EventValue | None:
        r = self.r
        if name in LIST_FIELDS:
            items = [node] if isinstance(node, yaml.ScalarNode) else r.sequence(node, name)
            words = [r.text(item, name) for item in items]
            if any(w is None for w in words):
                return None
            return tuple(w.lower() for w in words if w is not None)
        if name in _NUMBERS:
            return r.number(node, name, *_NUMBERS[name])
        if name == "resolved":
            return r.boolean(node, name)
        choices = self._choices.get(name)
        if choices is not None:
            return r.choice(node, name, choices)
        return r.text(node, name)

    def expect(self, node: yaml.Node) -> MomentExpectation | None:
        r = self.r
        spec = r.mapping(node, "expect", _EXPECT_KEYS)
        if spec is None:
            return None
        if not spec:
            r.error(node, "expect says nothing: add guidance (the moments detected, in order) "
                    "or none (moments that must not fire)")  # fmt: skip
            return None
        guidance = None
        if "guidance" in spec:
            items = r.sequence(spec["guidance"], "guidance")
            found = [self.guidance(item) for item in items]
            if any(g is None for g in found):
                return None
            guidance = tuple(g for g in found if g is not None)
        none = r.choices(spec.get("none"), "none", self.moment_ids) or ()
        return MomentExpectation(guidance, none)

    def guidance(self, node: yaml.Node) -> GuidanceExpectation | None:
        r = self.r
        spec = r.mapping(node, "an expected guidance", _GUIDANCE_KEYS)
        if spec is None:
            return None
        if "moment" not in spec:
            r.error(node, "an expected guidance names its moment: {moment: cancel-mentioned}")
            return None
        moment = r.choice(spec["moment"], "moment", self.moment_ids)
        route = r.mapping(spec.get("route"), "route", ("queue", "priority")) or {}
        context = r.mapping(spec.get("set"), "set") or {}
        settings = tuple((k, t) for k, v in context.items() if (t := r.text(v, k)) is not None)
        if moment is None:
            return None
        return GuidanceExpectation(
            moment=moment,
            where=r.where(node),
            kind=r.choice(spec.get("kind"), "kind", GUIDANCE_KINDS),
            severity=r.choice(spec.get("severity"), "severity", SEVERITIES),
            title_contains=self.texts(spec.get("title_contains"), "title_contains"),
            text_contains=self.texts(spec.get("text_contains"), "text_contains"),
            route_queue=r.choice(route.get("queue"), "route queue", self.queues),
            route_priority=r.integer(route.get("priority"), "route priority", 1, 10),
            decide=r.boolean(spec.get("decide"), "decide"),
            context=settings,
            at=r.number(spec.get("at"), "at", 0.0, MAX_AT),
        )

    def texts(self, node: yaml.Node | None, what: str) -> tuple[str, ...]:
        if node is None:
            return ()
        items = [node] if isinstance(node, yaml.ScalarNode) else self.r.sequence(node, what)
        return tuple(t for item in items if (t := self.r.text(item, what)) is not None)
