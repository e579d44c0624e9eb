"""Real servers for the sender tests: an aiohttp webhook receiver and an aiosmtpd relay
handler, both recording what they get, and the notice the tests send."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session

from decision_engine.delivery.webhook import verify_signature
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


class WebhookThread:
    """A webhook receiver on a thread of its own (for a `serve` or a worker in another
    process): records every call's Idempotency-Key and JSON body; answers `status`, or
    what `answer` returns for the body."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.calls: list[tuple[str, dict[str, Any], bool]] = []
        self.status = 200
        self.hold_after: int | None = None
        """Calls after this many are held unanswered until `release()`."""
        self._gate = asyncio.Event()  # set (and waited on) in the receiver's own loop
        self._lock = threading.Lock()
        self._started = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.url = ""

    def __enter__(self) -> WebhookThread:
        self._thread.start()
        assert self._started.wait(10), "webhook receiver did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def keys(self, prefix: str = "") -> list[str]:
        with self._lock:
            return [key for key, _, _ in self.calls if key.startswith(prefix)]

    def bodies(self, prefix: str = "") -> list[dict[str, Any]]:
        with self._lock:
            return [body for key, body, _ in self.calls if key.startswith(prefix)]

    def wait_held(self, timeout: float) -> bool:
        """Until a call is being held (False if none within `timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.hold_after is not None and len(self.calls) > self.hold_after:
                    return True
            time.sleep(0.01)
        return False

    def release(self) -> None:
        """Answer the held calls, and hold none from now on."""
        self.hold_after = None
        self._loop.call_soon_threadsafe(self._gate.set)

    def all_signed(self) -> bool:
        with self._lock:
            return all(ok for _, _, ok in self.calls)

    def wait_for(self, count: int, timeout: float, prefix: str = "") -> bool:
        """Until `count` distinct keys (starting with `prefix`) arrived; False if not
        within `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(set(self.keys(prefix))) >= count:
                return True
            time.sleep(0.05)
        return False

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        signed = verify_signature(
            self.secret,
            request.headers.get("X-Timestamp", ""),
            body,
            request.headers.get("X-Signature-256", ""),
        )
        key = request.headers.get("Idempotency-Key", "")
        with self._lock:
            self.calls.append((key, json.loads(body), signed))
            held = self.hold_after is not None and len(self.calls) > self.hold_after
        if held:
            await self._gate.wait()
        return web.json_response({"id": f"prov-{len(self.calls)}"}, status=self.status)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()
