"""InteractionEvent messages for the tests, the way a desktop builds them."""

from __future__ import annotations

import time

from google.protobuf.timestamp_pb2 import Timestamp

from decision_engine._proto.decision.v1 import decision_pb2 as pb


def _at(at: float | None) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int((time.time() if at is None else at) * 1e9))
    return ts


def base(interaction: str, event_id: str, *, at: float | None = None, seq: int | None = None
         ) -> pb.InteractionEvent:  # fmt: skip
    event = pb.InteractionEvent(event_id=event_id, interaction_id=interaction, occurred_at=_at(at))
    if seq is not None:
        event.seq = seq
    return event


def started(interaction: str, event_id: str = "", *, customer: str = "C-1001",
            intent: str = "general_inquiry", **kw: object) -> pb.InteractionEvent:  # fmt: skip
    event = base(interaction, event_id or f"{interaction}-start", **kw)  # type: ignore[arg-type]
    details = pb.InteractionStarted(
        customer_id=customer, channel=pb.CHANNEL_VOICE, intent=intent, queue="general",
        agent_id="agent-7",
    )  # fmt: skip
    event.started.CopyFrom(details)
    return event


def said(interaction: str, event_id: str, text: str, *, agent: bool = False, **kw: object
         ) -> pb.InteractionEvent:  # fmt: skip
    event = base(interaction, event_id, **kw)  # type: ignore[arg-type]
    event.utterance.CopyFrom(
        pb.Utterance(speaker=pb.SPEAKER_AGENT if agent else pb.SPEAKER_CUSTOMER, text=text)
    )
    return event


def hold(interaction: str, event_id: str, **kw: object) -> pb.InteractionEvent:
    event = base(interaction, event_id, **kw)  # type: ignore[arg-type]
    event.hold_started.SetInParent()
    return event


def ended(interaction: str, event_id: str = "", **kw: object) -> pb.InteractionEvent:
    event = base(interaction, event_id or f"{interaction}-end", **kw)  # type: ignore[arg-type]
    event.ended.resolved = True
    return event
