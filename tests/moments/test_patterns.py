"""What each kind of pattern detects, and what it must not: one event, counts, sequences,
absences with deadlines; windows are "less than `within` after", in event time."""

from __future__ import annotations

from pathlib import Path

from tests.moments.support import T0, Call, detected, engine

GUIDE = "guidance: {kind: coaching, title: Look, text: Something happened}"


def one(pattern: str, extra: str = "") -> str:
    return f"moments:\n  - id: m\n    pattern: {pattern}\n    {GUIDE}\n{extra}"


class TestOneEvent:
    def test_says_matches_keywords_phrases_and_whole_words_of_the_text_in_any_case(
        self, tmp_path: Path
    ) -> None:
        pattern = (
            '{event: utterance, says: [cancel, "switch provider"], where: speaker == "customer"}'
        )
        e = engine(tmp_path, one(pattern, "    repeat: {cooldown: 1s}\n"))
        call = Call(e)
        call.start()
        assert call.says(10, "I will CANCEL today") == ["m"]
        assert call.says(20, "I might Switch   Provider soon") == ["m"]
        assert call.at(30, "utterance", speaker="customer", keywords=("cancel",)) == ["m"]
        assert call.at(40, "utterance", speaker="customer", phrases=("switch provider",)) == ["m"]
        # Whole words only, and the customer only.
        assert call.says(50, "the cancellation fee") == []
        assert call.says(60, "cancel", speaker="agent") == []
        assert call.says(70, "switch\nprovider") == []

    def test_where_tests_the_events_fields(self, tmp_path: Path) -> None:
        e = engine(tmp_path, one("{event: hold_ended, where: duration_s >= 180}"))
        call = Call(e)
        call.start()
        assert call.at(100, "hold_ended", duration_s=179.9) == []
        assert call.at(400, "hold_ended", duration_s=180) == ["m"]

    def test_a_hold_ended_without_its_duration_lasted_since_its_hold_started(
        self, tmp_path: Path
    ) -> None:
        e = engine(tmp_path, one("{event: hold_ended, where: duration_s >= 180}"))
        call = Call(e)
        call.start()
        call.at(10, "hold_started")
        assert call.at(100, "hold_ended") == []  # 90 s
        call.at(200, "hold_started")
        assert call.at(390, "hold_ended") == ["m"]  # 190 s
        # A duration the publisher gives wins over the one the engine would work out.
        e2 = engine(tmp_path / "2", one("{event: hold_ended, where: duration_s >= 180}"))
        call2 = Call(e2)
        call2.start()
        call2.at(10, "hold_started")
        assert call2.at(500, "hold_ended", duration_s=30) == []

    def test_an_absent_field_fails_every_test(self, tmp_path: Path) -> None:
        e = engine(tmp_path, one('{event: sentiment, where: speaker != "agent"}'))
        call = Call(e)
        call.start()
        assert call.at(5, "sentiment", value=-0.2) == []
        assert call.at(6, "sentiment", value=-0.2, speaker="customer") == ["m"]

    def test_a_value_of_the_wrong_type_is_an_absent_one(self, tmp_path: Path) -> None:
        e = engine(
            tmp_path, one("{event: sentiment, where: value < 0}", "    repeat: {cooldown: 1s}\n")
        )
        call = Call(e)
        call.start()
        assert call.at(5, "sentiment", value="-0.9") == []
        assert call.at(6, "sentiment", value=float("nan")) == []
        assert call.at(7, "sentiment", value=True) == []
        assert call.at(8, "sentiment", value=-1) == ["m"]

    def test_or_and_in_complete_once_per_event(self, tmp_path: Path) -> None:
        where = 'action in ["offer_declined", "guidance_dismissed"] or offer_id == "x"'
        e = engine(
            tmp_path,
            one(f"{{event: agent_action, where: '{where}'}}", "    repeat: {cooldown: 1s}\n"),
        )
        call = Call(e)
        call.start()
        # Both disjuncts hold: durable_rules completes the rule twice; one detection.
        assert call.at(5, "agent_action", action="offer_declined", offer_id="x") == ["m"]
        assert call.at(10, "agent_action", action="offer_presented", offer_id="y") == []
        assert call.at(15, "agent_action", action="guidance_dismissed") == ["m"]


