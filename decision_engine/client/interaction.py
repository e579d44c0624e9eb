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
        f"← {elapsed:+7.1f}s  #{item.seq} [{severity}] {kind}: {item.title} — {item.text}"
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
    return f"→ {elapsed:+7.1f}s  {kind}{detail}"


def follow(
    connection: Connection,
    interaction_id: str,
    *,
    after_seq: int = 0,
    timeout: float | None = None,
    started: float | None = None,
    echo: Echo = click.echo,
) -> list[pb.Guidance]:
    """WatchGuidance until the interaction's guidance ends; prints each item."""
    begin = time.monotonic() if started is None else started
    with _channel(connection) as channel:
        stub = pb_grpc.GuidanceServiceStub(channel)
        request = pb.WatchGuidanceRequest(interaction_id=interaction_id, after_seq=after_seq)
        items = []
        try:
            for item in stub.WatchGuidance(request, timeout=timeout, metadata=connection.metadata):
                items.append(item)
                for line in guidance_lines(item, time.monotonic() - begin):
                    echo(line)
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

    def say(line: str) -> None:
        with lock:
            echo(line)

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
                    started=begin,
                    echo=say,
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
            say(_event_line(event, time.monotonic() - begin))
    watcher.join()
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
