"""Reading the moments section: every mistake is reported at file:line:col with a reason."""

# The tables below pair each mistake with the whole message a user reads: long lines.
# ruff: noqa: E501

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from decision_engine.errors import RulesetError
from decision_engine.ruleset.durations import DurationError, format_duration, parse_duration
from decision_engine.ruleset.load import load_ruleset
from decision_engine.ruleset.spec import ABSENCE, COUNT, EVENT, SEQUENCE

DEMO = Path(__file__).resolve().parents[2] / "rules"
GUIDE = "    guidance: {kind: coaching, title: t, text: x}\n"


def rules(tmp_path: Path, moments: str) -> Path:
    for name in ("ruleset.yaml", "routing.yaml", "offers.yaml", "arbitration.yaml"):
        shutil.copy(DEMO / name, tmp_path / name)
    (tmp_path / "moments.yaml").write_text(textwrap.dedent(moments).lstrip("\n"), encoding="utf-8")
    return tmp_path


def problems(tmp_path: Path, moments: str) -> list[str]:
    """Each problem as `line:col: message` (all are in moments.yaml)."""
    with pytest.raises(RulesetError) as caught:
        load_ruleset(rules(tmp_path, moments))
    out = []
    for p in caught.value.problems:
        assert p.file == str(tmp_path / "moments.yaml"), p
        out.append(f"{p.line}:{p.column}: {p.message}")
    return out


def moment(pattern: str, rest: str = GUIDE) -> str:
    return f"moments:\n  - id: m\n    pattern: {pattern}\n{rest}"


def at(text: str, line: int, anchor: str, message: str) -> str:
    """`line:col: message`, the column being where `anchor` starts on that line."""
    column = text.splitlines()[line - 1].index(anchor) + 1
    return f"{line}:{column}: {message}"


def test_without_a_moments_section_there_are_none(tmp_path: Path) -> None:
    directory = rules(tmp_path, "moments: []\n")
    (directory / "moments.yaml").unlink()
    assert load_ruleset(directory).moments == ()


def test_every_shape_reads(tmp_path: Path) -> None:
    text = (
        "moments:\n"
        "  - id: one\n"
        '    pattern: {event: utterance, says: [Cancel, "  Switch   Provider "]}\n'
        + GUIDE
        + "  - id: count\n"
        "    pattern: {count: 3, within: 2m, event: sentiment, where: value < -0.5}\n"
        + GUIDE
        + "  - id: sequence\n"
        "    pattern:\n"
        "      sequence:\n"
        "        - {event: hold_ended, where: duration_s >= 180}\n"
        "        - {event: sentiment, within: 1.5m}\n" + GUIDE + "  - id: absence\n"
        "    pattern:\n"
        '      after: {event: intent_changed, where: intent == "payment"}\n'
        '      missing: {event: agent_action, where: action == "disclosure_read"}\n'
        "      within: 60s\n"
        "    repeat: {cooldown: 5m}\n" + GUIDE
    )
    loaded = load_ruleset(rules(tmp_path, text)).moments
    assert [m.pattern.shape for m in loaded] == [EVENT, COUNT, SEQUENCE, ABSENCE]
    assert loaded[0].pattern.steps[0].says == ("cancel", "switch provider")
    assert (loaded[1].pattern.count, loaded[1].pattern.within) == (3, 120.0)
    assert loaded[2].pattern.steps[1].within == 90.0 and loaded[2].pattern.span == 90.0
    assert (loaded[3].once, loaded[3].cooldown) == (False, 300.0)
    assert loaded[0].once and loaded[0].guidance.severity == "info"


WHERE_HINT = (
    "moment m where: a step's `where` compares the event's fields with values (value < -0.3, "
    'action == "disclosure_read", intent in ["payment"]); arithmetic, functions and other '
    "fields belong in the moment's `when`"
)
INTENTS = "cancel, billing_dispute, lost_card, complaint, upgrade, general_inquiry, payment"