class TestCount:
    MOMENT = one(
        "{count: 3, within: 60s, event: sentiment, where: value < -0.5}",
        "    repeat: {cooldown: 1s}\n",
    )

    def test_the_third_within_the_window_completes_it(self, tmp_path: Path) -> None:
        call = Call(engine(tmp_path, self.MOMENT))
        call.start()
        assert call.at(10, "sentiment", value=-0.6) == []
        assert call.at(20, "sentiment", value=0.3) == []  # does not match, does not count
        assert call.at(30, "sentiment", value=-0.7) == []
        assert call.at(69, "sentiment", value=-0.8) == ["m"]
        assert call.detections[0].event_ids == ("i-1-2", "i-1-4", "i-1-5")

    def test_the_window_runs_from_the_first_to_the_last_and_slides(self, tmp_path: Path) -> None:
        call = Call(engine(tmp_path, self.MOMENT))
        call.start()
        for at in (10, 40):
            call.at(at, "sentiment", value=-0.9)
        assert call.at(70, "sentiment", value=-0.9) == []  # 60 s after the first: too late
        assert call.at(75, "sentiment", value=-0.9) == ["m"]  # 40, 70, 75
        assert call.detections[0].event_ids == ("i-1-3", "i-1-4", "i-1-5")

    def test_many_matches_complete_one_join_per_event(self, tmp_path: Path) -> None:
        # Without the `$not` steps 20 matches would complete C(20, 3) = 1,140 joins.
        e = engine(tmp_path, self.MOMENT)
        matches: list[int] = []
        original = e._record

        def counting(rule: int, matched: dict[str, object]) -> None:
            matches.append(rule)
            original(rule, matched)

        # Before the first interaction: its actions are bound when the ruleset registers.
        e._record = counting  # type: ignore[method-assign]
        call = Call(e)
        call.start()
        for n in range(20):
            call.at(1 + n, "sentiment", value=-0.9)
        assert len(matches) == 18

    def test_matches_beyond_the_window_do_not_count(self, tmp_path: Path) -> None:
        call = Call(engine(tmp_path, self.MOMENT))
        call.start()
        for at in (0, 50, 100, 150, 200):
            assert call.at(at, "sentiment", value=-0.9) == []


