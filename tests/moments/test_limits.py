"""durable_rules' C limits: moments that could exceed one are refused at file:line, and
the bounds are conservative (what they accept runs, what durable_rules refuses fails)."""

from __future__ import annotations

from pathlib import Path

import pytest

from decision_engine.errors import MomentError, RulesetError
from decision_engine.moments.definitions import (
    DETECT,
    MomentProgram,
    RulePlan,
    StepPlan,
    compile_moments,
)
from decision_engine.moments.engine import MomentEngine
from decision_engine.moments.host import Sessions
from decision_engine.moments.limits import (
    ALPHA_STACK,
    RULES,
    expressions,
    limit_problems,
    pushes,
    session_bytes,
)
from decision_engine.ruleset.compiled import load_compiled
from tests.moments.support import DEMO, Call, compiled, rules_dir


def utterance_moments(count: int) -> str:
    """`count` moments that each test four things of every customer utterance."""
    items = "".join(
        f"""
  - id: m{n}
    pattern: {{event: utterance, says: [w{n}], where: speaker == "customer" and text != "x{n}"}}
    repeat: {{cooldown: 1s}}
    guidance: {{kind: coaching, title: t, text: x}}"""
        for n in range(count)
    )
    return "moments:" + items + "\n"


def test_the_demo_is_within_every_limit() -> None:
    program = compile_moments(load_compiled(DEMO).source.moments)
    assert limit_problems(program) == []
    assert 100_000 < session_bytes(program) < 1_000_000


def test_too_many_tests_on_one_event_kind_is_refused_where_it_happens(tmp_path: Path) -> None:
    directory = rules_dir(tmp_path, utterance_moments(20))
    with pytest.raises(RulesetError) as caught:
        MomentEngine(load_compiled(directory))
    (problem,) = caught.value.problems
    # Each moment costs 4 (kind, speaker, text, says): the 16th takes the stack past 64.
    assert problem.file == str(directory / "moments.yaml")
    assert problem.line == 1 + 4 * 15 + 1
    assert "utterance" in problem.message and "64" in problem.message
    assert "error 303" in problem.message


def test_what_the_bound_accepts_runs_with_every_test_matching(tmp_path: Path) -> None:
    ruleset = compiled(tmp_path, utterance_moments(15))
    program = compile_moments(ruleset.source.moments)
    stack = 1 + sum(pushes(s.test) for r in program.rules for s in r.steps if s.kind == "utterance")
    assert stack == ALPHA_STACK - 3
    call = Call(MomentEngine(ruleset))
    call.start()
    said = " ".join(f"w{n}" for n in range(15))
    assert len(call.says(1, said)) == 15


def test_beyond_the_real_limit_durable_rules_fails_and_the_engine_says_so() -> None:
    # Bypass the check: 70 alpha nodes that all match one fact overflow durable_rules'
    # 64-entry stack (error 303), which the engine reports as a MomentError.
    rules = {
        f"r{n}": {
            "all": [{"m": {"$and": [{"kind": "x"}, {"$gt": {"v": n}}]}}],
            "run": lambda c: None,
        }
        for n in range(70)
    }
    rules["open"] = {"all": [{"m": {"kind": "$session"}}], "run": lambda c: None}
    sessions = Sessions(lambda: rules, max_live=1)
    slot = sessions.acquire()
    with pytest.raises(MomentError, match="303"):
        sessions.assert_fact(slot, {"id": "f0", "kind": "x", "v": 100})
    sessions.close()


def test_an_or_multiplies_the_tests_after_it_and_counts_its_meeting_node() -> None:
    chain = {"$and": [{"kind": "u"}, {"$or": [{"a": 1}, {"b": 2}]}, {"c": 3}]}
    assert pushes(chain) == 1 + (2 + 2) + 2 * 1
    step = {"$and": [{"kind": "u"}, {"$gt": {"seq": {"e0": "seq"}}}, {"$or": [{"a": 1}]}]}
    assert expressions(step) == 2 + 1 + 2


def test_too_many_expressions_in_one_step_is_refused(tmp_path: Path) -> None:
    groups = " and ".join(f'(value < -0.{n} or speaker == "agent")' for n in range(1, 15))
    moments = f"""
    moments:
      - id: busy
        pattern:
          sequence:
            - {{event: hold_ended}}
            - {{event: sentiment, where: '{groups}', within: 60s}}
        guidance: {{kind: coaching, title: t, text: x}}
    """
    with pytest.raises(RulesetError, match="expressions"):
        MomentEngine(compiled(tmp_path, moments))


def test_more_rules_than_one_ruleset_takes_is_refused() -> None:
    moments = load_compiled(DEMO).source.moments
    step = StepPlan("e0", "utterance", {"kind": "utterance"})
    rules = tuple(RulePlan(f"m{n}", 0, DETECT, (step,)) for n in range(RULES + 1))
    program = MomentProgram(moments, rules, (), {}, {}, 0.0)
    messages = [p.message for p in limit_problems(program)]
    assert any("at most 4096" in m for m in messages)