@pytest.mark.parametrize(
    ("pattern", "anchor", "message"),
    [
        ("{event: utterence}", "utterence", "moment m: unknown event 'utterence' (did you mean "
         "'utterance'?) (events: started, utterance, sentiment, hold_started, hold_ended, "
         "silence, ivr_step, intent_changed, agent_action, ended)"),
        ("{event: hold_ended, says: [x]}", "[x]", "moment m: `says` is for utterance events, not hold_ended"),
        ("{count: 3, within: 60, event: sentiment}", "60", "moment m within: '60' has no unit: write 60s, 60m or 60h"),
        ("{count: 3, within: 5 minutes, event: sentiment}", "5 minutes", "moment m within: '5 minutes' is not a duration: write a number and a unit, e.g. 45s, 3m, 2h, 7d"),
        ("{count: 3, within: 0.5s, event: sentiment}", "0.5s", "moment m within must be between 1s and 24h, got 0.5s"),
        ("{count: 30, within: 1m, event: sentiment}", "30", "moment m count must be between 2 and 10, got 30"),
        ("{count: 3, event: sentiment}", "{", "moment m: a count needs `within`, e.g. within: 60s"),
        ("{count: 2, within: 1m, event: ended}", "ended", "moment m: an interaction has one ended event"),
        ("{event: sentiment, where: value < -2}", "-2", "moment m where (sentiment): -2 is outside the range of value (-1..1)"),
        ("{event: sentiment, where: valu < 0}", "valu", "moment m where (sentiment): unknown field 'valu' (did you mean 'value'?)"),
        ("{event: sentiment, where: clv > 10}", "clv", "moment m where (sentiment): unknown field 'clv'"),
        ("{event: sentiment, where: value * 2 < 1}", "<", WHERE_HINT),
        ("{event: sentiment, where: not value < 0}", "not", "moment m where: write the opposite comparison instead of `not` (value >= 0, != ...)"),
        ('{event: intent_changed, where: intent == "refund"}', '"refund"', f"moment m where (intent_changed): 'refund' is not a value of intent ({INTENTS})"),
        ("{event: hold_started, where: x == 1}", "x ==", "moment m: hold_started events have no fields to test"),
        ("{after: {event: started}, within: 1m}", "{after", "moment m: an absence pattern has `after`, `missing` and `within`"),
        ("{after: {event: ended}, missing: {event: utterance}, within: 1m}", "{event: ended}", "moment m: no deadline can pass after the interaction ended"),
        ("{sequence: [{event: hold_ended}]}", "[{", "moment m: a sequence has 2 to 8 steps, got 1"),
        ("{sequence: [{event: hold_ended, within: 1m}, {event: sentiment, within: 1m}]}", "1m}, {", "moment m: the first step starts the sequence; it has no `within`"),
        ("{sequence: [{event: hold_ended}, {event: sentiment}]}", "{event: sentiment}", "moment m: a later step of a sequence needs `within`, e.g. 60s"),
        ("{sequence: [{event: ended}, {event: sentiment, within: 1m}]}", "{event: ended}", "moment m: nothing follows the `ended` event of an interaction"),
        ("{event: sentiment, wher: value < 0}", "wher", "unknown key 'wher' in moment m pattern (event) (did you mean 'where'?)"),
    ],
)  # fmt: skip
def test_pattern_mistakes(tmp_path: Path, pattern: str, anchor: str, message: str) -> None:
    text = moment(pattern)
    assert problems(tmp_path, text) == [at(text, 3, anchor, message)]


