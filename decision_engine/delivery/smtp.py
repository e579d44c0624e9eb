"""Notices as e-mail through an SMTP relay (aiosmtplib), one connection per send."""

from __future__ import annotations

import hashlib
from email.message import EmailMessage
from email.utils import formatdate

import aiosmtplib

from decision_engine.delivery.base import DELIVERED, FAILED, RETRY, SendResult
from decision_engine.store.outbox import OutboxEntry

DEFAULT_SUBJECT = "A message from us"


def message_id(key: str) -> str:
    """The Message-ID of a notice: from its key, so a redelivery has the same one and a
    mail client can tell it is a repeat."""
    return f"<{hashlib.sha256(key.encode('utf-8')).hexdigest()[:32]}@decision-engine>"


class SmtpSender:
    """Sends each notice as a plain-text e-mail from one address."""

    name = "smtp"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        sender: str,
        starttls: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.starttls = starttls
        self.username = username
        self.timeout = timeout
        self._password = password

    def message(self, entry: OutboxEntry) -> EmailMessage:
        """The e-mail of one notice; ValueError for a header that cannot be sent (a line
        break in the address or subject)."""
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = entry.address
        message["Subject"] = entry.subject or DEFAULT_SUBJECT
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = message_id(entry.key)
        message["X-Notice-Key"] = entry.key
        message.set_content(entry.text)
        return message

    async def send(self, entry: OutboxEntry) -> SendResult:
        """Hand the e-mail to the relay; its reply codes say DELIVERED, RETRY or FAILED."""
        if not entry.address:
            return SendResult(FAILED, "no e-mail address")
        try:
            message = self.message(entry)
        except ValueError as exc:
            return SendResult(FAILED, f"cannot build the e-mail: {exc}")
        try:
            await aiosmtplib.send(
                message,
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self._password,
                # Explicit either way: `None` would upgrade only when the relay offers it.
                start_tls=self.starttls,
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPTimeoutError:
            return SendResult(RETRY, f"timeout after {self.timeout:g} s")
        except aiosmtplib.SMTPRecipientsRefused as exc:
            return _refused(exc)
        except aiosmtplib.SMTPResponseException as exc:
            # 5xx is the relay's "never" (RFC 5321), 4xx its "not now".
            status = FAILED if exc.code >= 500 else RETRY
            return SendResult(status, f"SMTP {exc.code}")
        except aiosmtplib.SMTPConnectError as exc:
            refused = isinstance(exc.__cause__, ConnectionRefusedError)
            return SendResult(RETRY, "connection refused" if refused else "cannot connect")
        except (aiosmtplib.SMTPException, OSError) as exc:
            return SendResult(RETRY, f"{type(exc).__name__}: {exc}")
        return SendResult(DELIVERED, "accepted", message["Message-ID"])

    async def aclose(self) -> None:
        """Nothing held between sends."""


def _refused(exc: aiosmtplib.SMTPRecipientsRefused) -> SendResult:
    # Only a permanent refusal (5xx) is FAILED: a 4xx one (mailbox busy) may pass later.
    codes = sorted({refusal.code for refusal in exc.recipients}) or [550]
    status = FAILED if all(code >= 500 for code in codes) else RETRY
    return SendResult(status, f"SMTP {'/'.join(map(str, codes))} recipient refused")