class TestSequence:
    MOMENT = one(
        "\n      sequence:\n"
        "        - {event: hold_ended, where: duration_s >= 180}\n"
        "        - {event: sentiment, where: value < -0.3, within: 60s}"
    )

    def test_in_order_and_within_the_window(self, tmp_path: Path) -> None:
        call = Call(engine(tmp_path, self.MOMENT))
        call.start()
        call.at(200, "hold_ended", duration_s=190)
        assert call.at(259, "sentiment", value=-0.5) == ["m"]
        assert detected(call.detections) == [("m", 259)]

    def test_order_is_enforced(self, tmp_path: Path) -> None:
        # durable_rules' `all` does not order what it joins; the rule says so explicitly.
        call = Call(engine(tmp_path, self.MOMENT))
        call.start()
        call.at(100, "sentiment", value=-0.5)
        assert call.at(110, "hold_ended", duration_s=190) == []

    def test_a_late_second_step_does_not_complete_it(self, tmp_path: Path) -> None:
        call = Call(engine(tmp_path, self.MOMENT))
        call.start()
        call.at(200, "hold_ended", duration_s=190)
        assert call.at(260, "sentiment", value=-0.5) == []

    def test_an_or_in_a_step_keeps_its_order_and_window(self, tmp_path: Path) -> None:
        # durable_rules skips the references after a nested `or` group (its 2.0.28 bug);
        # definitions.py puts the groups last, so the window and the order still hold.
        moment = one(
            "\n      sequence:\n"
            "        - {event: hold_ended}\n"
            '        - {event: sentiment, where: value < -0.3 or speaker == "agent", within: 60s}'
        )
        call = Call(engine(tmp_path, moment))
        call.start()
        assert call.at(5, "sentiment", value=-0.9) == []  # before the hold: out of order
        call.at(10, "hold_ended", duration_s=5)
        assert call.at(70, "sentiment", value=-0.9) == []  # 60 s after: too late
        assert call.at(71, "hold_ended", duration_s=5) == []
        assert call.at(72, "sentiment", value=0.5, speaker="agent") == ["m"]

    def test_three_steps_each_within_its_own_window(self, tmp_path: Path) -> None:
        moment = one(
            "\n      sequence:\n"
            "        - {event: hold_started}\n"
            "        - {event: hold_ended, within: 5m}\n"
            "        - {event: utterance, says: [manager], within: 30s}"
        )
        call = Call(engine(tmp_path, moment))
        call.start()
        call.at(10, "hold_started")
        call.at(300, "hold_ended", duration_s=290)
        assert call.says(320, "get me a manager") == ["m"]
        assert call.detections[0].event_ids == ("i-1-2", "i-1-3", "i-1-4")


class TestAbsence:
    MOMENT = one(
        '\n      after: {event: intent_changed, where: intent == "payment"}\n'
        '      missing: {event: agent_action, where: action == "disclosure_read"}\n'
        "      within: 60s"
    )

    def test_the_deadline_fires_in_event_time_through_advance(self, tmp_path: Path) -> None:
        e = engine(tmp_path, self.MOMENT)
        call = Call(e)
        call.start()
        call.at(10, "intent_changed", intent="payment")
        assert e.next_deadline() == T0 + 70
        assert e.advance(T0 + 69.9) == []
        found = e.advance(T0 + 70)
        assert detected(found) == [("m", 70)]
        assert found[0].event_ids == ("i-1-2",)
        assert e.next_deadline() is None

    def test_the_missing_event_in_time_prevents_it(self, tmp_path: Path) -> None:
        e = engine(tmp_path, self.MOMENT)
        call = Call(e)
        call.start()
        call.at(10, "intent_changed", intent="payment")
        call.at(69, "agent_action", action="disclosure_read")
        assert e.advance(T0 + 1000) == []

    def test_an_event_fires_the_deadlines_due_by_its_time_first(self, tmp_path: Path) -> None:
        e = engine(tmp_path, self.MOMENT)
        call = Call(e)
        call.start()
        call.at(10, "intent_changed", intent="payment")
        # At exactly the deadline the disclosure is too late: the deadline fires first.
        assert call.at(70, "agent_action", action="disclosure_read") == ["m"]
        assert detected(call.detections) == [("m", 70)]

    def test_a_disclosure_before_the_anchor_does_not_count(self, tmp_path: Path) -> None:
        e = engine(tmp_path, self.MOMENT)
        call = Call(e)
        call.start()
        call.at(5, "agent_action", action="disclosure_read")
        call.at(10, "intent_changed", intent="payment")
        assert detected(e.advance(T0 + 100)) == [("m", 70)]

    def test_each_anchor_has_its_deadline_and_an_ended_call_has_none(self, tmp_path: Path) -> None:
        e = engine(
            tmp_path,
            self.MOMENT.replace("    guidance", "    repeat: {cooldown: 1s}\n    guidance"),
        )
        call = Call(e)
        call.start()
        call.at(10, "intent_changed", intent="payment")
        call.at(20, "intent_changed", intent="payment")
        assert detected(e.advance(T0 + 75)) == [("m", 70)]
        call.at(76, "ended", resolved=True)
        assert e.next_deadline() is None
        assert e.advance(T0 + 1000) == []
