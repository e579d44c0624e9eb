"""server/convert.py on its own: protobuf requests to checked plain values, and a
Decision to its wire form. Every InvalidRequestError names the field that is wrong."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine.decide.values import Context, Decision, Explanation, RankedOffer, Routing
from decision_engine.errors import InvalidRequestError
from decision_engine.server.convert import (
    MAX_ATTRIBUTE_KEY,
    MAX_ATTRIBUTES,
    MAX_CLOCK_SKEW_S,
    MAX_DECISION_ID,
    MAX_TEXT_LENGTH,
    OLDEST_OUTCOME_S,
    OutcomeRequest,
    check_against_decision,
    decision_response,
    outcome_request,
    request_context,
)
from decision_engine.store.outcomes import DecisionRecord
from decision_engine.vocabulary import CHANNELS, MAX_ID_LENGTH

NOW = 1_750_000_000.0


def decide(**fields: Any) -> pb.DecideRequest:
    """A valid DecideRequest, with `fields` (and `context=` fields) replaced."""
    context = {"channel": pb.CHANNEL_VOICE, **fields.pop("context", {})}
    return pb.DecideRequest(
        **{"customer_id": "C-1", **fields}, context=pb.InteractionContext(**context)
    )


def refused(request: pb.DecideRequest) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        request_context(request)
    return caught.value


# --- request_context ---------------------------------------------------------------------


def test_a_full_request_becomes_its_context() -> None:
    ctx = request_context(
        decide(
            interaction_id="call-7",
            max_offers=3,
            context={
                "channel": pb.CHANNEL_CHAT,
                "intent": "cancel",
                "queue": "general",
                "agent_id": "agent:42",
                "sentiment": -0.25,
                "ivr_path": "main>cards>lost",
                "attributes": {"device": "ios", "lang": "fr"},
            },
        )
    )
    assert ctx == Context(
        channel="chat",
        intent="cancel",
        queue="general",
        agent_id="agent:42",
        sentiment=-0.25,
        ivr_path="main>cards>lost",
        attributes={"device": "ios", "lang": "fr"},
    )
    assert type(ctx.attributes) is dict, "a plain dict, not the protobuf map"


def test_the_least_request_has_empty_fields_and_no_sentiment() -> None:
    ctx = request_context(decide())
    assert ctx == Context(channel="voice")
    assert ctx.sentiment is None
    assert ctx.attributes == {}


def test_every_channel_of_the_vocabulary_is_accepted() -> None:
    for name in CHANNELS:
        value = pb.Channel.Value(f"CHANNEL_{name.upper()}")
        assert request_context(decide(context={"channel": value})).channel == name


def test_a_sentiment_of_zero_is_a_sentiment_not_an_absent_one() -> None:
    assert request_context(decide(context={"sentiment": 0.0})).sentiment == 0.0


def test_sentiment_bounds_are_inclusive() -> None:
    for edge in (-1.0, 1.0):
        assert request_context(decide(context={"sentiment": edge})).sentiment == edge


@pytest.mark.parametrize("sentiment", [-1.000001, 1.5, math.nan, math.inf, -math.inf])
def test_a_sentiment_outside_minus_one_to_one_is_refused(sentiment: float) -> None:
    error = refused(decide(context={"sentiment": sentiment}))
    assert error.field == "context.sentiment"
    assert error.reason.startswith("must be -1..1, got ")
    assert str(error) == f"context.sentiment: must be -1..1, got {sentiment}"


def test_customer_id_is_required() -> None:
    error = refused(decide(customer_id=""))
    assert (error.field, error.reason) == ("customer_id", "is required")


@pytest.mark.parametrize(
    ("customer_id", "reason"),
    [
        ("C|1", "may contain only ASCII letters, digits and - _ . : @ / + =; found '|'"),
        ("C 1", "may contain only ASCII letters, digits and - _ . : @ / + =; found ' '"),
        ("{C1}", "may contain only ASCII letters, digits and - _ . : @ / + =; found '{'"),
        ("Zoë", "may contain only ASCII letters, digits and - _ . : @ / + =; found 'ë'"),
        ("x" * (MAX_ID_LENGTH + 1), f"at most {MAX_ID_LENGTH} characters, got 129"),
    ],
)
def test_a_customer_id_that_cannot_be_an_id_is_refused(customer_id: str, reason: str) -> None:
    error = refused(decide(customer_id=customer_id))
    assert (error.field, error.reason) == ("customer_id", reason)


def test_ids_of_the_longest_length_and_every_allowed_character_are_accepted() -> None:
    longest = "x" * MAX_ID_LENGTH
    request_context(decide(customer_id=longest, interaction_id=longest))
    request_context(decide(customer_id="aZ09-_.:@/+=", interaction_id="aZ09-_.:@/+="))


def test_interaction_id_is_optional_but_checked_when_given() -> None:
    request_context(decide(interaction_id=""))
    error = refused(decide(interaction_id="call;7"))
    assert error.field == "interaction_id"
    assert "found ';'" in error.reason


def test_max_offers_is_at_most_twenty() -> None:
    request_context(decide(max_offers=0))
    request_context(decide(max_offers=20))
    error = refused(decide(max_offers=21))
    assert (error.field, error.reason) == ("max_offers", "must be 0..20, got 21")
    assert refused(decide(max_offers=2**32 - 1)).field == "max_offers"


def test_a_channel_is_required_and_must_be_known() -> None:
    missing = refused(decide(context={"channel": pb.CHANNEL_UNSPECIFIED}))
    assert (missing.field, missing.reason) == (
        "context.channel",
        "is required (voice, chat, email, ...)",
    )
    unknown = refused(decide(context={"channel": 99}))
    assert (unknown.field, unknown.reason) == ("context.channel", "unknown channel value 99")


def test_a_request_without_any_context_has_no_channel() -> None:
    error = refused(pb.DecideRequest(customer_id="C-1"))
    assert error.field == "context.channel"


@pytest.mark.parametrize("name", ["intent", "queue", "agent_id", "ivr_path"])
def test_context_texts_are_at_most_256_characters(name: str) -> None:
    assert getattr(request_context(decide(context={name: "x" * MAX_TEXT_LENGTH})), name) == (
        "x" * MAX_TEXT_LENGTH
    )
    error = refused(decide(context={name: "x" * (MAX_TEXT_LENGTH + 1)}))
    assert (error.field, error.reason) == (f"context.{name}", "at most 256 characters, got 257")


def test_context_texts_are_free_text_not_ids() -> None:
    ctx = request_context(decide(context={"intent": "lost card | urgent {é}", "queue": ""}))
    assert ctx.intent == "lost card | urgent {é}"


def test_attributes_are_at_most_32() -> None:
    most = {f"k{n}": "v" for n in range(MAX_ATTRIBUTES)}
    assert request_context(decide(context={"attributes": most})).attributes == most
    error = refused(decide(context={"attributes": {**most, "one_more": "v"}}))
    assert (error.field, error.reason) == ("context.attributes", "at most 32 entries, got 33")


def test_attribute_keys_are_1_to_64_characters() -> None:
    longest = "k" * MAX_ATTRIBUTE_KEY
    assert request_context(decide(context={"attributes": {longest: "v"}})).attributes == {
        longest: "v"
    }
    for key in ("", "k" * (MAX_ATTRIBUTE_KEY + 1)):
        error = refused(decide(context={"attributes": {key: "v"}}))
        assert (error.field, error.reason) == ("context.attributes", "keys are 1..64 characters")


def test_attribute_values_may_be_empty_and_are_at_most_256_characters() -> None:
    assert request_context(decide(context={"attributes": {"k": ""}})).attributes == {"k": ""}
    error = refused(decide(context={"attributes": {"device": "x" * (MAX_TEXT_LENGTH + 1)}}))
    assert (error.field, error.reason) == (
        "context.attributes[device]",
        "at most 256 characters, got 257",
    )


def test_the_first_wrong_field_is_the_one_named() -> None:
    """customer_id, interaction_id, max_offers, channel, the texts, sentiment, attributes."""
    wrong: dict[str, Any] = {
        "customer_id": "",
        "interaction_id": "a b",
        "max_offers": 99,
        "context": {
            "channel": pb.CHANNEL_UNSPECIFIED,
            "intent": "x" * 300,
            "sentiment": 2.0,
            "attributes": {"": "v"},
        },
    }
    order = [
        "customer_id",
        "interaction_id",
        "max_offers",
        "context.channel",
        "context.intent",
        "context.sentiment",
        "context.attributes",
    ]
    fixes: list[tuple[str, Any]] = [
        ("customer_id", "C-1"),
        ("interaction_id", "call-1"),
        ("max_offers", 1),
        ("channel", pb.CHANNEL_SMS),
        ("intent", "cancel"),
        ("sentiment", 0.5),
        ("attributes", {"k": "v"}),
    ]
    for expected, (name, fixed) in zip(order, fixes, strict=True):
        assert refused(decide(**wrong)).field == expected
        if name in wrong:
            wrong[name] = fixed
        else:
            wrong["context"][name] = fixed
    assert request_context(decide(**wrong)).channel == "sms"


# --- decision_response -------------------------------------------------------------------


def decision(**fields: Any) -> Decision:
    offers = (
        RankedOffer(
            offer_id="retention_discount",
            title="20% off for a year",
            script="Hello Ana, ...",
            category="retention",
            score=1234.5,
            expected_value=980.25,
            propensity=0.35,
            value=2800.0,
            rule_ids=("retention_discount", "policy:recent_decline"),
            reasons=("clv >= 10000", "churn_risk 0.8"),
        ),
        RankedOffer("card_upgrade", "Gold card", "", "cards", 1.0, 0.5, 0.1, 5.0, (), ()),
    )
    explanations = (
        Explanation("offer", "retention_discount", True, ""),
        Explanation("routing", "vip", False, "clv >= 10000: clv is 500"),
        Explanation("policy", "recent_decline", False, "no decline in 30 days"),
    )
    return Decision(
        **{
            "decision_id": "abc.def",
            "offers": offers,
            "routing": Routing("retention", 1, "high churn risk", "churn_route", skip_ivr=True),
            "ruleset_version": "0123456789ab",
            "profile_found": True,
            "degraded": False,
            "explanations": explanations,
            "suppressed_by": ("recent_decline",),
            "arm": "challenger",
            "unparsed_fields": ("clv",),
            **fields,
        }
    )


def test_a_decision_becomes_its_response_field_by_field() -> None:
    d = decision()
    response = decision_response(d)
    assert response.decision_id == "abc.def"
    assert response.ruleset_version == "0123456789ab"
    assert response.arm == "challenger"
    assert response.profile_found is True
    assert response.degraded is False
    assert [o.offer_id for o in response.offers] == ["retention_discount", "card_upgrade"]
    first = response.offers[0]
    assert (first.title, first.script, first.category) == (
        "20% off for a year",
        "Hello Ana, ...",
        "retention",
    )
    assert (first.score, first.expected_value, first.propensity, first.value) == (
        1234.5,
        980.25,
        0.35,
        2800.0,
    )
    assert list(first.rule_ids) == ["retention_discount", "policy:recent_decline"]
    assert list(first.reasons) == ["clv >= 10000", "churn_risk 0.8"]
    assert list(response.offers[1].rule_ids) == [] and response.offers[1].script == ""
    assert response.routing == pb.Routing(
        queue="retention",
        priority=1,
        reason="high churn risk",
        rule_id="churn_route",
        skip_ivr=True,
    )
    assert [(e.kind, e.rule_id, e.matched, e.detail) for e in response.explanations] == [
        (pb.RuleExplanation.KIND_OFFER, "retention_discount", True, ""),
        (pb.RuleExplanation.KIND_ROUTING, "vip", False, "clv >= 10000: clv is 500"),
        (pb.RuleExplanation.KIND_POLICY, "recent_decline", False, "no decline in 30 days"),
    ]


def test_a_response_survives_the_wire_unchanged() -> None:
    d = decision()
    response = decision_response(d)
    back = pb.DecideResponse.FromString(response.SerializeToString())
    assert back == response
    # What the agent sees of the decision, read back from the bytes.
    assert (
        tuple(
            RankedOffer(
                o.offer_id,
                o.title,
                o.script,
                o.category,
                o.score,
                o.expected_value,
                o.propensity,
                o.value,
                tuple(o.rule_ids),
                tuple(o.reasons),
            )
            for o in back.offers
        )
        == d.offers
    )
    assert (
        Routing(
            back.routing.queue,
            back.routing.priority,
            back.routing.reason,
            back.routing.rule_id,
            back.routing.skip_ivr,
        )
        == d.routing
    )


def test_what_is_for_the_server_only_is_not_on_the_wire() -> None:
    """suppressed_by and unparsed_fields are for metrics and logs, not in the contract."""
    text = str(decision_response(decision(suppressed_by=("secret_policy",))))
    assert "secret_policy" not in text
    assert set(pb.DecideResponse.DESCRIPTOR.fields_by_name) == {
        "decision_id",
        "offers",
        "routing",
        "ruleset_version",
        "profile_found",
        "degraded",
        "explanations",
        "arm",
        "notices",
    }


def test_a_decision_without_offers_or_explanations() -> None:
    response = decision_response(
        decision(offers=(), explanations=(), degraded=True, profile_found=False, arm="control")
    )
    assert len(response.offers) == 0 and len(response.explanations) == 0
    assert (response.degraded, response.profile_found, response.arm) == (True, False, "control")
    assert response.HasField("routing"), "a routing is always answered"


def test_a_default_routing_is_still_present_on_the_wire() -> None:
    response = decision_response(decision(routing=Routing("", 0, "", "")))
    back = pb.DecideResponse.FromString(response.SerializeToString())
    assert back.HasField("routing")
    assert back.routing == pb.Routing()


# --- outcome_request ---------------------------------------------------------------------


def outcome(**fields: Any) -> pb.RecordOutcomeRequest:
    """A valid RecordOutcomeRequest (an accepted offer), with `fields` replaced."""
    return pb.RecordOutcomeRequest(
        **{
            "decision_id": "payload.signature",
            "offer_id": "retention_discount",
            "outcome": pb.OUTCOME_ACCEPTED,
            **fields,
        }
    )


def outcome_refused(request: pb.RecordOutcomeRequest) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        outcome_request(request, now=NOW)
    return caught.value


def test_an_outcome_without_a_time_happened_now() -> None:
    assert outcome_request(outcome(), now=NOW) == OutcomeRequest(
        "payload.signature", "retention_discount", "accepted", "", "", NOW
    )


def test_a_full_outcome_request() -> None:
    checked = outcome_request(
        outcome(
            outcome=pb.OUTCOME_DECLINED,
            channel=pb.CHANNEL_EMAIL,
            reason="too expensive",
            occurred_at=Timestamp(seconds=1_749_999_000, nanos=250_000_000),
        ),
        now=NOW,
    )
    assert checked == OutcomeRequest(
        "payload.signature",
        "retention_discount",
        "declined",
        "email",
        "too expensive",
        1_749_999_000.25,
    )


def test_each_outcome_name() -> None:
    names = {
        pb.OUTCOME_PRESENTED: "presented",
        pb.OUTCOME_ACCEPTED: "accepted",
        pb.OUTCOME_DECLINED: "declined",
        pb.OUTCOME_NO_RESPONSE: "no_response",
    }
    for value, name in names.items():
        assert outcome_request(outcome(outcome=value), now=NOW).outcome == name
    for value, name in {
        pb.OUTCOME_RESOLVED: "resolved",
        pb.OUTCOME_NOT_RESOLVED: "not_resolved",
    }.items():
        checked = outcome_request(outcome(outcome=value, offer_id=""), now=NOW)
        assert (checked.outcome, checked.offer_id) == (name, "")


def test_decision_id_is_required_and_may_be_long() -> None:
    error = outcome_refused(outcome(decision_id=""))
    assert (error.field, error.reason) == ("decision_id", "is required")
    longest = "x" * MAX_DECISION_ID
    assert outcome_request(outcome(decision_id=longest), now=NOW).decision_id == longest
    error = outcome_refused(outcome(decision_id="x" * (MAX_DECISION_ID + 1)))
    assert (error.field, error.reason) == ("decision_id", "at most 4096 characters, got 4097")
    error = outcome_refused(outcome(decision_id="payload.sig|nature"))
    assert error.field == "decision_id" and "found '|'" in error.reason


def test_an_outcome_is_required_and_must_be_known() -> None:
    missing = outcome_refused(outcome(outcome=pb.OUTCOME_UNSPECIFIED))
    assert missing.field == "outcome"
    assert missing.reason == (
        "is required (presented, accepted, declined, no_response, resolved, not_resolved)"
    )
    unknown = outcome_refused(outcome(outcome=42))
    assert (unknown.field, unknown.reason) == ("outcome", "unknown outcome value 42")


def test_an_offer_outcome_needs_an_offer_id_that_is_an_id() -> None:
    error = outcome_refused(outcome(offer_id=""))
    assert (error.field, error.reason) == ("offer_id", "is required")
    error = outcome_refused(outcome(offer_id="x" * (MAX_ID_LENGTH + 1)))
    assert (error.field, error.reason) == ("offer_id", "at most 128 characters, got 129")
    error = outcome_refused(outcome(offer_id="retention discount"))
    assert error.field == "offer_id" and "found ' '" in error.reason


def test_an_interaction_outcome_has_no_offer_id() -> None:
    error = outcome_refused(outcome(outcome=pb.OUTCOME_RESOLVED))
    assert (error.field, error.reason) == (
        "offer_id",
        "must be empty for an interaction outcome (resolved)",
    )
    error = outcome_refused(outcome(outcome=pb.OUTCOME_NOT_RESOLVED, offer_id="x"))
    assert error.reason == "must be empty for an interaction outcome (not_resolved)"


def test_the_channel_is_optional_but_must_be_known() -> None:
    assert outcome_request(outcome(channel=pb.CHANNEL_UNSPECIFIED), now=NOW).channel == ""
    assert outcome_request(outcome(channel=pb.CHANNEL_SOCIAL), now=NOW).channel == "social"
    error = outcome_refused(outcome(channel=77))
    assert (error.field, error.reason) == ("channel", "unknown channel value 77")


def test_the_reason_is_free_text_of_at_most_256_characters() -> None:
    assert outcome_request(outcome(reason="x" * MAX_TEXT_LENGTH), now=NOW).reason == (
        "x" * MAX_TEXT_LENGTH
    )
    assert outcome_request(outcome(reason="price | {é}"), now=NOW).reason == "price | {é}"
    error = outcome_refused(outcome(reason="x" * (MAX_TEXT_LENGTH + 1)))
    assert (error.field, error.reason) == ("reason", "at most 256 characters, got 257")


@pytest.mark.parametrize(
    ("seconds", "nanos", "reason"),
    [
        (1_749_999_000, -1, "nanos must be 0..999999999, got -1"),
        (1_749_999_000, 1_000_000_000, "nanos must be 0..999999999, got 1000000000"),
        (OLDEST_OUTCOME_S - 1, 0, "is before 2000-01-01"),
        (0, 0, "is before 2000-01-01"),
        (-62_135_596_800, 0, "is before 2000-01-01"),
        (int(NOW + MAX_CLOCK_SKEW_S) + 1, 0, "is in the future"),
        # Milliseconds sent as seconds: far outside what Timestamp can even represent.
        (int(NOW * 1000), 0, "is in the future"),
        (2**63 - 1, 0, "is in the future"),
    ],
)
def test_an_occurred_at_out_of_range_is_refused(seconds: int, nanos: int, reason: str) -> None:
    error = outcome_refused(outcome(occurred_at=Timestamp(seconds=seconds, nanos=nanos)))
    assert (error.field, error.reason) == ("occurred_at", reason)


def test_occurred_at_bounds_are_inclusive() -> None:
    oldest = outcome_request(outcome(occurred_at=Timestamp(seconds=OLDEST_OUTCOME_S)), now=NOW)
    assert oldest.at == OLDEST_OUTCOME_S
    ahead = int(NOW + MAX_CLOCK_SKEW_S)
    latest = Timestamp(seconds=ahead, nanos=999_999_999)
    assert outcome_request(outcome(occurred_at=latest), now=NOW).at == ahead + 0.999999999


def test_an_occurred_at_of_the_epoch_is_set_not_absent() -> None:
    """An explicit Timestamp() is present on the wire, so it is checked (and refused)."""
    request = outcome(occurred_at=Timestamp())
    assert request.HasField("occurred_at")
    assert outcome_refused(request).field == "occurred_at"


def test_the_first_wrong_outcome_field_is_the_one_named() -> None:
    request = pb.RecordOutcomeRequest(
        decision_id="",
        outcome=pb.OUTCOME_UNSPECIFIED,
        offer_id="a b",
        channel=99,
        reason="x" * 300,
        occurred_at=Timestamp(seconds=0),
    )
    seen = []
    for fix in (
        lambda r: setattr(r, "decision_id", "d.s"),
        lambda r: setattr(r, "outcome", pb.OUTCOME_PRESENTED),
        lambda r: setattr(r, "offer_id", "a"),
        lambda r: setattr(r, "channel", pb.CHANNEL_WEB),
        lambda r: setattr(r, "reason", ""),
        lambda r: r.occurred_at.FromSeconds(int(NOW)),
    ):
        seen.append(outcome_refused(request).field)
        fix(request)
    assert seen == ["decision_id", "outcome", "offer_id", "channel", "reason", "occurred_at"]
    assert outcome_request(request, now=NOW).at == NOW


# --- check_against_decision --------------------------------------------------------------

RECORD = DecisionRecord("d.s", "C-1", ("a", "b"), "", "voice", "v1", "champion", NOW)


def checked(offer_id: str = "a", outcome: str = "accepted", at: float = NOW) -> OutcomeRequest:
    return OutcomeRequest("d.s", offer_id, outcome, "", "", at)


def test_an_outcome_of_an_offer_the_decision_returned_passes() -> None:
    check_against_decision(checked("a"), RECORD)
    check_against_decision(checked("b"), RECORD)
    check_against_decision(checked("", "resolved"), RECORD)


def test_an_outcome_of_an_offer_the_decision_did_not_return_is_refused() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        check_against_decision(checked("c"), RECORD)
    assert (caught.value.field, caught.value.reason) == (
        "offer_id",
        "that decision did not return offer 'c'",
    )
    # A decision that returned no offer (a control arm's) has no offer outcomes.
    with pytest.raises(InvalidRequestError) as caught:
        check_against_decision(checked("a"), dataclasses.replace(RECORD, offer_ids=()))
    assert caught.value.field == "offer_id"


def test_an_outcome_before_its_decision_is_refused_past_the_clock_skew() -> None:
    check_against_decision(checked(at=NOW - MAX_CLOCK_SKEW_S), RECORD)
    with pytest.raises(InvalidRequestError) as caught:
        check_against_decision(checked(at=NOW - MAX_CLOCK_SKEW_S - 0.001), RECORD)
    assert (caught.value.field, caught.value.reason) == (
        "occurred_at",
        "is before the decision was made",
    )


def test_the_offer_is_checked_before_the_time() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        check_against_decision(checked("zzz", at=0.0), RECORD)
    assert caught.value.field == "offer_id"
