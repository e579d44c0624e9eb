"""Live guidance on the wire ↔ its plain values (moments/model.py, store/interactions.py),
with the checks a publisher gets INVALID_ARGUMENT for, each naming its field."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine.decide.values import Decision
from decision_engine.errors import InvalidRequestError
from decision_engine.moments.model import EventValue, InteractionEvent
from decision_engine.server.convert import (
    MAX_CLOCK_SKEW_S,
    MAX_TEXT_LENGTH,
    OLDEST_OUTCOME_S,
    decision_response,
)
from decision_engine.store.interactions import MAX_SEQ, GuidanceRecord
from decision_engine.vocabulary import id_problem
from decision_engine.wire import (
    ACTION_NAMES,
    CHANNEL_NAMES,
    GUIDANCE_KIND_VALUES,
    SEVERITY_VALUES,
    SPEAKER_NAMES,
)

MAX_BATCH = 100
"""Events in one PublishEvents call."""
MAX_UTTERANCE = 4000
MAX_KEYWORDS, MAX_KEYWORD = 32, 64
MAX_PHRASES, MAX_PHRASE = 16, 256
MAX_EVENT_AGE_S = 6 * 3600.0
"""An event older than this is a publisher's bug (or a recording not rebased to now)."""
MAX_DURATION_S = 86_400.0
_OFFER_ACTIONS = frozenset({"offer_presented", "offer_accepted", "offer_declined"})
_KINDS = (
    "started, utterance, sentiment, hold_started, hold_ended, silence, ivr_step, "
    "intent_changed, agent_action, ended"
)


def metric_field(field: str) -> str:
    """`events[3].utterance.text` → `events.utterance.text`: a bounded metric label."""
    return re.sub(r"\[[^\]]*\]", "", field)


def publish_request(request: pb.PublishEventsRequest, *, now: float) -> list[InteractionEvent]:
    """Check every event of the batch (nothing is stored unless all are good)."""
    count = len(request.events)
    if count == 0:
        raise InvalidRequestError("events", "at least one event is required")
    if count > MAX_BATCH:
        raise InvalidRequestError("events", f"at most {MAX_BATCH} per call, got {count}")
    return [
        interaction_event(event, now=now, field=f"events[{i}]")
        for i, event in enumerate(request.events)
    ]


def interaction_event(
    event: pb.InteractionEvent, *, now: float, field: str = "event"
) -> InteractionEvent:
    """One checked event; seq 0 when the store is to assign it."""
    _id(f"{field}.event_id", event.event_id)
    _id(f"{field}.interaction_id", event.interaction_id)
    if not event.HasField("occurred_at"):
        raise InvalidRequestError(f"{field}.occurred_at", "is required")
    at = _event_time(f"{field}.occurred_at", event.occurred_at, now=now)
    seq = 0
    if event.HasField("seq"):
        seq = event.seq
        if not 1 <= seq <= MAX_SEQ:
            raise InvalidRequestError(f"{field}.seq", f"must be 1..{MAX_SEQ}, got {seq}")
    kind = event.WhichOneof("kind")
    if kind is None:
        raise InvalidRequestError(f"{field}.kind", f"is required, one this server knows ({_KINDS})")
    data = _DATA[kind](getattr(event, kind), f"{field}.{kind}")
    return InteractionEvent(event.event_id, event.interaction_id, at, seq, kind, data)


def _id(field: str, value: str, *, required: bool = True) -> None:
    if not value:
        if required:
            raise InvalidRequestError(field, "is required")
        return
    problem = id_problem(value)
    if problem is not None:
        raise InvalidRequestError(field, problem)


def _text(field: str, value: str, *, limit: int = MAX_TEXT_LENGTH, required: bool = False) -> str:
    if required and not value.strip():
        raise InvalidRequestError(field, "is required")
    if len(value) > limit:
        raise InvalidRequestError(field, f"at most {limit} characters, got {len(value)}")
    return value


def _event_time(field: str, ts: Timestamp, *, now: float) -> float:
    if not 0 <= ts.nanos < 1_000_000_000:
        raise InvalidRequestError(field, f"nanos must be 0..999999999, got {ts.nanos}")
    if ts.seconds < OLDEST_OUTCOME_S:
        raise InvalidRequestError(field, "is before 2000-01-01")
    at = ts.seconds + ts.nanos / 1e9
    if at > now + MAX_CLOCK_SKEW_S:
        raise InvalidRequestError(
            field, f"is more than {MAX_CLOCK_SKEW_S:g} s ahead of the server's clock"
        )
    if at < now - MAX_EVENT_AGE_S:
        raise InvalidRequestError(field, f"is more than {MAX_EVENT_AGE_S / 3600:g} h old")
    return at


def _speaker(field: str, value: int) -> str:
    name = SPEAKER_NAMES.get(value)
    if name is None:
        raise InvalidRequestError(
            field,
            "is required (customer or agent)" if value == 0 else f"unknown speaker value {value}",
        )
    return name


def _seconds(field: str, value: float, *, positive: bool) -> float:
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise InvalidRequestError(field, f"must be {'>' if positive else '>='} 0, got {value}")
    if value > MAX_DURATION_S:
        raise InvalidRequestError(field, f"at most {MAX_DURATION_S:g} s, got {value}")
    return float(value)


