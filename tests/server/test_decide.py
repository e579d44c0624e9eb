"""Decide end to end: the seven demo situations and bad input, over gRPC, on real Redis."""

from __future__ import annotations

import re
import urllib.request
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from tests.server.conftest import Server

VOICE, CHAT, EMAIL = pb.CHANNEL_VOICE, pb.CHANNEL_CHAT, pb.CHANNEL_EMAIL
Stub = pb_grpc.DecisionServiceStub


def ask(
    stub: pb_grpc.DecisionServiceStub,
    customer: str,
    intent: str = "general_inquiry",
    channel: pb.Channel.ValueType = VOICE,
    **extra: object,
) -> pb.DecideResponse:
    attributes = extra.pop("attributes", {})
    sentiment = extra.pop("sentiment", None)
    context = pb.InteractionContext(channel=channel, intent=intent, attributes=attributes)
    if sentiment is not None:
        context.sentiment = sentiment
    request = pb.DecideRequest(customer_id=customer, context=context, **extra)  # type: ignore[arg-type]
    return stub.Decide(request, timeout=5)


def offer_ids(response: pb.DecideResponse) -> list[str]:
    return [o.offer_id for o in response.offers]


def categories(response: pb.DecideResponse) -> list[str]:
    return [o.category for o in response.offers]


@pytest.mark.usefixtures("demo_data")
class TestDemoSituations:
    def test_1_high_value_churn_risk_cancel_goes_to_retention_specialists(self, stub: Stub) -> None:
        r = ask(stub, "C-1001", "cancel")
        assert (r.routing.queue, r.routing.priority) == ("retention_specialists", 1)
        assert r.profile_found and not r.degraded
        top = r.offers[0]
        assert top.offer_id == "retention-loyalty-credit"
        # The credit is sized to the customer's value: clv 48,000 -> EUR 480.
        assert "EUR 480" in top.script and "Alice" in top.script
        assert not {"upsell", "cross_sell"} & set(categories(r))

    def test_2_low_value_high_cost_is_steered_to_self_service(self, stub: Stub) -> None:
        r = ask(stub, "C-1002", "cancel")
        assert r.routing.queue == "digital_assist"
        assert "retention-loyalty-credit" not in offer_ids(r)
        assert r.offers[0].offer_id == "digital-self-service"
        cheap = ask(stub, "C-1001", "cancel")  # a valuable customer does get the costly offer
        assert "retention-loyalty-credit" in offer_ids(cheap)

    def test_3_lost_card_skips_the_ivr(self, stub: Stub) -> None:
        r = ask(stub, "C-1003", "lost_card", CHAT)
        assert (r.routing.queue, r.routing.priority, r.routing.skip_ivr) == (
            "card_security",
            1,
            True,
        )
        assert offer_ids(r)[0] == "card-replacement-express"
        assert not {"upsell", "cross_sell"} & set(categories(r))
        by_attribute = ask(stub, "C-1007", "general_inquiry", attributes={"card_status": "stolen"})
        assert by_attribute.routing.queue == "card_security"

    def test_4_third_contact_in_a_week_escalates_with_service_recovery_first(
        self, stub: Stub
    ) -> None:
        # Grace has no recent contacts: voice, chat, then email within the week.
        first = ask(stub, "C-1007", "billing_dispute", VOICE, interaction_id="i-1")
        second = ask(stub, "C-1007", "billing_dispute", CHAT, interaction_id="i-2")
        assert first.routing.queue == second.routing.queue == "general"
        retry = ask(stub, "C-1007", "billing_dispute", CHAT, interaction_id="i-2")
        assert retry.routing.queue == "general", "a retried interaction must count once"
        third = ask(stub, "C-1007", "billing_dispute", EMAIL, interaction_id="i-3")
        assert (third.routing.queue, third.routing.priority) == ("escalations", 2)
        assert third.offers[0].category == "service_recovery"
        assert "3 times" in third.offers[0].script

    def test_4_demo_customer_with_two_earlier_contacts(self, stub: Stub) -> None:
        r = ask(stub, "C-1004", "billing_dispute", VOICE, interaction_id=str(uuid.uuid4()))
        assert r.routing.queue == "escalations"
        assert r.offers[0].offer_id == "service-recovery-callback"

    def test_5_contract_ending_soon_gets_a_personal_renewal(self, stub: Stub) -> None:
        r = ask(stub, "C-1005")
        assert r.offers[0].offer_id == "renewal-personalized"
        assert re.search(r"ends on \d{4}-\d{2}-\d{2}", r.offers[0].script)
        assert "Eva" in r.offers[0].script
        assert "renewal-personalized" not in offer_ids(ask(stub, "C-1007"))

    @pytest.mark.parametrize(
        ("customer", "intent", "sentiment"),
        [
            ("C-1006", "billing_dispute", None),
            ("C-1007", "complaint", None),
            ("C-1007", "billing_dispute", -0.6),
        ],
    )
    def test_6_complaint_or_negative_sentiment_recovers_first_no_upsell(
        self, stub: Stub, customer: str, intent: str, sentiment: float | None
    ) -> None:
        r = ask(stub, customer, intent, sentiment=sentiment)
        assert r.offers and r.offers[0].category == "service_recovery"
        assert not {"upsell", "cross_sell"} & set(categories(r))

    def test_7_otherwise_best_value_offers_in_the_general_queue(self, stub: Stub) -> None:
        r = ask(stub, "C-1007")
        assert r.routing.queue == "general" and r.routing.rule_id == "default"
        scores = [o.score for o in r.offers]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
        assert len(ask(stub, "C-1007", max_offers=1).offers) == 1

    def test_unknown_customer_is_decided_from_context(self, stub: Stub) -> None:
        r = ask(stub, "C-does-not-exist", "lost_card")
        assert not r.profile_found and not r.degraded
        assert r.routing.queue == "card_security"

    def test_explain_names_the_failing_condition_with_values(self, stub: Stub) -> None:
        r = ask(stub, "C-1002", "cancel", explain=True)
        details = {e.rule_id: e for e in r.explanations}
        assert details["retention-loyalty-credit"].matched is False
        assert details["retention-loyalty-credit"].detail == "clv 180 is not >= 5000"
        assert details["self-service-steer"].matched
        assert not ask(stub, "C-1002", "cancel").explanations

    def test_response_identity(self, stub: Stub) -> None:
        a, b = ask(stub, "C-1007"), ask(stub, "C-1007")
        assert a.decision_id != b.decision_id
        assert a.ruleset_version == b.ruleset_version and len(a.ruleset_version) == 12