@pytest.mark.parametrize(
    ("rest", "line", "anchor", "message"),
    [
        ("    guidance: {kind: advice, title: t, text: x}\n", 4, "advice", "moment m guidance kind must be one of offer, route, compliance, coaching, knowledge, survey"),
        ("    guidance: {kind: offer, title: t, text: x, severity: high}\n", 4, "high", "moment m severity must be one of info, warning, critical"),
        ('    guidance: {kind: offer, title: t, text: "Hi {frist_name}"}\n', 4, '{frist', "moment m guidance text: unknown placeholder {frist_name} (did you mean 'first_name'?)"),
        ('    guidance: {kind: offer, title: "{", text: x}\n', 4, '{"', "moment m guidance title: unmatched '{' (write {{ for a brace)"),
        ("    guidance: {kind: offer, text: x}\n", 4, "{kind", "moment m: guidance has no title"),
        ("", 2, "id: m", "moment m has no guidance (what should the agent see?)"),
        (GUIDE + "    when: clv > 'high'\n", 5, ">", 'moment m when: cannot compare a number with a string: clv > "high"'),
        (GUIDE + "    when: hold_s_totl > 60\n", 5, "hold_s_totl", "moment m when: unknown field 'hold_s_totl' (did you mean 'hold_s_total'?)"),
        (GUIDE + "    once: false\n", 5, "false", "moment m: once: false needs repeat: {cooldown: 2m}"),
        (GUIDE + "    once: true\n    repeat: {cooldown: 1m}\n", 5, "true", "moment m: once: true and repeat contradict each other; keep one"),
        (GUIDE + "    repeat: {cooldown: 1m, evry: 2}\n", 5, "evry", "unknown key 'evry' in moment m repeat"),
        (GUIDE + "    set: {intent: quit}\n", 5, "quit", f"moment m set: intent: 'quit' is not one of {INTENTS}"),
        (GUIDE + "    set: {clv: 3}\n", 5, "3", "moment m set: 'clv' is not a context field (it may set intent, queue, card_status)"),
        (GUIDE + "    route: {queue: retention_specialist}\n", 5, "retention", "moment m: no routing rule or default route uses queue 'retention_specialist' (did you mean 'retention_specialists'?)"),
        (GUIDE + "    route: {priority: 1}\n", 5, "{", "moment m: route needs a queue, e.g. route: {queue: retention}"),
        (GUIDE + "    decide: yes\n", 5, "yes", "moment m decide must be true or false"),
        (GUIDE + "    supersedes: [m]\n", 2, "id: m", "moment m supersedes itself"),
        (GUIDE + "    supersedes: [n]\n", 2, "id: m", "moment m supersedes 'n', which is not a moment"),
    ],
)  # fmt: skip
def test_moment_mistakes(tmp_path: Path, rest: str, line: int, anchor: str, message: str) -> None:
    text = moment("{event: ended}", rest)
    assert problems(tmp_path, text) == [at(text, line, anchor, message)]


def test_supersedes_has_no_loops_and_ids_are_unique(tmp_path: Path) -> None:
    text = (
        "moments:\n"
        "  - id: a\n    pattern: {event: ended}\n    supersedes: [b]\n" + GUIDE
        + "  - id: b\n    pattern: {event: ended}\n    supersedes: [a]\n" + GUIDE
    )  # fmt: skip
    assert problems(tmp_path, text) == [
        "2:5: moment a: supersedes goes round in a circle (a → b → a); one of them has to give way",
        "6:5: moment b: supersedes goes round in a circle (b → a → b); one of them has to give way",
    ]
    twice = "moments:\n" + ("  - id: a\n    pattern: {event: ended}\n" + GUIDE) * 2
    first = str(tmp_path / "moments.yaml") + ":2:5"
    assert problems(tmp_path, twice) == [f"5:5: duplicate moment id 'a' (first at {first})"]


def test_durations_name_their_unit() -> None:
    assert [parse_duration(t) for t in ("45s", "3m", "2h", "1.5m", " 10 s", "7d")] == [
        45,
        180,
        7200,
        90,
        10,
        7 * 86_400,
    ]
    for bad in ("60", "1m30s", "-5s", "s", "5w"):
        with pytest.raises(DurationError):
            parse_duration(bad)
    assert [format_duration(s) for s in (180, 90, 7200, 1.5, 86_400, 7 * 86_400)] == [
        "3m", "90s", "2h", "1.5s", "24h", "7d",
    ]  # fmt: skip
