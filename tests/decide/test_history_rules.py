"""Rules over the offer history: max_acceptances, days_since_outcome(), and arbitration
policy precedence (which policy's `first` wins when several hold)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from decision_engine.authoring.check import check_rules
from decision_engine.decide.engine import decide
from decision_engine.decide.facts import build_facts
from decision_engine.decide.values import Context, CustomerState, Decision, OfferEvent
from decision_engine.errors import RulesetError
from decision_engine.ruleset.compiled import CompiledRuleset, load_compiled
from decision_engine.ruleset.expr import parse, render

NOW = 1_790_000_000.0
DAY = 86_400.0
KEY = 'days_since_outcome(category="retention", outcome="declined")'

BASE = """\
schema:
  profile:
    clv: {type: number, min: 0}
  intents: [cancel, lost_card]
routing:
  default: {queue: general}
"""

OFFERS = """\
offers:
  - id: credit
    category: retention
    value: 100
    script: Credit
  - id: review
    category: retention
    value: 50
    script: Review
  - id: card
    category: service
    value: 10
    script: Card
  - id: upgrade
    category: upsell
    value: 30
    script: Upgrade
"""


def rules(tmp_path: Path, body: str) -> Path:
    directory = tmp_path / "rules"
    directory.mkdir(exist_ok=True)
    (directory / "base.yaml").write_text(BASE)
    (directory / "offers.yaml").write_text(OFFERS)
    (directory / "rules.yaml").write_text(textwrap.dedent(body))
    return directory


def run(
    ruleset: CompiledRuleset,
    history: dict[str, tuple[OfferEvent, ...]] | None = None,
    *,
    intent: str = "cancel",
    explain: bool = False,
) -> Decision:
    return decide(
        ruleset,
        state=CustomerState({"clv": "1000"}, (), history or {}),
        context=Context(channel="voice", intent=intent),
        now=NOW,
        decision_id="d",
        max_offers=4,
        explain=explain,
    )


def ago(days: float, outcome: str) -> OfferEvent:
    return OfferEvent(NOW - days * DAY, outcome)


def load_errors(directory: Path) -> list[str]:
    with pytest.raises(RulesetError) as info:
        load_compiled(directory)
    return [f"{Path(p.file).name}:{p.line}:{p.column}: {p.message}" for p in info.value.problems]


# -- max_acceptances ---------------------------------------------------------------------


ONCE_A_YEAR = """\
arbitration:
  contact_policies:
    - id: credit-once-a-year
      categories: [retention]
      max_acceptances: {count: 1, within_days: 365}
"""


def test_an_acceptance_within_the_window_suppresses_the_category(tmp_path: Path) -> None:
    ruleset = load_compiled(rules(tmp_path, ONCE_A_YEAR))
    decision = run(ruleset, {"review": (ago(364, "presented"), ago(364, "accepted"))}, explain=True)
    assert [o.offer_id for o in decision.offers] == ["upgrade", "card"]
    assert decision.suppressed_by == ("credit-once-a-year",)
    details = {e.rule_id: e.detail for e in decision.explanations if e.kind == "offer"}
    assert details["credit"] == (
        "suppressed by contact policy credit-once-a-year: accepted 1 time in 365 days (at most 1)"
    )


def test_an_acceptance_older_than_the_window_or_a_decline_does_not(tmp_path: Path) -> None:
    ruleset = load_compiled(rules(tmp_path, ONCE_A_YEAR))
    history = {"credit": (ago(366, "accepted"), ago(2, "declined"), ago(2, "presented"))}
    assert [o.offer_id for o in run(ruleset, history).offers][:2] == ["credit", "review"]


def test_max_acceptances_counts_up_to_its_count(tmp_path: Path) -> None:
    body = ONCE_A_YEAR.replace("count: 1", "count: 2")
    ruleset = load_compiled(rules(tmp_path, body))
    assert "credit" in [o.offer_id for o in run(ruleset, {"credit": (ago(10, "accepted"),)}).offers]
    twice = {"credit": (ago(10, "accepted"),), "review": (ago(5, "accepted"),)}
    decision = run(ruleset, twice, explain=True)
    assert "credit" not in [o.offer_id for o in decision.offers]
    assert any(
        "accepted 2 times in 365 days (at most 2)" in e.detail for e in decision.explanations
    )


def test_an_offers_own_policy_takes_max_acceptances(tmp_path: Path) -> None:
    directory = rules(tmp_path, "")
    text = OFFERS.replace(
        "    script: Credit\n",
        "    script: Credit\n    contact_policy:\n"
        "      max_acceptances: {count: 1, within_days: 365}\n",
    )
    (directory / "offers.yaml").write_text(text)
    ruleset = load_compiled(directory)
    ids = [o.offer_id for o in run(ruleset, {"credit": (ago(100, "accepted"),)}).offers]
    assert "credit" not in ids and "review" in ids


def test_max_acceptances_needs_count_and_within_days(tmp_path: Path) -> None:
    body = ONCE_A_YEAR.replace("{count: 1, within_days: 365}", "{count: 1}")
    assert load_errors(rules(tmp_path, body)) == [
        "rules.yaml:5:24: max_acceptances needs count and within_days, "
        "e.g. {count: 2, within_days: 30}"
    ]


def test_rules_check_warns_when_a_window_outlives_the_history(tmp_path: Path) -> None:
    body = ONCE_A_YEAR.replace("within_days: 365", "within_days: 730")
    report = check_rules(rules(tmp_path, body), trial_moments=False)
    assert [(Path(w.file).name, w.line, w.message) for w in report.warnings] == [
        (
            "rules.yaml",
            3,
            "contact policy credit-once-a-year: max_acceptances looks back 730 days, but offer "
            "history is kept 400 days; outcomes older than that are not counted; use at most "
            "400 days",
        )
    ]
    assert not check_rules(rules(tmp_path, ONCE_A_YEAR), trial_moments=False).warnings


# -- days_since_outcome() ----------------------------------------------------------------


NO_UPSELL_AFTER_DECLINE = f"""\
arbitration:
  policies:
    - id: no-upsell-after-decline
      when: {KEY} <= 14
      suppress: [upsell]
