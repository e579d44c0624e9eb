"""The notice senders against real servers on ephemeral ports: an aiohttp receiver for
webhooks, an aiosmtpd relay for e-mail, and a temporary directory for the file sink."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from decision_engine.delivery.senders import (
    DELIVERED,
    FAILED,
    RETRY,
    FileSender,
    Sender,
    SendResult,
    SmtpSender,
    WebhookSender,
    sender_for,
    verify_signature,
)
from decision_engine.delivery.smtp import message_id
from decision_engine.errors import ConfigError
from decision_engine.store.outbox import OutboxEntry
from tests.delivery.support import Receiver, Relay, entry, free_port, receiving

SECRET = "s3cret-for-tests"
BODY_FIELDS = {
    "key", "notice_id", "event_id", "event_type", "customer_id", "channel", "address",
    "subject", "text", "urgent", "decided_at", "attempt",
}  # fmt: skip


def send_once(sender: Sender, notice: OutboxEntry) -> SendResult:
    async def main() -> SendResult:
        try:
            return await sender.send(notice)
        finally:
            await sender.aclose()

    return asyncio.run(main())


# --- webhook --------------------------------------------------------------------------


def post(receiver: Receiver, *notices: OutboxEntry, query: str = "") -> list[SendResult]:
    """Send the notices with one webhook sender (built from its URI) to the receiver."""

    async def main() -> list[SendResult]:
        async with receiving(receiver):
            sender = sender_for(receiver.url + query, webhook_secret=SECRET, base_dir=Path("."))
            try:
                return [await sender.send(notice) for notice in notices]
            finally:
                await sender.aclose()

    return asyncio.run(main())


def test_webhook_posts_the_notice_signed() -> None:
    receiver = Receiver()
    notice = entry()
    [result] = post(receiver, notice)
    assert result == SendResult(DELIVERED, "HTTP 200", "prov-123")
    [(headers, body, _)] = receiver.requests
    assert headers["Content-Type"] == "application/json"
    assert headers["Idempotency-Key"] == notice.key
    posted = json.loads(body)
    assert set(posted) == BODY_FIELDS
    assert posted["customer_id"] == "cust-42" and posted["urgent"] is True
    assert posted["decided_at"] == notice.decided_at and posted["attempt"] == 2
    # Compact, keys sorted: a receiver can rely on the exact bytes.
    assert body == json.dumps(posted, sort_keys=True, separators=(",", ":")).encode()
    timestamp, signature = headers["X-Timestamp"], headers["X-Signature-256"]
    assert timestamp.isdigit() and signature.startswith("sha256=")
    # The documented scheme, computed here independently of the sender's code.
    mac = hmac.new(SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    assert signature == f"sha256={mac.hexdigest()}"
    assert verify_signature(SECRET, timestamp, body, signature)
    assert not verify_signature(SECRET, timestamp, body.replace(b"cust-42", b"cust-43"), signature)
    assert not verify_signature(SECRET, str(int(timestamp) + 1), body, signature)
    assert not verify_signature("another secret", timestamp, body, signature)
    assert not verify_signature(SECRET, timestamp, body, "sha256=" + "0" * 64)


def test_webhook_reuses_one_connection_and_needs_no_json_reply() -> None:
    receiver = Receiver(reply=b"ok")
    results = post(receiver, entry(), entry(key="evt-2/card-blocked/cust-42/email"))
    assert [r.status for r in results] == [DELIVERED, DELIVERED]
    assert [r.provider_ref for r in results] == ["", ""]
    first, second = receiver.requests
    assert first[2] == second[2], "the second POST came on a new connection"
    assert second[0]["Idempotency-Key"] == "evt-2/card-blocked/cust-42/email"


@pytest.mark.parametrize(
    ("status", "expected"),
    [(503, RETRY), (500, RETRY), (429, RETRY), (408, RETRY), (400, FAILED), (404, FAILED)],
)
def test_webhook_status_says_retry_or_failed(status: int, expected: str) -> None:
    [result] = post(Receiver(status=status, reply=b'{"error": "no"}'), entry())
    assert result == SendResult(expected, f"HTTP {status}")


def test_webhook_that_stalls_is_retried_after_the_timeout() -> None:
    receiver = Receiver(stall=True)
    [result] = post(receiver, entry(), query="?timeout=0.2")
    assert result.status == RETRY
    assert result.detail == "timeout after 0.2 s"
    assert len(receiver.requests) == 1


def test_webhook_refused_connection_is_retried() -> None:
    # A bound socket that does not listen: the kernel refuses connections to its port.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        sender = sender_for(f"http://127.0.0.1:{port}/hook", webhook_secret=SECRET, base_dir=Path())
        result = send_once(sender, entry())
    assert result == SendResult(RETRY, "connection refused")


# --- smtp -----------------------------------------------------------------------------


@pytest.fixture
def relay() -> Iterator[tuple[Relay, int]]:
    handler = Relay()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def test_smtp_delivers_the_email(relay: tuple[Relay, int]) -> None:
    handler, port = relay
    uri = f"smtp://127.0.0.1:{port}?from=care@bank.example&timeout=10"
    notice = entry()
    result = send_once(sender_for(uri, webhook_secret=None, base_dir=Path()), notice)
    assert result == SendResult(DELIVERED, "accepted", message_id(notice.key))
    [(envelope, message)] = handler.messages
    assert envelope.mail_from == "care@bank.example"
    assert envelope.rcpt_tos == ["ann@example.org"]
    assert message["To"] == "ann@example.org" and message["From"] == "care@bank.example"
    assert message["Subject"] == "Your card is blocked"
    assert message["Message-ID"] == result.provider_ref
    assert message["X-Notice-Key"] == notice.key
    body = message.get_body(("plain",))
    assert body is not None and body.get_content().strip() == notice.text


def test_smtp_redelivery_has_the_same_message_id_and_a_default_subject(
    relay: tuple[Relay, int],
) -> None:
    handler, port = relay
    sender = SmtpSender("127.0.0.1", port, sender="care@bank.example", timeout=10)
    notice = entry(subject="")
    first, again = send_once(sender, notice), send_once(sender, notice)
    assert first.status == again.status == DELIVERED
    ids = [message["Message-ID"] for _, message in handler.messages]
    assert ids == [message_id(notice.key)] * 2
    assert ids[0].endswith("@decision-engine>") and len(ids[0]) == len("<@decision-engine>") + 32
    assert message_id("another/key") != ids[0]
    assert handler.messages[0][1]["Subject"] == "A message from us"


def test_smtp_refused_recipient_fails(relay: tuple[Relay, int]) -> None:
    handler, port = relay
    sender = SmtpSender("127.0.0.1", port, sender="care@bank.example", timeout=10)
    result = send_once(sender, entry(address="nobody@refused.example"))
    assert result.status == FAILED
    assert result.detail == "SMTP 550 recipient refused"
    assert handler.messages == []


def test_smtp_refused_connection_or_missing_address() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        sender = SmtpSender("127.0.0.1", port, sender="care@bank.example", timeout=10)
        assert send_once(sender, entry()) == SendResult(RETRY, "connection refused")
    assert send_once(sender, entry(address="")) == SendResult(FAILED, "no e-mail address")
    broken = send_once(sender, entry(subject="Hi\r\nBcc: everyone@example.org"))
    assert broken.status == FAILED


# --- file -----------------------------------------------------------------------------


def test_file_sink_appends_json_lines(tmp_path: Path) -> None:
    sender = sender_for("file:out/notices.jsonl", webhook_secret=None, base_dir=tmp_path)
    assert isinstance(sender, FileSender) and sender.path == tmp_path / "out/notices.jsonl"

    async def main() -> list[SendResult]:
        try:
            notices = [entry(key=f"evt-{n}/card-blocked/cust-42/email") for n in range(3)]
            return list(await asyncio.gather(*(sender.send(n) for n in notices)))
        finally:
            await sender.aclose()

    assert {r.status for r in asyncio.run(main())} == {DELIVERED}
    lines = [json.loads(line) for line in sender.path.read_text().splitlines()]
    assert sorted(line["key"] for line in lines) == [
        f"evt-{n}/card-blocked/cust-42/email" for n in range(3)
    ]
    assert all(set(line) == BODY_FIELDS | {"delivered_at"} for line in lines)
    assert all(isinstance(line["delivered_at"], float) for line in lines)


def test_file_sink_that_cannot_write_retries(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    result = send_once(FileSender(tmp_path / "a-file" / "notices.jsonl"), entry())
    assert result.status == RETRY and "notices.jsonl" in result.detail


# --- sender_for -----------------------------------------------------------------------


def test_sender_for_each_kind(tmp_path: Path) -> None:
    hook = sender_for(
        "https://hooks.bank.example/notices?timeout=2.5&tenant=7",
        webhook_secret=SECRET,
        base_dir=tmp_path,
    )
    assert isinstance(hook, WebhookSender) and hook.name == "webhook"
    assert hook.url == "https://hooks.bank.example/notices?tenant=7" and hook.timeout == 2.5
    plain = sender_for("smtp://relay.bank.example?from=care@bank.example", webhook_secret=None,
                       base_dir=tmp_path)  # fmt: skip
    assert isinstance(plain, SmtpSender) and plain.name == "smtp"
    assert (plain.host, plain.port, plain.starttls, plain.username) == (
        "relay.bank.example", 25, False, None,
    )  # fmt: skip
    assert plain.sender == "care@bank.example" and plain.timeout == 5.0
    tls = sender_for("smtp+starttls://mailer:p%40ss@relay:2587?from=care@bank.example",
                     webhook_secret=None, base_dir=tmp_path)  # fmt: skip
    assert isinstance(tls, SmtpSender)
    assert (tls.host, tls.port, tls.starttls, tls.username) == ("relay", 2587, True, "mailer")
    absolute = sender_for(f"file:{tmp_path}/x.jsonl", webhook_secret=None, base_dir=Path("/nope"))
    assert isinstance(absolute, FileSender) and absolute.path == tmp_path / "x.jsonl"


@pytest.mark.parametrize(
    ("uri", "secret", "says"),
    [
        ("ftp://files.example/notices", SECRET, "unknown kind 'ftp'"),
        ("notices.jsonl", SECRET, "unknown kind"),
        ("smtp://relay:25", None, "needs from="),
        ("smtp://relay:25?from=", None, "needs from="),
        ("smtp://relay:25?from=a@b.example&form=x", None, "unknown setting form"),
        ("smtp://relay:99999?from=a@b.example", None, "Port out of range"),
        ("smtp://user:hunter2@relay?from=a@b.example", None, "smtp+starttls"),
        ("https://hooks.example/x", None, "--webhook-secret"),
        ("https://hooks.example/x", "", "DECISION_ENGINE_WEBHOOK_SECRET"),
        ("https://hooks.example/x?timeout=0", SECRET, "timeout="),
        ("https://hooks.example/x?timeout=soon", SECRET, "timeout="),
        ("https:///x", SECRET, "no host"),
        ("file:", None, "needs a file name"),
        ("file://elsewhere/x.jsonl", None, "host"),
    ],
)
def test_sender_for_bad_uri(uri: str, secret: str | None, says: str) -> None:
    with pytest.raises(ConfigError) as raised:
        sender_for(uri, webhook_secret=secret, base_dir=Path())
    assert says in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_send_result_takes_only_known_statuses() -> None:
    with pytest.raises(ValueError, match="status"):
        SendResult("maybe")
    assert len(SendResult(RETRY, "x" * 500).detail) == 200
