"""`interaction replay` and `interaction watch`: live guidance as the agent sees it.

A recording is JSON Lines, one InteractionEvent per line in the proto's JSON form
(`{"event_id": "e1", "interaction_id": "CALL-1", "occurred_at": "2025-05-01T10:00:00Z",
"started": {"customer_id": "C-1001", "channel": "CHANNEL_VOICE"}}`). Replaying sends the
events with their recorded timing from now on (occurred_at rebased to the present), or
at once with `--fast` (rebased so that the last one happened now), under a fresh
interaction id, while a watch prints the guidance as it arrives.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import click
import grpc
from google.protobuf import json_format

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from decision_engine.client.calls import Connection
from decision_engine.errors import ConfigError
from decision_engine.wire import GUIDANCE_KIND_NAMES, SEVERITY_NAMES

Echo = Callable[[str], None]
_WATCH_AFTER_LAST_S = 60.0
"""How long replay waits for the guidance to end after its last event."""


def read_recording(path: Path) -> list[pb.InteractionEvent]:
    """The events of a recording, in file order; ConfigError names the line that is wrong."""
    events = []
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            events.append(json_format.Parse(line, pb.InteractionEvent()))
        except json_format.ParseError as exc:
            raise ConfigError(f"{path}:{number}: not an InteractionEvent: {exc}") from None
    if not events:
        raise ConfigError(f"{path}: no events")
    interactions = {event.interaction_id for event in events}
    if len(interactions) != 1:
        raise ConfigError(f"{path}: events of {len(interactions)} interactions; one per file")
    return events


def _seconds(ts: object) -> float:
    return ts.ToNanoseconds() / 1e9  # type: ignore[attr-defined, no-any-return]


def rebased(
    events: list[pb.InteractionEvent], *, now: float, fast: bool, interaction_id: str
) -> list[tuple[float, pb.InteractionEvent]]:
    """(when to send it, in seconds from now; the event as sent) for each event."""
    times = [_seconds(event.occurred_at) for event in events]
    shift = now - (max(times) if fast else times[0])
    out = []
    for at, event in zip(times, events, strict=True):
        copy = pb.InteractionEvent()
        copy.CopyFrom(event)
        copy.interaction_id = interaction_id
        copy.occurred_at.FromNanoseconds(int((at + shift) * 1e9))
        out.append((0.0 if fast else at - times[0], copy))
    return out


def guidance_lines(item: pb.Guidance, elapsed: float) -> list[str]:
    """How one guidance item reads on the agent's screen."""
    kind = GUIDANCE_KIND_NAMES.get(item.kind, "?")
    severity = SEVERITY_NAMES.get(item.severity, "?")
    lines = [
        f"← {_clock(elapsed)}  #{item.seq} [{severity}] {kind}: {item.title} — {item.text}"
        f"  ({item.moment_id})"
    ]
    if item.supersedes:
        lines.append(f"            replaces: {', '.join(item.supersedes)}")
    if item.HasField("routing"):
        lines.append(f"            transfer: {item.routing.queue} priority {item.routing.priority}")
    if item.HasField("decision"):
        decision = item.decision
        offers = ", ".join(f"{o.offer_id} ({o.score:,.0f})" for o in decision.offers) or "none"
        lines.append(
            f"            decision: {decision.routing.queue} p{decision.routing.priority}; "
            f"offers: {offers}"
        )
        lines.extend(f"              {o.offer_id}: {o.script}" for o in decision.offers[:1])
    return lines


def _event_line(event: pb.InteractionEvent, elapsed: float) -> str:
    kind = event.WhichOneof("kind") or "?"
    detail = ""
    if kind == "utterance":
        speaker = pb.Speaker.Name(event.utterance.speaker).removeprefix("SPEAKER_").lower()
        detail = f" {speaker}: {event.utterance.text}"
    elif kind == "started":
        detail = f" {event.started.customer_id} {event.started.intent}".rstrip()
    elif kind == "sentiment":
        speaker = pb.Speaker.Name(event.sentiment.speaker).removeprefix("SPEAKER_").lower()
        detail = f" {speaker} {event.sentiment.value:+.2f}"
    elif kind == "intent_changed":
        detail = f" {event.intent_changed.intent}"
    elif kind == "agent_action":
        action = pb.AgentAction.Name(event.agent_action.action).removeprefix("AGENT_ACTION_")
        detail = f" {action.lower()} {event.agent_action.offer_id}".rstrip()
    elif kind == "ended":
        detail = " resolved" if event.ended.resolved else " unresolved"
    return f"→ {_clock(elapsed)}  {kind}{detail}"