"""


def test_days_since_outcome_is_the_latest_matching_outcome(tmp_path: Path) -> None:
    ruleset = load_compiled(rules(tmp_path, NO_UPSELL_AFTER_DECLINE))
    history = {
        "credit": (ago(30, "declined"), ago(1, "accepted")),
        "review": (ago(9.5, "declined"),),
        "card": (ago(0.5, "declined"),),  # another category
    }
    state = CustomerState({"clv": "1000"}, (), history)
    facts = build_facts(ruleset, state, Context(channel="voice"), now=NOW)
    assert facts[KEY] == pytest.approx(9.5)
    assert "upgrade" not in [o.offer_id for o in run(ruleset, history).offers]
    assert "upgrade" in [
        o.offer_id for o in run(ruleset, {"review": (ago(15, "declined"),)}).offers
    ]


def test_without_such_an_outcome_the_value_is_absent(tmp_path: Path) -> None:
    ruleset = load_compiled(rules(tmp_path, NO_UPSELL_AFTER_DECLINE))
    history = {"credit": (ago(1, "accepted"),), "card": (ago(1, "declined"),)}
    state = CustomerState({"clv": "1000"}, (), history)
    assert KEY not in build_facts(ruleset, state, Context(channel="voice"), now=NOW)
    decision = run(ruleset, history, explain=True)
    assert "upgrade" in [o.offer_id for o in decision.offers]
    policy = next(e for e in decision.explanations if e.kind == "policy")
    assert policy.detail == (f"{KEY} is absent: no such outcome in the offer history ({KEY} <= 14)")
    # The store could not be read: absent too, never an error.
    degraded = decide(
        ruleset, state=None, context=Context(channel="voice"), now=NOW, decision_id="d"
    )
    assert degraded.offers


def test_offer_and_any_outcome_and_exists(tmp_path: Path) -> None:
    body = """\
    offers:
      - id: winback
        category: winback
        when:
          - days_since_outcome(offer="credit") < 60
          - not exists(days_since_outcome(offer="upgrade", outcome="accepted"))
        value: 1000
        script: Welcome back
    """
    ruleset = load_compiled(rules(tmp_path, body))
    recent = {"credit": (ago(20, "presented"),)}
    assert run(ruleset, recent).offers[0].offer_id == "winback"
    assert run(ruleset, {"credit": (ago(61, "presented"),)}).offers[0].offer_id != "winback"
    bought = {**recent, "upgrade": (ago(300, "accepted"),)}
    assert "winback" not in [o.offer_id for o in run(ruleset, bought).offers]


def test_values_are_computed_only_for_rulesets_that_use_them(tmp_path: Path) -> None:
    ruleset = load_compiled(rules(tmp_path, ONCE_A_YEAR))
    assert ruleset.outcome_lookups == ()
    state = CustomerState({"clv": "1000"}, (), {"credit": (ago(1, "declined"),)})
    facts = build_facts(ruleset, state, Context(channel="voice"), now=NOW)
    assert not any(name.startswith("days_since_outcome") for name in facts)


def test_the_call_parses_and_renders_back() -> None:
    text = 'days_since_outcome(offer="credit", outcome="no_response") >= 3'
    assert render(parse(text)) == text


@pytest.mark.parametrize(
    ("condition", "at", "message"),
    [
        (
            'days_since_outcome(category="retention_")',
            '"retention_"',
            "no offer has category 'retention_' (did you mean 'retention'?)",
        ),
        (
            'days_since_outcome(offer="credi")',
            '"credi"',
            "no offer has id 'credi' (did you mean 'credit'?)",
        ),
        (
            'days_since_outcome(category="retention", outcome="refused")',
            '"refused"',
            "unknown outcome 'refused'",
        ),
        ("days_since_outcome()", "days", 'takes category="..." or offer="..."'),
        (
            'days_since_outcome(category="retention", offer="credit")',
            "days",
            'takes category="..." or offer="..."',
        ),
        ("days_since_outcome(category=retention)", "retention)", "category= takes a quoted name"),
        ('days(category="retention")', "days", "unknown function 'days'"),
        ('days_since(category="retention")', '"retention"', "takes no keyword arguments"),
    ],
)
def test_names_are_checked_at_load_time_with_their_location(
    tmp_path: Path, condition: str, at: str, message: str
) -> None:
    body = f"""\
    arbitration:
      policies:
        - id: p
          when: {condition} <= 14
          suppress: [upsell]
    """
    errors = load_errors(rules(tmp_path, body))
    assert len(errors) == 1, errors
    column = len("      when: ") + 1 + condition.index(at)
    assert errors[0].startswith(f"rules.yaml:4:{column}: policy p: "), errors
    assert message in errors[0]


def test_moment_conditions_cannot_read_the_offer_history(tmp_path: Path) -> None:
    body = """\
    moments:
      - id: m
        pattern: {event: utterance}
        when: days_since_outcome(category="retention") < 3
        guidance: {kind: coaching, title: T, text: X}
    """
    errors = load_errors(rules(tmp_path, body))
    assert any("moment conditions do not see" in e for e in errors), errors


# -- arbitration policy precedence --------------------------------------------------------


def policies(security: str = "", retention: str = "") -> str:
    return f"""\
    arbitration:
      policies:
        - id: retention-first
          when: intent == "cancel"
          first: [retention]
          suppress: [upsell]{retention}
        - id: security-first
          when: intent == "cancel"
          first: [service]{security}
    """


def test_without_precedence_the_policy_listed_first_wins(tmp_path: Path) -> None:
    ruleset = load_compiled(rules(tmp_path, policies()))
    decision = run(ruleset)
    assert [o.category for o in decision.offers] == ["retention", "retention", "service"]
    assert decision.offers[0].reasons[-1] == "retention first: policy retention-first"


def test_the_lowest_precedence_wins_whatever_the_order(tmp_path: Path) -> None:
    body = policies(security="\n          precedence: 10", retention="\n          precedence: 20")
    ruleset = load_compiled(rules(tmp_path, body))
    decision = run(ruleset, explain=True)
    assert [o.category for o in decision.offers] == ["service", "retention", "retention"]
    assert decision.offers[0].reasons[-1] == "service first: policy security-first"
    # suppress is the union of the policies that hold, whichever wins
    assert "upgrade" not in [o.offer_id for o in decision.offers]
    assert [e.rule_id for e in decision.explanations if e.kind == "policy"] == [
        "security-first",
        "retention-first",
    ]


def test_precedence_is_checked_like_routings(tmp_path: Path) -> None:
    errors = load_errors(rules(tmp_path, policies(security="\n          precedence: -1")))
    assert errors == ["rules.yaml:10:19: precedence must be between 0 and 1e+06, got -1"]


def test_rules_check_warns_about_equal_precedences_that_can_both_hold(tmp_path: Path) -> None:
    report = check_rules(rules(tmp_path, policies()), trial_moments=False)
    assert [(w.line, w.message) for w in report.warnings] == [
        (
            7,
            "policies retention-first (" + str(tmp_path / "rules" / "rules.yaml") + ":3:7) and "
            "security-first both have precedence 100, can hold for the same interaction and put "
            "different categories first; retention-first wins today only because it comes "
            "first; give them distinct precedences",
        )
    ]
    explicit = policies(security="\n          precedence: 10")
    assert not check_rules(rules(tmp_path, explicit), trial_moments=False).warnings


def test_no_warning_when_the_policies_cannot_both_hold(tmp_path: Path) -> None:
    body = policies().replace(
        '- id: security-first\n          when: intent == "cancel"',
        '- id: security-first\n          when: intent == "lost_card"',
    )
    assert 'intent == "lost_card"' in body
    assert not check_rules(rules(tmp_path, body), trial_moments=False).warnings
