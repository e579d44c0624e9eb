"""Run moment cases through the same MomentEngine as the server, and check the guidance.

The customer's facts are built by decide/facts.py, as for a decision; the case's
`context` becomes the `started` event, its events follow at their offsets, and `until`
lets the clock run on. The clock is the events' time only, so a case is deterministic.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

from decision_engine.authoring.case_model import (
    Failure,
    GuidanceExpectation,
    MomentCase,
    MomentExpectation,
)
from decision_engine.decide.facts import build_facts
from decision_engine.moments.engine import MomentEngine
from decision_engine.moments.model import Detection, InteractionEvent
from decision_engine.ruleset.compiled import CompiledRuleset


def run_moment_case(ruleset: CompiledRuleset, case: MomentCase) -> list[Detection]:
    """The guidance the case's interaction gets, in order (a fresh engine per case, so
    cases cannot see each other, even with the same interaction id)."""
    engine = MomentEngine(ruleset, max_live=1)
    try:
        return _run(engine, ruleset, case)
    finally:
        engine.close()


def _run(engine: MomentEngine, ruleset: CompiledRuleset, case: MomentCase) -> list[Detection]:
    iid = case.interaction_id or f"case:{case.where.file}:{case.where.line}"
    facts = build_facts(ruleset, case.state, case.context, now=case.now, interaction_id=iid)
    context = case.context
    started = {
        "channel": context.channel,
        "intent": context.intent,
        "queue": context.queue,
        "agent_id": context.agent_id,
    }
    events = [
        InteractionEvent(
            f"{iid}#0", iid, case.now, 0, "started", {k: v for k, v in started.items() if v}
        ),
        *(
            InteractionEvent(f"{iid}#{n}", iid, case.now + e.at, n, e.kind, e.data)
            for n, e in enumerate(case.events, start=1)
        ),
    ]
    detections = engine.feed(events[0], facts)
    for event in events[1:]:
        detections += engine.feed(event)
    if case.until is not None:
        detections += engine.advance(case.now + case.until)
    return detections


def check_guidance(
    expect: MomentExpectation, detections: Sequence[Detection], start: float
) -> Iterator[Failure]:
    """Failures of the expected guidance (exact, in order) and of the moments that must not fire."""
    got = [d.moment_id for d in detections]
    if expect.guidance is not None:
        wanted = [g.moment for g in expect.guidance]
        if wanted != got:
            yield Failure("guidance", _list(wanted), _list(got), _at(detections, start))
        else:
            for n, (want, detection) in enumerate(zip(expect.guidance, detections, strict=True)):
                yield from _check_one(f"guidance[{n + 1}] {want.moment}", want, detection, start)
    fired = [m for m in expect.none if m in got]
    if fired:
        yield Failure("none", f"no {', '.join(fired)}", _list(got), _at(detections, start))


def _check_one(
    what: str, want: GuidanceExpectation, got: Detection, start: float
) -> Iterator[Failure]:
    for field, expected, actual in (
        ("kind", want.kind, got.kind),
        ("severity", want.severity, got.severity),
        ("route.queue", want.route_queue, got.route_queue or "no transfer"),
    ):
        if expected is not None and expected != actual:
            yield Failure(f"{what}.{field}", expected, actual)
    if want.route_priority is not None and want.route_priority != got.route_priority:
        yield Failure(f"{what}.route.priority", str(want.route_priority), str(got.route_priority))
    if want.decide is not None and want.decide != got.decide:
        yield Failure(f"{what}.decide", _yes(want.decide), _yes(got.decide))
    for text in want.title_contains:
        if text not in got.title:
            yield Failure(f"{what}.title_contains", _quote(text), _quote(got.title))
    for text in want.text_contains:
        if text not in got.text:
            yield Failure(f"{what}.text_contains", _quote(text), _quote(got.text))
    for name, value in want.context:
        if got.context.get(name) != value:
            yield Failure(f"{what}.set.{name}", value, got.context.get(name, "not set"))
    if want.at is not None and abs(got.at - start - want.at) > 1e-6:
        yield Failure(f"{what}.at", f"{want.at:g}", f"{got.at - start:g}")


def _at(detections: Sequence[Detection], start: float) -> str:
    return "; ".join(f"{d.moment_id} at {d.at - start:g}s" for d in detections)


def _list(items: Sequence[str]) -> str:
    return "[" + ", ".join(items) + "]"


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _yes(value: bool) -> str:
    return "true" if value else "false"
