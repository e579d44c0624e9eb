"""Decision ids that carry the decision: signed, so outcomes can be checked without a
write per decision.

    <payload>.<signature>, both base64url: the payload is the decision record as
    compact JSON, the signature an HMAC-SHA256 (truncated to 128 bits) with a key
    every replica shares (kept in Redis, or set with DECISION_ENGINE_DECISION_SECRET).

An id that does not verify, or is older than the decision TTL, is unknown. So is any
other spelling of an id we issued (padding, the standard alphabet, unused low bits):
outcomes are deduplicated on the id, so one decision must have exactly one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import os
import secrets

from decision_engine.errors import DecisionNotFoundError
from decision_engine.store.keys import DECISION_SECRET
from decision_engine.store.outcomes import DecisionRecord
from decision_engine.vocabulary import id_problem

SECRET_KEY = DECISION_SECRET
_SIGNATURE_BYTES = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """Strict: only the spelling `_b64` makes decodes (the lenient decoder ignores
    padding, foreign characters and unused bits, so many spellings give the same bytes)."""
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:
        raise ValueError("not the canonical spelling")
    return data


class DecisionIds:
    """Issues and verifies decision ids with one shared secret."""

    def __init__(self, secret: bytes, *, ttl_s: float) -> None:
        self._secret = secret
        self.ttl_s = ttl_s

    def issue(self, record: DecisionRecord) -> str:
        payload = json.dumps(
            [
                record.customer_id,
                list(record.offer_ids),
                record.interaction_id,
                record.channel,
                record.ruleset_version,
                record.arm,
                round(record.at, 3),
                # Unique even for two identical decisions in the same millisecond.
                os.urandom(6).hex(),
            ],
            separators=(",", ":"),
        ).encode()
        return f"{_b64(payload)}.{_b64(self._sign(payload))}"

    def verify(self, decision_id: str, *, now: float) -> DecisionRecord:
        """The decision an id stands for; DecisionNotFoundError if forged, garbled or expired."""
        unknown = DecisionNotFoundError(
            f"decision {decision_id[:40]}... not found (unknown, or older than "
            f"{self.ttl_s / 86400:g} days)"
        )
        body, _, signature = decision_id.partition(".")
        try:
            payload, mac = _unb64(body), _unb64(signature)
        except (binascii.Error, ValueError):
            raise unknown from None
        if not hmac.compare_digest(mac, self._sign(payload)):
            raise unknown
        # Rebuilt from the bytes, so the record carries the one spelling we issue.
        record = _record(f"{_b64(payload)}.{_b64(mac)}", payload)
        if record is None or now - record.at > self.ttl_s:
            raise unknown
        return record

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:_SIGNATURE_BYTES]


def _record(decision_id: str, payload: bytes) -> DecisionRecord | None:
    """The decision a signed payload holds; None if it is not the shape `issue` writes
    (another version's, or one signed before ids were checked)."""
    try:
        fields = json.loads(payload)
    except ValueError:  # also UnicodeDecodeError
        return None
    if not isinstance(fields, list) or len(fields) != 8:
        return None
    customer, offers, interaction, channel, version, arm, at, nonce = fields
    if not isinstance(offers, list) or not all(isinstance(o, str) for o in offers):
        return None
    if not all(isinstance(t, str) for t in (customer, interaction, channel, version, arm, nonce)):
        return None
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        return None
    # Ids end up in stored history: an id the request checks refuse must not get there.
    ids = [customer, *offers, *([interaction] if interaction else [])]
    if any(id_problem(i) is not None for i in ids):
        return None
    return DecisionRecord(
        decision_id, customer, tuple(offers), interaction, channel, version, arm, float(at)
    )


def new_secret() -> str:
    return secrets.token_hex(32)
