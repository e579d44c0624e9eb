"""Unary calls for the CLI: `decide`, `outcome`, `rules show`."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import click
import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from decision_engine.channels import ClientTls
from decision_engine.channels import channel as tls_channel
from decision_engine.errors import ConfigError
from decision_engine.wire import channel_value


@dataclass(frozen=True, slots=True)
class Connection:
    """Where a server is and how to reach it."""

    target: str
    tls: ClientTls | None = None
    token: str = ""

    def channel(self) -> grpc.Channel:
        return tls_channel(self.target, self.tls)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


def call_decide(
    connection: Connection,
    *,
    timeout: float,
    customer: str,
    channel: str,
    intent: str,
    queue: str,
    sentiment: float | None,
    interaction: str,
    attributes: dict[str, str],
    max_offers: int,
    explain: bool,
) -> dict[str, Any]:
    """Call Decide; a gRPC error exits with its status and message."""
    context = pb.InteractionContext(
        channel=pb.Channel.ValueType(channel_value(channel)),
        intent=intent,
        queue=queue,
        attributes=attributes,
    )
    if sentiment is not None:
        context.sentiment = sentiment
    request = pb.DecideRequest(
        customer_id=customer,
        interaction_id=interaction,
        context=context,
        max_offers=max_offers,
        explain=explain,
    )
    return _call(connection, "Decide", request, timeout)


def call_record_outcome(
    connection: Connection,
    *,
    decision_id: str,
    offer_id: str,
    outcome: str,
    channel: str | None,
    reason: str,
    timeout: float = 5.0,
) -> dict[str, Any]:
    """Call RecordOutcome; a gRPC error exits with its status and message."""
    request = pb.RecordOutcomeRequest(
        decision_id=decision_id,
        offer_id=offer_id,
        outcome=pb.Outcome.Value(f"OUTCOME_{outcome.upper()}"),
        reason=reason,
    )
    if channel:
        request.channel = pb.Channel.ValueType(channel_value(channel))
    return _call(connection, "RecordOutcome", request, timeout)


def call_ruleset_status(connection: Connection, *, timeout: float = 5.0) -> dict[str, Any]:
    """The active ruleset of the worker that answers."""
    return _call(
        connection, "GetRuleset", pb.GetRulesetRequest(), timeout, stub=pb_grpc.AdminServiceStub
    )


def call_publish_event(
    connection: Connection,
    *,
    event_id: str,
    event_type: str,
    customer: str,
    audience: tuple[str, str] | None,
    attributes: dict[str, str],
    timeout: float = 5.0,
) -> dict[str, Any]:
    """Call PublishEvent; a gRPC error exits with its status and message."""
    request = pb.BusinessEvent(
        event_id=event_id, type=event_type, customer_id=customer, attributes=attributes
    )
    if audience is not None:
        request.audience.CopyFrom(pb.Audience(field=audience[0], value=audience[1]))
    return _call(connection, "PublishEvent", request, timeout, stub=pb_grpc.NoticeServiceStub)


def _call(
    connection: Connection,
    method: str,
    request: Message,
    timeout: float,
    *,
    stub: Any = pb_grpc.DecisionServiceStub,
) -> dict[str, Any]:
    """One unary call as a dict; a gRPC error exits with its status and message."""
    try:
        channel = connection.channel()
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    with channel:
        try:
            reply = getattr(stub(channel), method)(
                request, timeout=timeout, metadata=connection.metadata
            )
        except grpc.RpcError as exc:
            click.echo(f"error: {exc.code().name}: {exc.details()}", err=True)
            sys.exit(1)
    return MessageToDict(
        reply, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def print_decision(response: dict[str, Any]) -> None:
    """A readable screen pop: routing, offers, and explanations when asked."""
    console = Console()
    routing = response["routing"]
    flags = [
        "profile found" if response["profile_found"] else "unknown customer",
        *(["DEGRADED (store unavailable)"] if response["degraded"] else []),
    ]
    console.print(
        f"[bold]ruleset[/bold] {response['ruleset_version']}  arm {response['arm']}"
        f"  ({', '.join(flags)})"
    )
    console.print(
        f"[bold]routing[/bold]  queue [cyan]{routing['queue']}[/cyan]  priority "
        f"{routing['priority']}{'  skip IVR' if routing['skip_ivr'] else ''}  "
        f"rule {routing['rule_id']}: {routing['reason']}"
    )
    table = Table(title="offers", show_lines=True)
    for column in ("#", "offer", "score", "EV", "p", "script"):
        table.add_column(column, overflow="fold")
    for rank, offer in enumerate(response["offers"], 1):
        table.add_row(
            str(rank),
            f"{offer['offer_id']}\n[dim]{offer['category']}[/dim]",
            f"{offer['score']:,.1f}",
            f"{offer['expected_value']:,.1f}",
            f"{offer['propensity']:.2f}",
            offer["script"],
        )
    console.print(table)
    for notice in response.get("notices", []):
        # What we told the customer before they called: the agent should know.
        console.print(
            f"[bold]notice[/bold] {notice['notice_id']} by {notice['channel']} "
            f"({notice['status']}, {notice.get('decided_at', '')}): {notice['text']}"
        )
    # Printed whole, unwrapped: it is what `decision-engine outcome --decision` takes.
    console.print(f"[dim]decision id:[/dim] {response['decision_id']}", soft_wrap=True)
    if response["explanations"]:
        why = Table(title="why")
        for column in ("kind", "rule", "applies", "detail"):
            why.add_column(column, overflow="fold")
        for item in response["explanations"]:
            why.add_row(
                item["kind"].removeprefix("KIND_").lower(),
                item["rule_id"],
                "yes" if item["matched"] else "no",
                item["detail"],
            )
        console.print(why)
