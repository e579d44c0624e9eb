"""Real servers for the sender tests: an aiohttp webhook receiver and an aiosmtpd relay
handler, both recording what they get, and the notice the tests send."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session

from decision_engine.store.outbox import OutboxEntry


def entry(**changes: Any) -> OutboxEntry:
    fields: dict[str, Any] = {
        "key": "evt-1/card-blocked/cust-42/email",
        "notice_id": "card-blocked",
        "event_id": "evt-1",
        "event_type": "card_blocked",
        "customer_id": "cust-42",
        "channel": "email",
        "address": "ann@example.org",
        "subject": "Your card is blocked",
        "text": "We blocked your card. A new one is on its way.",
        "urgent": True,
        "decided_at": 1_767_000_000.25,
        "not_before": 0.0,
        "attempt": 2,
    }
    fields.update(changes)
    return OutboxEntry(**fields)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Receiver:
    """An HTTP endpoint that records each request and answers as told."""

    status: int = 200
    reply: bytes = b'{"id": "prov-123"}'
    stall: bool = False
    requests: list[tuple[dict[str, str], bytes, Any]] = field(default_factory=list)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.requests.append((dict(request.headers), body, peer))
        if self.stall:
            await self.released.wait()
        return web.Response(status=self.status, body=self.reply)


@asynccontextmanager
async def receiving(receiver: Receiver) -> AsyncIterator[Receiver]:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        yield receiver
    finally:
        receiver.released.set()
        await runner.cleanup()


class Relay:
    """An aiosmtpd handler: records each message; refuses recipients at refused.example."""

    def __init__(self) -> None:
        self.messages: list[tuple[Envelope, EmailMessage]] = []

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address.endswith("@refused.example"):
            return "550 5.1.1 No such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        message = message_from_bytes(content, policy=default_policy)
        assert isinstance(message, EmailMessage)  # what the default policy builds
        self.messages.append((envelope, message))
        return "250 Message accepted"
