"""An interaction's life in the engine: held events, duplicates, the end, capacity and the
copies of the ruleset that take more than 1,023 live sessions."""

from __future__ import annotations

from pathlib import Path

import pytest

from decision_engine.errors import MomentCapacityError
from decision_engine.moments.engine import MomentEngine
from tests.moments.support import T0, Call, compiled, detected, engine

CANCEL = """
moments:
  - id: cancel
    pattern: {event: utterance, says: [cancel]}
    repeat: {cooldown: 1s}
    guidance: {kind: offer, title: Leaving, text: "{text}"}
"""


def test_events_before_started_are_held_and_processed_in_seq_order(tmp_path: Path) -> None:
    e = engine(tmp_path, CANCEL)
    call = Call(e)
    started = call.event(0, "started", channel="chat")
    early = call.event(10, "utterance", text="cancel one")
    late = call.event(20, "utterance", text="cancel two")
    assert call.send(late) == [] and call.send(early) == []  # they arrive out of order
    assert (e.live, e.held) == (0, 1)
    assert call.send(started) == ["cancel", "cancel"]
    assert [d.text for d in call.detections] == ["cancel one", "cancel two"]
    assert (e.live, e.held) == (1, 0)


def test_too_many_held_events_is_a_capacity_error(tmp_path: Path) -> None:
    e = engine(tmp_path, CANCEL, max_held=2)
    call = Call(e)
    call.send(call.event(1, "utterance", text="a"))
    call.send(call.event(2, "utterance", text="b"))
    with pytest.raises(MomentCapacityError, match="max_held=2"):
        call.send(call.event(3, "utterance", text="c"))


def test_a_redelivered_event_and_a_second_started_are_ignored(tmp_path: Path) -> None:
    call = Call(engine(tmp_path, CANCEL))
    call.start()
    event = call.event(5, "utterance", text="cancel")
    assert call.send(event) == ["cancel"]
    assert call.send(event) == []
    assert call.send(call.event(6, "started", channel="voice")) == []


def test_ended_ends_the_interaction_and_later_events_are_ignored(tmp_path: Path) -> None:
    e = engine(tmp_path, CANCEL)
    call = Call(e)
    call.start()
    call.at(10, "ended", resolved=True)
    assert e.live == 0
    assert call.says(20, "cancel") == []
    assert (e.live, e.held) == (0, 0)


def test_a_late_event_happens_at_the_current_time(tmp_path: Path) -> None:
    call = Call(engine(tmp_path, CANCEL))
    call.start()
    call.says(50, "hello")
    call.says(30, "cancel")  # occurred "before" the last one: the clock does not go back
    assert detected(call.detections) == [("cancel", 50)]


def test_live_sessions_are_bounded_and_freed_at_the_end(tmp_path: Path) -> None:
    e = engine(tmp_path, CANCEL, max_live=3, slots_per_ruleset=2)
    calls = [Call(e, f"i-{n}") for n in range(3)]
    for call in calls:
        call.start()
    assert e.live == 3 and e._sessions.copies == 2
    with pytest.raises(MomentCapacityError, match="max_live=3"):
        Call(e, "one-too-many").start()
    e.end("i-0")
    Call(e, "i-3").start()
    assert e.live == 3 and e._sessions.copies == 2
    # Every copy detects, and keeps its interactions apart.
    for call in [*calls[1:], Call(e, "i-3")]:
        call.seq = 1
        assert call.says(10, f"cancel {call.id}") == ["cancel"]
        assert call.detections[0].text == f"cancel {call.id}"


def test_more_than_1023_live_interactions_take_a_second_copy(tmp_path: Path) -> None:
    e = engine(tmp_path, CANCEL, max_live=1030)
    calls = [Call(e, f"i-{n}") for n in range(1030)]
    for call in calls:
        call.start()
    assert e._sessions.copies == 2
    assert all(
        call.says(5, "cancel") == ["cancel"] for call in (calls[0], calls[1022], calls[1029])
    )
    for call in calls:
        call.at(9, "ended", resolved=False)
    assert e.live == 0
    e.close()


def test_sessions_whose_events_no_rule_takes_end_cleanly(tmp_path: Path) -> None:
    # durable_rules crashes deleting a session whose facts were all unhandled; the
    # engine opens every session with a fact of its own (host.py).
    e = engine(tmp_path, CANCEL, max_live=4, slots_per_ruleset=2)
    for n in range(40):
        call = Call(e, f"i-{n}")
        call.start()
        call.says(1, "nothing to see")
        call.at(2, "ended", resolved=True)
    assert e.live == 0


def test_deadlines_of_all_interactions_fire_in_time_order(tmp_path: Path) -> None:
    moments = """
    moments:
      - id: no-disclosure
        pattern:
          after: {event: intent_changed}
          missing: {event: agent_action, where: action == "disclosure_read"}
          within: 60s
        guidance: {kind: compliance, title: Disclosure, text: Read it}
    """
    e = engine(tmp_path, moments)
    first, second = Call(e, "a"), Call(e, "b")
    first.start()
    second.start()
    second.at(5, "intent_changed", intent="payment")
    first.at(10, "intent_changed", intent="payment")
    assert e.next_deadline() == T0 + 65
    found = e.advance(T0 + 100)
    assert [(d.interaction_id, d.at - T0) for d in found] == [("b", 65), ("a", 70)]
    assert e.next_deadline() is None


def test_more_matching_events_than_fact_ids_keep_working(tmp_path: Path) -> None:
    moments = """
    moments:
      - id: many
        pattern: {count: 2, within: 24h, event: sentiment}
        repeat: {cooldown: 1s}
        guidance: {kind: coaching, title: t, text: x}
    """
    call = Call(engine(tmp_path, moments))
    call.start()
    found = [call.at(n, "sentiment", value=0.1) for n in range(1, 201)]
    assert found[0] == [] and all(f == ["many"] for f in found[1:])
    assert call.detections[-1].event_ids == ("i-1-200", "i-1-201")


def test_close_frees_everything(tmp_path: Path) -> None:
    e = engine(tmp_path, CANCEL)
    Call(e).start()
    e.close()
    assert e.live == 0


def test_an_engine_without_moments_takes_events_and_detects_nothing(tmp_path: Path) -> None:
    ruleset = compiled(tmp_path, "moments: []\n")
    e = MomentEngine(ruleset)
    call = Call(e)
    call.start()
    assert call.says(1, "cancel") == [] and e.live == 1


def test_the_engine_never_calls_the_dispatchers_entry_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # durable_rules' start_action / assert_timers read deleted sessions' freed memory
    # (host.py); the engine pumps each session's actions through the call that made them.
    import durable_rules_engine

    from decision_engine.moments.synthetic import stream
    from tests.moments.support import DEMO

    def refused(*args: object) -> None:
        raise AssertionError("durable_rules' dispatcher entry point called")

    monkeypatch.setattr(durable_rules_engine, "start_action", refused)
    monkeypatch.setattr(durable_rules_engine, "assert_timers", refused)
    ruleset = compiled(tmp_path, (DEMO / "moments.yaml").read_text(encoding="utf-8"))
    e = MomentEngine(ruleset)
    found = 0
    for event, profile in stream(ruleset, interactions=40, seed=9):
        found += len(e.advance(event.occurred_at)) + len(e.feed(event, profile))
    assert found > 20 and e.live == 0
