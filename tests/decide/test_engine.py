"""The pure decision core on the demo ruleset: the seven situations, and its guarantees.

Expected numbers are derived from rules/*.yaml: score = propensity x value x weight x lever.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from decision_engine.decide.engine import decide, prepare
from decision_engine.decide.values import Contact, Context, CustomerState, Decision
from decision_engine.ruleset.compiled import CompiledRuleset, load_compiled

RULES = Path(__file__).resolve().parents[2] / "rules"
NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC).timestamp()
TODAY = date(2025, 3, 10)
DAY = 86_400.0

UPSELLING = ("upsell", "cross_sell")

# An ordinary customer: every upsell and cross-sell offer of the demo is open to them.
ORDINARY = {
    "clv": "3000",
    "churn_risk": "0.2",
    "segment": "gold",
    "plan": "standard",
    "tenure_months": "30",
    "cost_to_serve": "100",
    "first_name": "Anna",
}


@pytest.fixture(scope="module")
def ruleset() -> CompiledRuleset:
    return load_compiled(RULES)


def run(
    ruleset: CompiledRuleset,
    profile: Mapping[str, str] | None,
    *,
    contacts: tuple[Contact, ...] = (),
    interaction_id: str = "",
    max_offers: int = 0,
    explain: bool = False,
    channel: str = "voice",
    intent: str = "general_inquiry",
    sentiment: float | None = None,
    attributes: Mapping[str, str] | None = None,
) -> Decision:
    return decide(
        ruleset,
        state=CustomerState(profile, contacts),
        context=Context(
            channel=channel, intent=intent, sentiment=sentiment, attributes=attributes or {}
        ),
        now=NOW,
        decision_id="d-1",
        interaction_id=interaction_id,
        max_offers=max_offers,
        explain=explain,
    )


def ids(decision: Decision) -> list[str]:
    return [o.offer_id for o in decision.offers]


def categories(decision: Decision) -> set[str]:
    return {o.category for o in decision.offers}


def days_ago(days: float) -> float:
    return NOW - days * DAY


def test_the_ordinary_customer_is_offered_upsells(ruleset: CompiledRuleset) -> None:
    # The suppression tests below mean something only if upsells are there otherwise.
    decision = run(ruleset, ORDINARY)
    assert categories(decision) >= {"upsell", "cross_sell"}


# -- 1: high value, high churn risk, wants to cancel ---------------------------------------


def test_high_value_cancel_goes_to_retention_specialists(ruleset: CompiledRuleset) -> None:
    profile = {**ORDINARY, "clv": "12000", "churn_risk": "0.8", "tenure_months": "40"}
    decision = run(ruleset, profile, intent="cancel")

    assert decision.routing.queue == "retention_specialists"
    assert decision.routing.priority == 1
    assert decision.routing.rule_id == "retention-high-value"

    first = decision.offers[0]
    assert first.offer_id == "retention-loyalty-credit"
    assert first.category == "retention"
    # value = clv x churn_risk x 0.5; score = 0.35 x value
    assert first.value == pytest.approx(12000 * 0.8 * 0.5)
    assert first.score == pytest.approx(0.35 * 12000 * 0.8 * 0.5)
    assert first.expected_value == pytest.approx(0.35 * (12000 * 0.8 * 0.5 - 300))
    # credit = min(round(clv x 0.001) x 10, 1000)
    assert "loyalty credit of EUR 120 " in first.script
    assert first.script.startswith("Anna, you have been with us for 40 months")
    assert "retention first: policy cancel-retention-first" in first.reasons
    assert first.rule_ids == ("retention-loyalty-credit", "cancel-retention-first")
    assert not categories(decision) & set(UPSELLING)


@pytest.mark.parametrize(("clv", "credit"), [("5000", "50"), ("47000", "470"), ("250000", "1,000")])
def test_retention_credit_scales_with_clv(ruleset: CompiledRuleset, clv: str, credit: str) -> None:
    decision = run(ruleset, {**ORDINARY, "clv": clv, "churn_risk": "0.9"}, intent="cancel")
    (offer,) = (o for o in decision.offers if o.offer_id == "retention-loyalty-credit")
    assert f"loyalty credit of EUR {credit} " in offer.script


def test_cancel_below_the_specialist_thresholds_goes_to_retention(
    ruleset: CompiledRuleset,
) -> None:
    # churn 0.5 < 0.6: not for specialists, but clv >= 1500 and cancel: the retention team
    decision = run(ruleset, {**ORDINARY, "clv": "12000", "churn_risk": "0.5"}, intent="cancel")
    assert (decision.routing.queue, decision.routing.priority) == ("retention", 3)


# -- 2: low value, expensive to serve ------------------------------------------------------


@pytest.mark.parametrize("intent", ["cancel", "billing_dispute"])
def test_low_value_high_cost_is_steered_to_self_service(
    ruleset: CompiledRuleset, intent: str
) -> None:
    profile = {
        **ORDINARY,
        "clv": "500",
        "cost_to_serve": "400",
        "churn_risk": "0.9",
        "segment": "bronze",
    }
    decision = run(ruleset, profile, intent=intent)
    costs = {o.spec.id: o.spec.cost for o in ruleset.offers}

    assert decision.routing.queue == "digital_assist"
    assert decision.routing.rule_id == "self-service-steer"
    assert "retention-loyalty-credit" not in ids(decision)
    assert all(costs[offer_id] <= 50 for offer_id in ids(decision))
    # service goes first; 0.5 x 400 x 0.3 beats every other score
    assert decision.offers[0].offer_id == "digital-self-service"
    assert decision.offers[0].score == pytest.approx(0.5 * 400 * 0.3)


# -- 3: lost or stolen card ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("intent", "attributes"),
    [
        ("lost_card", {}),
        ("general_inquiry", {"card_status": "lost"}),
        ("general_inquiry", {"card_status": "stolen"}),
        # security wins over a valuable customer who wants to leave (precedence 10 < 30)
        ("cancel", {"card_status": "stolen"}),
    ],
)
def test_lost_card_goes_straight_to_card_security(
    ruleset: CompiledRuleset, intent: str, attributes: dict[str, str]
) -> None:
    profile = {**ORDINARY, "clv": "20000", "churn_risk": "0.9"}
    decision = run(ruleset, profile, intent=intent, attributes=attributes)
    assert decision.routing.queue == "card_security"
    assert decision.routing.priority == 1
    assert decision.routing.skip_ivr is True
    assert "card-replacement-express" in ids(decision)
    if intent != "cancel":  # on a cancel call the retention policy puts retention first too
        assert decision.offers[0].offer_id == "card-replacement-express"
    assert not categories(decision) & set(UPSELLING)


@pytest.mark.parametrize("status", ["active", "blocked", "not-a-status", ""])
def test_other_card_statuses_are_not_a_security_event(
    ruleset: CompiledRuleset, status: str
) -> None:
    decision = run(ruleset, ORDINARY, attributes={"card_status": status})
    assert decision.routing.queue == "general"
    assert decision.routing.skip_ivr is False
    assert "card-replacement-express" not in ids(decision)


# -- 4: repeat contacts --------------------------------------------------------------------


def test_third_contact_in_a_week_is_escalated(ruleset: CompiledRuleset) -> None:
    contacts = (
        Contact("i-1", "chat", "billing_dispute", days_ago(1)),
        Contact("i-2", "email", "general_inquiry", days_ago(6.9)),
    )
    decision = run(ruleset, ORDINARY, contacts=contacts, interaction_id="i-3")
    assert decision.routing.queue == "escalations"
    assert decision.routing.priority == 2
    assert decision.routing.rule_id == "repeat-contact-escalation"
    first = decision.offers[0]
    assert first.offer_id == "service-recovery-callback"
    assert "contact us 3 times this week" in first.script


def test_contacts_older_than_seven_days_do_not_count(ruleset: CompiledRuleset) -> None:
    contacts = (
        Contact("i-1", "chat", "billing_dispute", days_ago(1)),
        Contact("i-2", "email", "general_inquiry", days_ago(7.1)),
        Contact("i-0", "sms", "general_inquiry", days_ago(30)),
    )
    decision = run(ruleset, ORDINARY, contacts=contacts, interaction_id="i-3")
    assert decision.routing.queue == "general"
    assert "service-recovery-callback" not in ids(decision)


def test_the_current_interaction_is_counted_once(ruleset: CompiledRuleset) -> None:
    stored = (
        Contact("i-1", "chat", "billing_dispute", days_ago(1)),
        Contact("i-3", "voice", "general_inquiry", NOW),  # this very interaction
    )
    decision = run(ruleset, ORDINARY, contacts=stored, interaction_id="i-3")
    assert decision.routing.queue == "general"

    one_more = (*stored, Contact("i-2", "email", "general_inquiry", days_ago(2)))
    decision = run(ruleset, ORDINARY, contacts=one_more, interaction_id="i-3")
    assert decision.routing.queue == "escalations"


# -- 5: contract ending soon ---------------------------------------------------------------


@pytest.mark.parametrize("days", [0, 45, 60])
def test_contract_ending_within_60_days_gets_a_renewal_offer(
    ruleset: CompiledRuleset, days: int
) -> None:
    end = TODAY + timedelta(days=days)
    decision = run(ruleset, {**ORDINARY, "contract_end": end.isoformat()})
    (offer,) = (o for o in decision.offers if o.offer_id == "renewal-personalized")
    assert f"your contract ends on {end.isoformat()}." in offer.script
    # discount_pct = min(5 + round(30 / 12), 15) = 7
    assert "with 8% off" in offer.script  # 5 + round(30 / 12), half away from zero
    assert offer.script.startswith("Anna, ")


@pytest.mark.parametrize("days", [-1, 61, 400])
def test_no_renewal_offer_outside_the_window(ruleset: CompiledRuleset, days: int) -> None:
    end = TODAY + timedelta(days=days)
    decision = run(ruleset, {**ORDINARY, "contract_end": end.isoformat()})
    assert "renewal-personalized" not in ids(decision)


# -- 6: complaints and negative sentiment --------------------------------------------------


@pytest.mark.parametrize(
    ("intent", "sentiment", "last_complaint_days", "queue"),
    [
        ("complaint", None, None, "customer_care"),
        ("general_inquiry", -0.3, None, "general"),
        ("general_inquiry", -0.8, None, "customer_care"),
        ("general_inquiry", None, 30, "general"),
        ("general_inquiry", 0.5, 3, "general"),
    ],
)
def test_complaints_get_service_recovery_and_no_upsell(
    ruleset: CompiledRuleset,
    intent: str,
    sentiment: float | None,
    last_complaint_days: int | None,
    queue: str,
) -> None:
    profile = dict(ORDINARY)
    if last_complaint_days is not None:
        profile["last_complaint"] = (TODAY - timedelta(days=last_complaint_days)).isoformat()
    decision = run(ruleset, profile, intent=intent, sentiment=sentiment)
    assert decision.offers[0].offer_id == "service-recovery-apology-credit"
    # credit = min(max(round(3000 x 0.005), 10), 100) = 15
    assert "goodwill credit of EUR 15 " in decision.offers[0].script
    assert not categories(decision) & set(UPSELLING)
    assert decision.routing.queue == queue


@pytest.mark.parametrize(
    ("sentiment", "last_complaint_days"), [(-0.29, None), (None, 31), (0.0, 400)]
)
def test_mild_sentiment_and_old_complaints_do_not_block_upsell(
    ruleset: CompiledRuleset, sentiment: float | None, last_complaint_days: int | None
) -> None:
    profile = dict(ORDINARY)
    if last_complaint_days is not None:
        profile["last_complaint"] = (TODAY - timedelta(days=last_complaint_days)).isoformat()
    decision = run(ruleset, profile, sentiment=sentiment)
    assert "service-recovery-apology-credit" not in ids(decision)
    assert categories(decision) & set(UPSELLING)


# -- 7: nothing special --------------------------------------------------------------------


def test_ordinary_contact_goes_to_general_with_offers_by_score(ruleset: CompiledRuleset) -> None:
    decision = run(ruleset, ORDINARY)
    assert decision.routing.queue == "general"
    assert decision.routing.priority == 5
    assert decision.routing.rule_id == "default"
    scores = [o.score for o in decision.offers]
    assert scores == sorted(scores, reverse=True)
    # upgrade: 0.12 x (3000 x 0.15) x 1.2 (voice); device: 0.1 x 400; bundle: 0.15 x 240
    assert ids(decision) == ["upgrade-premium-plan", "device-upgrade", "streaming-bundle"]
    assert scores == pytest.approx([0.12 * 450 * 1.2, 0.1 * 400, 0.15 * 240])
    assert 'weight x1.2: channel == "voice"' in decision.offers[0].reasons


def test_the_voice_weight_applies_on_voice_only(ruleset: CompiledRuleset) -> None:
    decision = run(ruleset, ORDINARY, channel="chat")
    upgrade = next(o for o in decision.offers if o.offer_id == "upgrade-premium-plan")
    assert upgrade.score == pytest.approx(0.12 * 450)


def test_offers_are_limited_to_their_channels(ruleset: CompiledRuleset) -> None:
    # the streaming bundle is for voice, chat, app and web only
    assert "streaming-bundle" in ids(run(ruleset, ORDINARY, channel="web"))
    assert "streaming-bundle" not in ids(run(ruleset, ORDINARY, channel="email"))


def test_max_offers_is_respected(ruleset: CompiledRuleset) -> None:
    # four offers are eligible once the contract ends soon; renewal scores 0.4 x 3000 x 0.25
    profile = {**ORDINARY, "contract_end": (TODAY + timedelta(days=30)).isoformat()}
    assert ruleset.source.max_offers == 3
    decision = run(ruleset, profile)
    assert ids(decision) == ["renewal-personalized", "upgrade-premium-plan", "device-upgrade"]
    assert ids(run(ruleset, profile, max_offers=2)) == ids(decision)[:2]
    assert len(run(ruleset, profile, max_offers=10).offers) == 4


# -- unknown customers, determinism, explanations, templates -------------------------------


@pytest.mark.parametrize("state", [None, CustomerState(None)])
def test_unknown_customer_decides_from_context(
    ruleset: CompiledRuleset, state: CustomerState | None
) -> None:
    decision = decide(
        ruleset,
        state=state,
        context=Context(channel="voice", intent="lost_card"),
        now=NOW,
        decision_id="d-2",
    )
    assert decision.profile_found is False
    assert decision.decision_id == "d-2"
    assert decision.routing.queue == "card_security"
    assert ids(decision) == ["card-replacement-express"]


def test_unknown_customer_with_recent_contacts_is_escalated(ruleset: CompiledRuleset) -> None:
    contacts = tuple(Contact(f"i-{i}", "chat", "cancel", days_ago(i)) for i in (1, 2))
    decision = run(ruleset, None, contacts=contacts, intent="cancel")
    assert decision.profile_found is False
    assert decision.routing.queue == "escalations"
    # nothing that depends on the unknown clv is offered
    assert "retention-loyalty-credit" not in ids(decision)


def test_known_customer_has_profile_found(ruleset: CompiledRuleset) -> None:
    assert run(ruleset, ORDINARY).profile_found is True


def test_decisions_are_deterministic(ruleset: CompiledRuleset) -> None:
    profile = {**ORDINARY, "contract_end": (TODAY + timedelta(days=30)).isoformat()}
    contacts = (Contact("i-1", "chat", "complaint", days_ago(1)),)
    first = run(ruleset, profile, contacts=contacts, explain=True, sentiment=-0.1)
    second = run(ruleset, dict(profile), contacts=contacts, explain=True, sentiment=-0.1)
    assert first == second
    assert first.ruleset_version == ruleset.version


def test_explain_gives_the_failing_condition_with_actual_values(
    ruleset: CompiledRuleset,
) -> None:
    decision = run(ruleset, {**ORDINARY, "clv": "180"}, intent="cancel", explain=True)
    explained = {(e.kind, e.rule_id): e for e in decision.explanations}

    credit = explained["offer", "retention-loyalty-credit"]
    assert credit.matched is False
    assert credit.detail == "clv 180 is not >= 5000"

    review = explained["offer", "retention-plan-review"]
    assert review.matched is True
    assert review.detail.startswith("score ")

    upgrade = explained["offer", "upgrade-premium-plan"]
    assert upgrade.matched is False
    assert upgrade.detail == "suppressed by policy cancel-retention-first (upsell)"

    assert explained["routing", "retention-high-value"].detail == "clv 180 is not >= 10000"
    assert explained["policy", "cancel-retention-first"].matched is True
    # every offer, routing rule and policy is explained
    assert len(decision.explanations) == (
        len(ruleset.offers) + len(ruleset.routes) + len(ruleset.policies)
    )


def test_explain_names_absent_fields(ruleset: CompiledRuleset) -> None:
    decision = run(ruleset, {"first_name": "Bo"}, explain=True)
    explained = {(e.kind, e.rule_id): e.detail for e in decision.explanations}
    assert explained["offer", "streaming-bundle"].startswith("tenure_months is absent")


def test_no_explanations_unless_asked(ruleset: CompiledRuleset) -> None:
    assert run(ruleset, {**ORDINARY, "clv": "180"}, intent="cancel").explanations == ()


def test_template_fallback_when_first_name_is_absent(ruleset: CompiledRuleset) -> None:
    profile = {k: v for k, v in ORDINARY.items() if k != "first_name"}
    profile |= {"clv": "12000", "churn_risk": "0.8", "tenure_months": "40"}
    decision = run(ruleset, profile, intent="cancel")
    assert decision.offers[0].offer_id == "retention-loyalty-credit"
    assert decision.offers[0].script.startswith("Thank you, you have been with us for 40 months")


def test_profile_values_that_do_not_fit_the_schema_are_left_out_and_named(
    ruleset: CompiledRuleset,
) -> None:
    junk = {"clv": "abc", "contract_end": "notadate", "tenure_months": "nan", "churn_risk": "inf"}
    d = run(ruleset, {**ORDINARY, **junk}, explain=True)
    assert sorted(d.unparsed_fields) == sorted(junk)
    assert d.profile_found
    # Absent, as if never stored: nan and inf are not read as numbers.
    why = {e.rule_id: e.detail for e in d.explanations}
    assert why["streaming-bundle"] == "tenure_months is absent (tenure_months >= 12)"
    assert why["upgrade-premium-plan"] == "churn_risk is absent (churn_risk < 0.5)"
    assert run(ruleset, ORDINARY).unparsed_fields == ()


def test_an_offer_this_customer_had_their_share_of_today_is_kept_out(
    ruleset: CompiledRuleset,
) -> None:
    device = "device-upgrade"
    assert device in ids(run(ruleset, ORDINARY))
    d = decide(
        ruleset,
        state=CustomerState(ORDINARY),
        context=Context(channel="voice", intent="general_inquiry"),
        now=NOW,
        decision_id="d-1",
        customer_spent=frozenset({device}),
        explain=True,
    )
    assert device not in ids(d) and d.offers
    assert f"{device}/daily-cap-per-customer" in d.suppressed_by
    (why,) = [e.detail for e in d.explanations if e.rule_id == device]
    assert "at most 1 per customer per day" in why


def test_a_prepared_decision_is_the_same_decision(ruleset: CompiledRuleset) -> None:
    """Cap retries prepare the facts once: deciding from them changes nothing."""
    state = CustomerState(ORDINARY)
    context = Context(channel="voice", intent="general_inquiry", sentiment=None, attributes={})
    prepared = prepare(ruleset, state=state, context=context, now=NOW, interaction_id="i-1")

    def both(exhausted: frozenset[str]) -> tuple[Decision, Decision]:
        fresh, again = (
            decide(
                ruleset,
                state=state,
                context=context,
                now=NOW,
                decision_id="d-1",
                interaction_id="i-1",
                explain=True,
                exhausted=exhausted,
                prepared=reuse,
            )
            for reuse in (None, prepared)
        )
        return fresh, again

    fresh, again = both(frozenset())
    assert fresh == again and fresh.offers
    for exhausted in (frozenset(ids(fresh)[:1]), frozenset(o.spec.id for o in ruleset.offers)):
        fresh, again = both(exhausted)
        assert fresh == again
