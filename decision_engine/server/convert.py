"""Protobuf ↔ plain data, with the request checks a client gets INVALID_ARGUMENT for."""

from __future__ import annotations

import math
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine.decide.values import Context, Decision
from decision_engine.errors import InvalidRequestError
from decision_engine.ruleset.sections import MAX_OFFERS_LIMIT
from decision_engine.store.outcomes import DecisionRecord
from decision_engine.vocabulary import MAX_ID_LENGTH, OFFER_OUTCOMES, id_problem
from decision_engine.wire import CHANNEL_NAMES, OUTCOME_NAMES

MAX_DECISION_ID = 4096
"""Decision ids carry the decision (customer, offers, ...), signed."""
MAX_TEXT_LENGTH = 256
MAX_ATTRIBUTES = 32
MAX_ATTRIBUTE_KEY = 64

_KIND = {
    "offer": pb.RuleExplanation.KIND_OFFER,
    "routing": pb.RuleExplanation.KIND_ROUTING,
    "policy": pb.RuleExplanation.KIND_POLICY,
}


def request_context(request: pb.DecideRequest) -> Context:
    """Check a DecideRequest; InvalidRequestError names the first field that is wrong."""
    check_identifier("customer_id", request.customer_id, required=True)
    check_identifier("interaction_id", request.interaction_id, required=False)
    if request.max_offers > MAX_OFFERS_LIMIT:
        raise InvalidRequestError(
            "max_offers", f"must be 0..{MAX_OFFERS_LIMIT}, got {request.max_offers}"
        )
    ctx = request.context
    channel = CHANNEL_NAMES.get(ctx.channel)
    if channel is None:
        if ctx.channel == pb.CHANNEL_UNSPECIFIED:
            raise InvalidRequestError("context.channel", "is required (voice, chat, email, ...)")
        raise InvalidRequestError("context.channel", f"unknown channel value {ctx.channel}")
    for name in ("intent", "queue", "agent_id", "ivr_path"):
        _text(f"context.{name}", getattr(ctx, name))
    sentiment: float | None = None
    if ctx.HasField("sentiment"):
        sentiment = ctx.sentiment
        if not math.isfinite(sentiment) or not -1.0 <= sentiment <= 1.0:
            raise InvalidRequestError("context.sentiment", f"must be -1..1, got {sentiment}")
    if len(ctx.attributes) > MAX_ATTRIBUTES:
        raise InvalidRequestError(
            "context.attributes", f"at most {MAX_ATTRIBUTES} entries, got {len(ctx.attributes)}"
        )
    for key, value in ctx.attributes.items():
        if not key or len(key) > MAX_ATTRIBUTE_KEY:
            raise InvalidRequestError(
                "context.attributes", f"keys are 1..{MAX_ATTRIBUTE_KEY} characters"
            )
        _text(f"context.attributes[{key}]", value)
    return Context(
        channel=channel,
        intent=ctx.intent,
        queue=ctx.queue,
        agent_id=ctx.agent_id,
        sentiment=sentiment,
        ivr_path=ctx.ivr_path,
        attributes=dict(ctx.attributes),
    )


def check_identifier(field: str, value: str, *, required: bool, limit: int = MAX_ID_LENGTH) -> None:
    if not value:
        if required:
            raise InvalidRequestError(field, "is required")
        return
    problem = id_problem(value, limit=limit)
    if problem is not None:
        raise InvalidRequestError(field, problem)


def _text(field: str, value: str) -> None:
    if len(value) > MAX_TEXT_LENGTH:
        raise InvalidRequestError(field, f"at most {MAX_TEXT_LENGTH} characters, got {len(value)}")


