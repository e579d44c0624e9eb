"""The compiled form: durable_rules tests for `where`, `says` tags, and the rules each
pattern becomes (order and windows stated explicitly)."""

from __future__ import annotations

from pathlib import Path

import pytest

from decision_engine.moments.conditions import durable_test
from decision_engine.moments.definitions import ANCHOR, DEADLINE, DETECT, compile_moments
from decision_engine.moments.phrases import matched_tags, phrase_sets
from decision_engine.ruleset.expr import parse
from tests.moments.support import compiled


@pytest.mark.parametrize(
    ("condition", "test"),
    [
        ('speaker == "customer"', {"speaker": "customer"}),
        ("value < -0.3", {"$lt": {"value": -0.3}}),
        ("-0.3 > value", {"$lt": {"value": -0.3}}),
        ("duration_s >= 180", {"$gte": {"duration_s": 180.0}}),
        ("resolved == false", {"resolved": False}),
        ('action != "x"', {"$neq": {"action": "x"}}),
        ('action in ["a", "b"]', {"$or": [{"action": "a"}, {"action": "b"}]}),
        (
            'action not in ["a", "b"]',
            {"$and": [{"$neq": {"action": "a"}}, {"$neq": {"action": "b"}}]},
        ),
        ("exists(offer_id)", {"$ex": {"offer_id": 1}}),
        ("not exists(offer_id)", {"$nex": {"offer_id": 1}}),
        (
            "value < 0 and speaker == 'agent'",
            {"$and": [{"$lt": {"value": 0.0}}, {"speaker": "agent"}]},
        ),
    ],
)
def test_where_conditions_become_durable_rules_tests(
    condition: str, test: dict[str, object]
) -> None:
    assert durable_test(parse(condition)) == test


def test_says_lists_share_tags_and_match_whole_words_of_each_part() -> None:
    sets = phrase_sets([("cancel", "switch provider"), ("renew",), ("cancel", "switch provider")])
    assert [s.tag for s in sets.values()] == ["w0", "w1"]
    found = list(sets.values())
    assert matched_tags(found, {"text": "I'd like to Switch\tProvider and RENEW"}) == ["w0", "w1"]
    assert matched_tags(found, {"text": "cancellation"}) == []
    assert matched_tags(found, {"keywords": ("switch", "provider")}) == []
    assert matched_tags(found, {"phrases": ("please cancel it",)}) == ["w0"]
    # Words are escaped: a phrase with regex characters matches itself only.
    (dotted,) = phrase_sets([("a.b",)]).values()
    assert matched_tags([dotted], {"text": "a.b"}) == ["w0"]
    assert matched_tags([dotted], {"text": "axb"}) == []


MOMENTS = """
moments:
  - id: count
    pattern: {count: 3, within: 2m, event: sentiment, where: value < -0.5}
    guidance: {kind: coaching, title: t, text: x}
  - id: sequence
    pattern:
      sequence:
        - {event: hold_ended, where: duration_s >= 180}
        - {event: utterance, says: [sorry], within: 30s}
    guidance: {kind: coaching, title: t, text: x}
  - id: absence
    pattern:
      after: {event: intent_changed, where: intent == "payment"}
      missing: {event: agent_action, where: action == "disclosure_read"}
      within: 60s
    guidance: {kind: compliance, title: t, text: x}
"""


def test_each_pattern_states_order_and_windows_explicitly(tmp_path: Path) -> None:
    program = compile_moments(compiled(tmp_path, MOMENTS).source.moments)
    count, sequence, anchor, absence = program.rules
    assert [s.alias for s in count.steps] == ["e0", "e1", "g1", "e2", "g2"]
    assert [s.negated for s in count.steps] == [False, False, True, False, True]
    e2 = count.steps[3].test["$and"]
    assert {"$gt": {"seq": {"e1": "seq"}}} in e2
    assert {"$lt": {"t": {"$add": {"$l": {"e0": "t"}, "$r": 120.0}}}} in e2
    g2 = count.steps[4].test["$and"]
    assert {"$gt": {"seq": {"e1": "seq"}}} in g2 and {"$lt": {"seq": {"e2": "seq"}}} in g2
    # The later sequence step names its own window, after the step before it.
    e1 = sequence.steps[1].test["$and"]
    assert {"$lt": {"t": {"$add": {"$l": {"e0": "t"}, "$r": 30.0}}}} in e1
    assert {"$iany": {"says": {"$i": "w0"}}} in e1
    assert (anchor.role, absence.role) == (ANCHOR, DETECT)
    assert [s.kind for s in absence.steps] == ["intent_changed", DEADLINE, "agent_action"]
    assert absence.steps[2].negated
    assert (count.aliases, absence.aliases) == (("e0", "e1", "e2"), ("a",))
    assert program.horizon == 120.0


def test_facts_carry_only_what_steps_test(tmp_path: Path) -> None:
    program = compile_moments(compiled(tmp_path, MOMENTS).source.moments)
    assert program.carried == {
        "sentiment": ("value",),
        "hold_ended": ("duration_s",),
        "utterance": (),
        "intent_changed": ("intent",),
        "agent_action": ("action",),
    }


def test_references_come_before_or_groups_and_end_with_an_implied_one(tmp_path: Path) -> None:
    # Around durable_rules 2.0.28's expression-sequence bugs (definitions.step_test).
    moments = """
    moments:
      - id: s
        pattern:
          sequence:
            - {event: hold_ended}
            - {event: sentiment, where: 'value < 0 or speaker == "agent"', within: 60s}
        guidance: {kind: coaching, title: t, text: x}
    """
    (rule,) = compile_moments(compiled(tmp_path, moments).source.moments).rules
    chain = rule.steps[1].test["$and"]
    assert chain[0] == {"kind": "sentiment"}
    assert chain[1:4] == [
        {"$gt": {"seq": {"e0": "seq"}}},
        {"$lt": {"t": {"$add": {"$l": {"e0": "t"}, "$r": 60.0}}}},
        {"$gte": {"seq": {"e0": "seq"}}},
    ]
    assert "$or" in chain[4]