def _words(field: str, values: list[str], *, most: int, longest: int) -> tuple[str, ...]:
    if len(values) > most:
        raise InvalidRequestError(field, f"at most {most} entries, got {len(values)}")
    for i, value in enumerate(values):
        if not value.strip():
            raise InvalidRequestError(f"{field}[{i}]", "must not be empty")
        _text(f"{field}[{i}]", value, limit=longest)
    return tuple(value.lower() for value in values)


def _started(m: pb.InteractionStarted, field: str) -> dict[str, EventValue]:
    _id(f"{field}.customer_id", m.customer_id)
    channel = CHANNEL_NAMES.get(m.channel)
    if channel is None:
        raise InvalidRequestError(
            f"{field}.channel",
            "is required (voice, chat, email, ...)"
            if m.channel == pb.CHANNEL_UNSPECIFIED
            else f"unknown channel value {m.channel}",
        )
    return {
        "customer_id": m.customer_id,
        "channel": channel,
        "intent": _text(f"{field}.intent", m.intent),
        "queue": _text(f"{field}.queue", m.queue),
        "agent_id": _text(f"{field}.agent_id", m.agent_id),
    }


def _utterance(m: pb.Utterance, field: str) -> dict[str, EventValue]:
    return {
        "speaker": _speaker(f"{field}.speaker", m.speaker),
        "text": _text(f"{field}.text", m.text, limit=MAX_UTTERANCE, required=True),
        "keywords": _words(
            f"{field}.keywords", list(m.keywords), most=MAX_KEYWORDS, longest=MAX_KEYWORD
        ),
        "phrases": _words(
            f"{field}.phrases", list(m.phrases), most=MAX_PHRASES, longest=MAX_PHRASE
        ),
    }


def _sentiment(m: pb.SentimentChanged, field: str) -> dict[str, EventValue]:
    if not math.isfinite(m.value) or not -1.0 <= m.value <= 1.0:
        raise InvalidRequestError(f"{field}.value", f"must be -1..1, got {m.value}")
    return {"value": float(m.value), "speaker": _speaker(f"{field}.speaker", m.speaker)}


def _hold_ended(m: pb.HoldEnded, field: str) -> dict[str, EventValue]:
    if not m.HasField("duration_s"):
        return {}
    return {"duration_s": _seconds(f"{field}.duration_s", m.duration_s, positive=False)}


def _silence(m: pb.Silence, field: str) -> dict[str, EventValue]:
    return {"duration_s": _seconds(f"{field}.duration_s", m.duration_s, positive=True)}


def _ivr_step(m: pb.IvrStep, field: str) -> dict[str, EventValue]:
    return {"step": _text(f"{field}.step", m.step, required=True)}


def _intent_changed(m: pb.IntentChanged, field: str) -> dict[str, EventValue]:
    return {"intent": _text(f"{field}.intent", m.intent, required=True)}


def _agent_action(m: pb.AgentActionTaken, field: str) -> dict[str, EventValue]:
    action = ACTION_NAMES.get(m.action)
    if action is None:
        raise InvalidRequestError(
            f"{field}.action",
            "is required (offer_presented, ..., guidance_dismissed)"
            if m.action == pb.AGENT_ACTION_UNSPECIFIED
            else f"unknown action value {m.action}",
        )
    _id(f"{field}.offer_id", m.offer_id, required=action in _OFFER_ACTIONS)
    return {"action": action, "offer_id": m.offer_id}


def _ended(m: pb.InteractionEnded, field: str) -> dict[str, EventValue]:
    return {"resolved": bool(m.resolved)}


_DATA: dict[str, Callable[[Any, str], dict[str, EventValue]]] = {
    "started": _started,
    "utterance": _utterance,
    "sentiment": _sentiment,
    "hold_started": lambda m, field: {},
    "hold_ended": _hold_ended,
    "silence": _silence,
    "ivr_step": _ivr_step,
    "intent_changed": _intent_changed,
    "agent_action": _agent_action,
    "ended": _ended,
}


def decision_json(decision: Decision) -> str:
    """A re-decision as stored inside its guidance item (the DecideResponse as JSON)."""
    return json_format.MessageToJson(
        decision_response(decision), indent=None, preserving_proto_field_name=True
    )


def guidance_message(record: GuidanceRecord) -> pb.Guidance:
    """The wire form of a stored guidance item."""
    message = pb.Guidance(
        seq=record.seq,
        guidance_id=record.guidance_id,
        moment_id=record.moment_id,
        interaction_id=record.interaction_id,
        kind=GUIDANCE_KIND_VALUES.get(record.kind, pb.GUIDANCE_KIND_UNSPECIFIED),  # type: ignore[arg-type]
        title=record.title,
        text=record.text,
        severity=SEVERITY_VALUES.get(record.severity, pb.SEVERITY_UNSPECIFIED),  # type: ignore[arg-type]
        event_ids=record.event_ids,
        supersedes=record.supersedes,
        outcome_id=record.outcome_id,
    )
    message.at.FromNanoseconds(int(record.at * 1e9))
    if record.decision:
        json_format.Parse(record.decision, message.decision)
    if record.route_queue:
        message.routing.queue = record.route_queue
        message.routing.priority = record.route_priority
    return message
