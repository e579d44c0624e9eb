"""Notices as signed JSON POSTs to an HTTP(S) endpoint (aiohttp's client)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Callable

import aiohttp

from decision_engine.delivery.base import (
    DELIVERED,
    FAILED,
    RETRY,
    SendResult,
    compact_json,
    notice_fields,
)
from decision_engine.store.outbox import OutboxEntry

POOL_LIMIT = 100
# Statuses that say "not now" rather than "never": timeout, too early, too many requests.
_RETRY_STATUSES = frozenset({408, 425, 429})


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Signature-256 header for a body sent at `timestamp` (see verify_signature)."""
    message = timestamp.encode("ascii") + b"." + body
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(secret: str, timestamp: str, body: bytes, header: str) -> bool:
    """True when `header` signs `body` at `timestamp` with `secret`.

    The scheme: the sender puts the unix time in seconds in `X-Timestamp` and
    `sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>` in `X-Signature-256`, the
    body being the exact bytes of the request. The compare takes constant time. A
    receiver should also refuse a timestamp more than a few minutes from its clock (a
    replayed request), and drop a repeated `Idempotency-Key` (a redelivery).
    """
    try:
        expected = sign(secret, timestamp, body)
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(expected.encode("ascii"), header.strip().encode("utf-8"))


class WebhookSender:
    """POSTs each notice to one URL; one connection pool for all sends."""

    name = "webhook"

    def __init__(
        self,
        url: str,
        *,
        secret: str,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self._secret = secret
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use: a ClientSession belongs to the loop it is made in.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=POOL_LIMIT),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        return self._session

    def request(self, entry: OutboxEntry) -> tuple[bytes, dict[str, str]]:
        """The body and headers of the POST for one notice."""
        body = compact_json(notice_fields(entry))
        timestamp = str(int(self._clock()))
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": entry.key,
            "X-Timestamp": timestamp,
            "X-Signature-256": sign(self._secret, timestamp, body),
        }
        return body, headers

    async def send(self, entry: OutboxEntry) -> SendResult:
        """POST the notice; the reply's status says DELIVERED, RETRY or FAILED."""
        body, headers = self.request(entry)
        try:
            # Redirects are not followed: a POST redirected becomes a GET elsewhere.
            async with self._client().post(
                self.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                reply = await response.read()
                return _result(response.status, reply)
        except TimeoutError:
            return SendResult(RETRY, f"timeout after {self.timeout:g} s")
        except aiohttp.ClientConnectorError as exc:
            return SendResult(RETRY, _connect_detail(exc))
        except (aiohttp.ClientError, OSError) as exc:
            return SendResult(RETRY, f"{type(exc).__name__}: {exc}")

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def _result(status: int, reply: bytes) -> SendResult:
    if 200 <= status < 300:
        return SendResult(DELIVERED, f"HTTP {status}", _reply_id(reply))
    if status in _RETRY_STATUSES or status >= 500:
        return SendResult(RETRY, f"HTTP {status}")
    # Other 4xx, and 3xx (the URL is wrong): sending the same again will not help.
    return SendResult(FAILED, f"HTTP {status}")


def _reply_id(reply: bytes) -> str:
    """The `id` of a JSON object reply, else "" (a receiver need not answer JSON)."""
    try:
        parsed = json.loads(reply)
    except ValueError:
        return ""
    if isinstance(parsed, dict) and parsed.get("id") is not None:
        return str(parsed["id"])
    return ""


def _connect_detail(exc: aiohttp.ClientConnectorError) -> str:
    if isinstance(exc.os_error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc.os_error, asyncio.TimeoutError):
        return "connect timeout"
    reason = exc.os_error.strerror or type(exc.os_error).__name__
    return f"cannot connect: {reason}"
