"""One live interaction as the moment engine sees it: its clock, its facts (profile,
context and state, for `when` and guidance texts), the events it holds in durable_rules,
and what its moments have done so far (once, cooldown, superseded)."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from decision_engine.moments.host import FACT_ID_NAMES, Slot
from decision_engine.moments.model import EventValue, InteractionEvent
from decision_engine.ruleset.runtime import TODAY

_CONTEXT_FIELDS = ("channel", "intent", "queue", "agent_id")


@dataclass(slots=True)
class LiveFact:
    """An interaction event durable_rules holds: the fact, and the event it came from."""

    seq: int
    t: float
    fact: dict[str, Any]
    event: InteractionEvent


@dataclass(slots=True)
class Interaction:
    """The moment engine's state of one live interaction."""

    interaction_id: str
    slot: Slot
    start: float
    clock: float
    facts: dict[str, Any]
    seq: int = 0
    """Events processed so far: each fact's `seq`, the order durable_rules is told."""
    live: deque[LiveFact] = field(default_factory=deque)
    by_seq: dict[int, LiveFact] = field(default_factory=dict)
    free_ids: list[str] = field(default_factory=lambda: FACT_ID_NAMES[::-1])
    seen: set[str] = field(default_factory=set)
    """Event ids processed (a redelivered event is ignored)."""
    occurrences: dict[int, int] = field(default_factory=dict)
    """Moment index → how many times it was detected."""
    last_at: dict[int, float] = field(default_factory=dict)
    silenced: set[int] = field(default_factory=set)
    """Moments superseded by one already detected: not detected again."""
    hold_since: float | None = None
    """Event time of the `hold_started` not yet ended."""

    @classmethod
    def begin(
        cls, started: InteractionEvent, slot: Slot, profile: Mapping[str, Any] | None
    ) -> Interaction:
        facts: dict[str, Any] = dict(profile or {})
        facts.setdefault("profile_found", profile is not None)
        # days_until/days_since need today; the profile facts carry it, else event time does.
        facts.setdefault(TODAY, datetime.fromtimestamp(started.occurred_at, UTC).date().toordinal())
        facts.update(hold_s_total=0.0, holds=0, silence_s_total=0.0, elapsed_s=0.0, utterances=0)
        at = started.occurred_at
        return cls(started.interaction_id, slot, at, at, facts)

    def tick(self, now: float) -> float:
        """Move the clock to `now` (never back: a late event happens at the current time)."""
        self.clock = max(self.clock, now)
        self.facts["elapsed_s"] = self.clock - self.start
        return self.clock

    def completed(self, event: InteractionEvent) -> InteractionEvent:
        """The event with what the interaction knows added: a `hold_ended` without its
        duration (many telephony systems send none) lasted since its `hold_started`."""
        if event.kind == "hold_started":
            self.hold_since = self.clock
        elif event.kind == "hold_ended":
            since, self.hold_since = self.hold_since, None
            if since is not None and not _number(event.data.get("duration_s")):
                data = {**event.data, "duration_s": max(0.0, self.clock - since)}
                return replace(event, data=data)
        return event

    def apply(self, event: InteractionEvent) -> None:
        """What the event changes in the state `when` and guidance texts read."""
        data, facts = event.data, self.facts
        if event.kind == "started":
            for name in _CONTEXT_FIELDS:
                value = data.get(name)
                if isinstance(value, str) and value:
                    facts[name] = value
        elif event.kind == "intent_changed":
            intent = data.get("intent")
            if isinstance(intent, str) and intent:
                facts["intent"] = intent
        elif event.kind == "sentiment":
            value = data.get("value")
            if data.get("speaker", "customer") == "customer" and _number(value):
                facts["sentiment"] = float(value)  # type: ignore[arg-type]
        elif event.kind == "hold_ended":
            duration = data.get("duration_s")
            facts["holds"] += 1
            if _number(duration):
                facts["hold_s_total"] += float(duration)  # type: ignore[arg-type]
        elif event.kind == "silence":
            duration = data.get("duration_s")
            if _number(duration):
                facts["silence_s_total"] += float(duration)  # type: ignore[arg-type]
        elif event.kind == "utterance":
            facts["utterances"] += 1

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


def _number(value: EventValue | None) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
