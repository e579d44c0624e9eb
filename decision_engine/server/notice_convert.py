"""Business events off the wire, checked against the served ruleset's declared events."""

from __future__ import annotations

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine.decide.notices import BusinessEvent, event_problem
from decision_engine.errors import InvalidRequestError
from decision_engine.ruleset.compiled import CompiledRuleset
from decision_engine.server.convert import MAX_TEXT_LENGTH, check_identifier, occurred_at

MAX_EVENTS = 500
MAX_EVENT_ATTRIBUTES = 32


def business_events(
    request: pb.PublishBusinessEventsRequest, ruleset: CompiledRuleset, *, now: float
) -> list[BusinessEvent]:
    """Every event of a batch, checked before any is stored (fields named `events[i].…`)."""
    if not 1 <= len(request.events) <= MAX_EVENTS:
        raise InvalidRequestError("events", f"1..{MAX_EVENTS} events, got {len(request.events)}")
    seen: set[str] = set()
    events = []
    for index, message in enumerate(request.events):
        event = business_event(message, ruleset, now=now, prefix=f"events[{index}].")
        if event.event_id in seen:
            raise InvalidRequestError(f"events[{index}].event_id", "appears twice in the request")
        seen.add(event.event_id)
        events.append(event)
    return events


def business_event(
    message: pb.BusinessEvent, ruleset: CompiledRuleset, *, now: float, prefix: str = ""
) -> BusinessEvent:
    """A checked event; InvalidRequestError names the first field that is wrong."""
    check_identifier(prefix + "event_id", message.event_id, required=True)
    if not message.type:
        raise InvalidRequestError(prefix + "type", "is required")
    if message.customer_id:
        check_identifier(prefix + "customer_id", message.customer_id, required=True)
    audience = None
    if message.HasField("audience"):
        value = message.audience.value.strip()
        if len(value) > MAX_TEXT_LENGTH:
            raise InvalidRequestError(
                prefix + "audience.value", f"at most {MAX_TEXT_LENGTH} characters"
            )
        audience = (message.audience.field, value)
    if len(message.attributes) > MAX_EVENT_ATTRIBUTES:
        raise InvalidRequestError(prefix + "attributes", f"at most {MAX_EVENT_ATTRIBUTES} entries")
    for key, value in message.attributes.items():
        if len(value) > MAX_TEXT_LENGTH:
            raise InvalidRequestError(
                f"{prefix}attributes[{key[:64]}]", f"at most {MAX_TEXT_LENGTH} characters"
            )
    at = now
    if message.HasField("occurred_at"):
        at = occurred_at(message.occurred_at, now=now)
    event = BusinessEvent(
        event_id=message.event_id,
        type=message.type,
        occurred_at=at,
        attributes=dict(message.attributes),
        customer_id=message.customer_id,
        audience=audience,
    )
    problem = event_problem(ruleset, event)
    if problem is not None:
        raise InvalidRequestError(prefix + problem[0], problem[1])
    return event


RECEIPT_STATUSES = ("delivered", "failed", "bounced")


def notice_receipt(message: pb.NoticeReceipt) -> tuple[str, str, str]:
    """(key, status, provider_ref) of a checked receipt."""
    if not message.key or len(message.key) > 3 * 128 + 2:
        raise InvalidRequestError("key", "is required: the notice's idempotency key")
    if message.status not in RECEIPT_STATUSES:
        raise InvalidRequestError("status", f"one of {', '.join(RECEIPT_STATUSES)}")
    if len(message.provider_ref) > MAX_TEXT_LENGTH:
        raise InvalidRequestError("provider_ref", f"at most {MAX_TEXT_LENGTH} characters")
    return message.key, message.status, message.provider_ref