def bad(customer: str = "C-1", max_offers: int = 0, **context: object) -> pb.DecideRequest:
    ctx = pb.InteractionContext(**{"channel": VOICE, **context})  # type: ignore[arg-type]
    return pb.DecideRequest(customer_id=customer, context=ctx, max_offers=max_offers)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (bad(customer=""), "customer_id"),
        (bad(customer="x" * 200), "customer_id"),
        (pb.DecideRequest(customer_id="C-1"), "context.channel"),
        (bad(channel=99), "context.channel"),
        (bad(max_offers=21), "max_offers"),
        (bad(sentiment=2.0), "context.sentiment"),
        (bad(attributes={f"k{i}": "v" for i in range(40)}), "context.attributes"),
        (bad(intent="x" * 300), "context.intent"),
    ],
)
def test_bad_input_is_invalid_argument_naming_the_field(
    stub: Stub, request_: pb.DecideRequest, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Decide(request_, timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(f"{field}:")


def test_health_and_reflection(server: Server) -> None:
    with grpc.insecure_channel(server.target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="decision.v1.DecisionService"), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        services = {s.name for s in next(iter(stream)).list_services_response.service}
    assert "decision.v1.DecisionService" in services


@pytest.mark.usefixtures("demo_data")
def test_metrics_count_every_worker_and_carry_no_customer_ids(server: Server) -> None:
    def scrape() -> str:
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            return str(reply.read().decode())

    def count(text: str) -> float:
        match = re.search(
            r'^decisions_total\{degraded="false",queue="card_security"\} (\S+)$', text, re.M
        )
        return float(match.group(1)) if match else 0.0

    before = count(scrape())
    # Separate channels so that connections land on both workers.
    for _ in range(10):
        for s in server.stub():
            ask(s, "C-1003", "lost_card")
    text = scrape()
    assert count(text) - before == 10
    assert re.search(r"^decision_latency_seconds_bucket\{le=\"0.005\"\} [1-9]", text, re.M)
    assert 'ruleset_info{label="demo"' in text
    assert 'offers_returned_total{offer_id="card-replacement-express"}' in text
    assert "C-1003" not in text
