"""The senders of notices, and `sender_for`, which builds one from a URI.

    https://hooks.bank.example/notices?timeout=3     WebhookSender (needs the webhook secret)
    smtp://relay:25?from=care@bank.example           SmtpSender, no TLS, no login
    smtp+starttls://user:pw@relay:587?from=care@…    SmtpSender, STARTTLS, then login
    file:var/notices.jsonl                           FileSender (relative to base_dir)

`timeout=` (seconds, default 5) is taken by webhook and smtp URIs.
"""

from __future__ import annotations

import math
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from decision_engine.delivery.base import (
    DELIVERED,
    FAILED,
    RETRY,
    Sender,
    SendResult,
)
from decision_engine.delivery.file_sink import FileSender
from decision_engine.delivery.smtp import SmtpSender
from decision_engine.delivery.webhook import WebhookSender, verify_signature
from decision_engine.errors import ConfigError

__all__ = [
    "DELIVERED",
    "FAILED",
    "RETRY",
    "FileSender",
    "SendResult",
    "Sender",
    "SmtpSender",
    "WebhookSender",
    "sender_for",
    "verify_signature",
]

DEFAULT_TIMEOUT_S = 5.0
_SMTP_PORTS = {"smtp": 25, "smtp+starttls": 587}


def sender_for(uri: str, *, webhook_secret: str | None, base_dir: Path) -> Sender:
    """The sender a URI names; ConfigError says what is wrong with it."""
    try:
        parts = urlsplit(uri.strip())
        scheme = parts.scheme.lower()
        if scheme in ("http", "https"):
            return _webhook(parts.geturl(), webhook_secret)
        if scheme in _SMTP_PORTS:
            return _smtp(uri.strip(), scheme)
        if scheme == "file":
            return _file(uri.strip(), base_dir)
    except ValueError as exc:  # urlsplit's and .port's complaints (a bad port, a bad IPv6)
        raise ConfigError(f"sender {_redact(uri)}: {exc}") from None
    raise ConfigError(
        f"sender {_redact(uri)}: unknown kind {parts.scheme or '(none)'!r}; expected "
        "https://…, http://…, smtp://…, smtp+starttls://… or file:…"
    )


def _webhook(uri: str, secret: str | None) -> WebhookSender:
    parts = urlsplit(uri)
    if not parts.hostname:
        raise ConfigError(f"webhook {_redact(uri)}: no host")
    if not secret:
        raise ConfigError(
            f"webhook {_redact(uri)}: needs a signing secret: set --webhook-secret "
            "(or DECISION_ENGINE_WEBHOOK_SECRET)"
        )
    query = parse_qsl(parts.query, keep_blank_values=True)
    timeout = _timeout(uri, [value for name, value in query if name == "timeout"])
    # timeout= is ours, not the endpoint's: the rest of the query is posted to as given.
    rest = urlencode([(name, value) for name, value in query if name != "timeout"])
    url = urlunsplit((parts.scheme, parts.netloc, parts.path or "/", rest, ""))
    return WebhookSender(url, secret=secret, timeout=timeout)


def _smtp(uri: str, scheme: str) -> SmtpSender:
    parts = urlsplit(uri)
    shown = _redact(uri)
    if not parts.hostname:
        raise ConfigError(f"smtp {shown}: no host")
    query = parse_qsl(parts.query, keep_blank_values=True)
    unknown = sorted({name for name, _ in query} - {"from", "timeout"})
    if unknown:
        raise ConfigError(f"smtp {shown}: unknown setting {', '.join(unknown)} (from, timeout)")
    senders = [value for name, value in query if name == "from"]
    if len(senders) != 1 or "@" not in senders[0]:
        raise ConfigError(f"smtp {shown}: needs from=<address>, e.g. ?from=care@bank.example")
    starttls = scheme == "smtp+starttls"
    if parts.password is not None and not starttls:
        # Login over a plain connection would send the password in the clear.
        raise ConfigError(f"smtp {shown}: a password needs smtp+starttls://")
    return SmtpSender(
        parts.hostname,
        parts.port or _SMTP_PORTS[scheme],
        sender=senders[0],
        starttls=starttls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        timeout=_timeout(uri, [value for name, value in query if name == "timeout"]),
    )


def _file(uri: str, base_dir: Path) -> FileSender:
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(f"file sender {uri}: a host ({parts.netloc}) is not supported")
    if parts.query or parts.fragment:
        raise ConfigError(f"file sender {uri}: takes no ?settings")
    if not parts.path or parts.path.endswith("/"):
        raise ConfigError(f"file sender {uri}: needs a file name, e.g. file:var/notices.jsonl")
    path = Path(unquote(parts.path))
    return FileSender(path if path.is_absolute() else base_dir / path)


def _timeout(uri: str, values: list[str]) -> float:
    if not values:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(values[-1])
    except ValueError:
        seconds = math.nan
    if len(values) > 1 or not (0 < seconds <= 600):
        raise ConfigError(f"sender {_redact(uri)}: timeout= must be seconds in (0, 600]")
    return seconds


def _redact(uri: str) -> str:
    """The URI as an error message may show it: no password."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "(unparseable URI)"
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