def _clock(seconds: float) -> str:
    """A point in the interaction as the agent counts it: minutes and seconds in."""
    minutes, rest = divmod(max(0.0, seconds), 60)
    return f"{int(minutes):3d}:{rest:04.1f}"


def follow(
    connection: Connection,
    interaction_id: str,
    *,
    after_seq: int = 0,
    timeout: float | None = None,
    origin: float | None = None,
    echo: Echo = click.echo,
    echo_at: Callable[[str, float], None] | None = None,
) -> list[pb.Guidance]:
    """WatchGuidance until the interaction's guidance ends; prints each item, timed by
    event time from `origin` (the interaction's first event), else from now."""
    begin = time.monotonic()
    with _channel(connection) as channel:
        stub = pb_grpc.GuidanceServiceStub(channel)
        request = pb.WatchGuidanceRequest(interaction_id=interaction_id, after_seq=after_seq)
        items = []
        try:
            for item in stub.WatchGuidance(request, timeout=timeout, metadata=connection.metadata):
                items.append(item)
                at = time.monotonic() - begin if origin is None else _seconds(item.at) - origin
                for line in guidance_lines(item, at):
                    if echo_at is None:
                        echo(line)
                    else:
                        echo_at(line, at)
        except grpc.RpcError as exc:
            _fail(exc)
    return items


def replay(
    connection: Connection, path: Path, *, fast: bool, interaction_id: str, echo: Echo = click.echo
) -> list[pb.Guidance]:
    """Send a recording's events (timed, or at once) and print the guidance timeline."""
    events = rebased(
        read_recording(path), now=time.time(), fast=fast, interaction_id=interaction_id
    )
    echo(f"replaying {len(events)} events of {path} as interaction {interaction_id}")
    lock = threading.Lock()
    # At once (--fast), guidance can arrive before the line of an event sent earlier:
    # the timeline is printed at the end, in the call's own order.
    timeline: list[tuple[float, int, int, str]] = []

    def say(line: str, at: float | None = None, rank: int = 1) -> None:
        with lock:
            if fast and at is not None:
                timeline.append((at, rank, len(timeline), line))
            else:
                echo(line)

    # The timeline is in the interaction's own time (event time), so a --fast replay reads
    # the same as the call did.
    origin = _seconds(events[0][1].occurred_at)
    begin = time.monotonic()
    watched: list[pb.Guidance] = []
    failure: list[BaseException] = []

    def watch() -> None:
        try:
            last = events[-1][0]
            watched.extend(
                follow(
                    connection,
                    interaction_id,
                    timeout=last + _WATCH_AFTER_LAST_S,
                    origin=origin,
                    echo_at=say,
                )
            )
        except SystemExit as exc:
            failure.append(exc)

    watcher = threading.Thread(target=watch, name="watch", daemon=True)
    watcher.start()
    with _channel(connection) as channel:
        stub = pb_grpc.GuidanceServiceStub(channel)
        for offset, event in events:
            pause = begin + offset - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            try:
                stub.PublishEvents(
                    pb.PublishEventsRequest(events=[event]),
                    timeout=10,
                    metadata=connection.metadata,
                )
            except grpc.RpcError as exc:
                _fail(exc)
            at = _seconds(event.occurred_at) - origin
            say(_event_line(event, at), at, rank=0)
    watcher.join()
    # Events sort before the guidance they caused (they were said first, at the same time).
    for *_, line in sorted(timeline):
        echo(line)
    if failure:
        raise failure[0]
    return watched


def _channel(connection: Connection) -> grpc.Channel:
    try:
        return connection.channel()
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


def _fail(exc: grpc.RpcError) -> None:
    code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
    details = exc.details() if hasattr(exc, "details") else str(exc)
    click.echo(f"error: {code}: {details}", err=True)
    sys.exit(1)
