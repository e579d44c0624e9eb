"""Replaying the same events into a fresh engine yields the same Detections in the same
order, guidance ids included: after a crash, the event stream is the source of truth."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from decision_engine.moments.engine import MomentEngine
from decision_engine.moments.model import Detection, InteractionEvent
from decision_engine.moments.synthetic import stream
from decision_engine.ruleset.compiled import load_compiled
from tests.moments.support import DEMO

Arrivals = list[tuple[InteractionEvent, Mapping[str, Any] | None]]


def run(events: Iterable[tuple[InteractionEvent, Mapping[str, Any] | None]]) -> list[Detection]:
    engine = MomentEngine(load_compiled(DEMO))
    out: list[Detection] = []
    last = 0.0
    for event, profile in events:
        out += engine.advance(event.occurred_at)
        out += engine.feed(event, profile)
        last = max(last, event.occurred_at)
    out += engine.advance(last + 86_400)
    engine.close()
    return out


def test_the_same_events_give_the_same_detections_in_the_same_order() -> None:
    arrivals: Arrivals = list(stream(load_compiled(DEMO), interactions=60, seed=3))
    first, second = run(arrivals), run(arrivals)
    assert first == second
    # Not vacuous: many interactions, most of the demo's moments, unique guidance ids.
    assert len({d.interaction_id for d in first}) > 20
    assert len({d.moment_id for d in first}) >= 8
    assert len({d.guidance_id for d in first}) == len(first)


def test_one_interaction_replayed_alone_gets_its_own_detections_back() -> None:
    arrivals: Arrivals = list(stream(load_compiled(DEMO), interactions=30, seed=5))
    everything = run(arrivals)
    counts = Counter(d.interaction_id for d in everything)
    busiest = max(sorted(counts), key=lambda i: counts[i])
    alone = run([(e, p) for e, p in arrivals if e.interaction_id == busiest])
    assert alone == [d for d in everything if d.interaction_id == busiest]
    assert len(alone) >= 2