def decision_response(decision: Decision) -> pb.DecideResponse:
    """The wire form of a decision."""
    routing = decision.routing
    return pb.DecideResponse(
        decision_id=decision.decision_id,
        offers=[
            pb.Offer(
                offer_id=o.offer_id,
                title=o.title,
                script=o.script,
                score=o.score,
                expected_value=o.expected_value,
                propensity=o.propensity,
                value=o.value,
                category=o.category,
                rule_ids=o.rule_ids,
                reasons=o.reasons,
            )
            for o in decision.offers
        ],
        routing=pb.Routing(
            queue=routing.queue,
            priority=routing.priority,
            reason=routing.reason,
            rule_id=routing.rule_id,
            skip_ivr=routing.skip_ivr,
        ),
        ruleset_version=decision.ruleset_version,
        arm=decision.arm,
        profile_found=decision.profile_found,
        degraded=decision.degraded,
        explanations=[
            pb.RuleExplanation(
                kind=_KIND[e.kind], rule_id=e.rule_id, matched=e.matched, detail=e.detail
            )
            for e in decision.explanations
        ],
        notices=[
            pb.NoticeSummary(
                notice_id=n.notice_id,
                channel=n.channel,
                status=n.status,
                text=n.text,
                decided_at=_timestamp(n.at),
                updated_at=_timestamp(n.updated),
            )
            for n in decision.notices
        ],
    )


def _timestamp(at: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(at * 1e9))
    return stamp


MAX_CLOCK_SKEW_S = 300.0
"""How far ahead of our clock (or before its decision) an outcome may be stamped."""
OLDEST_OUTCOME_S = 946_684_800
"""2000-01-01: anything earlier is a client bug (an unset clock, seconds in ms...)."""


@dataclass(frozen=True, slots=True)
class OutcomeRequest:
    """A checked RecordOutcome request."""

    decision_id: str
    offer_id: str
    outcome: str
    channel: str
    reason: str
    at: float


def outcome_request(request: pb.RecordOutcomeRequest, *, now: float) -> OutcomeRequest:
    """Check a RecordOutcomeRequest; InvalidRequestError names the first field that is wrong."""
    check_identifier("decision_id", request.decision_id, required=True, limit=MAX_DECISION_ID)
    outcome = OUTCOME_NAMES.get(request.outcome)
    if outcome is None:
        raise InvalidRequestError(
            "outcome",
            "is required (presented, accepted, declined, no_response, resolved, not_resolved)"
            if request.outcome == pb.OUTCOME_UNSPECIFIED
            else f"unknown outcome value {request.outcome}",
        )
    if outcome in OFFER_OUTCOMES:
        check_identifier("offer_id", request.offer_id, required=True)
    elif request.offer_id:
        raise InvalidRequestError(
            "offer_id", f"must be empty for an interaction outcome ({outcome})"
        )
    channel = ""
    if request.channel != pb.CHANNEL_UNSPECIFIED:
        channel = CHANNEL_NAMES.get(request.channel, "")
        if not channel:
            raise InvalidRequestError("channel", f"unknown channel value {request.channel}")
    _text("reason", request.reason)
    at = now
    if request.HasField("occurred_at"):
        at = occurred_at(request.occurred_at, now=now)
    return OutcomeRequest(
        request.decision_id, request.offer_id, outcome, channel, request.reason, at
    )


def occurred_at(ts: Timestamp, *, now: float) -> float:
    # Checked field by field: ToNanoseconds() raises ValueError outside the Timestamp range.
    if not 0 <= ts.nanos < 1_000_000_000:
        raise InvalidRequestError("occurred_at", f"nanos must be 0..999999999, got {ts.nanos}")
    if ts.seconds < OLDEST_OUTCOME_S:
        raise InvalidRequestError("occurred_at", "is before 2000-01-01")
    if ts.seconds > now + MAX_CLOCK_SKEW_S:
        raise InvalidRequestError("occurred_at", "is in the future")
    return ts.seconds + ts.nanos / 1e9


def check_against_decision(outcome: OutcomeRequest, decision: DecisionRecord) -> None:
    """What an outcome can only be checked against once its decision is known."""
    if outcome.offer_id and outcome.offer_id not in decision.offer_ids:
        raise InvalidRequestError(
            "offer_id", f"that decision did not return offer {outcome.offer_id!r}"
        )
    if outcome.at < decision.at - MAX_CLOCK_SKEW_S:
        raise InvalidRequestError("occurred_at", "is before the decision was made")
