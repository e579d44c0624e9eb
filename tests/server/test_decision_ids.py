"""Signed decision ids: what an outcome is checked against, without a write per decision."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from decision_engine.errors import DecisionNotFoundError
from decision_engine.server.decision_ids import DecisionIds, new_secret
from decision_engine.store.outcomes import DecisionRecord

NOW = 1_750_000_000.0
RECORD = DecisionRecord("", "C-1", ("a", "b"), "call-7", "voice", "v1", "challenger", NOW)


def test_an_id_carries_its_decision() -> None:
    ids = DecisionIds(b"k" * 32, ttl_s=7 * 86400)
    decision_id = ids.issue(RECORD)
    back = ids.verify(decision_id, now=NOW + 60)
    assert back.decision_id == decision_id
    assert (back.customer_id, back.offer_ids, back.interaction_id, back.arm) == (
        "C-1", ("a", "b"), "call-7", "challenger",
    )  # fmt: skip
    assert back.at == NOW
    assert ids.issue(RECORD) != decision_id, "two decisions never share an id"


def test_forged_garbled_foreign_and_expired_ids_are_unknown() -> None:
    ids = DecisionIds(new_secret().encode(), ttl_s=100)
    decision_id = ids.issue(RECORD)
    body, _, signature = decision_id.partition(".")
    other_key = DecisionIds(new_secret().encode(), ttl_s=100).issue(RECORD)
    for bad in (f"{body}x.{signature}", f"{body}.{signature[1:]}", "", "not an id", other_key):
        with pytest.raises(DecisionNotFoundError):
            ids.verify(bad, now=NOW)
    with pytest.raises(DecisionNotFoundError, match="older than"):
        ids.verify(decision_id, now=NOW + 101)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_an_id_has_exactly_one_spelling() -> None:
    """Regression: padded, standard-alphabet and low-bit variants verified as the same
    decision, and each was deduplicated as a new one."""
    ids = DecisionIds(b"k" * 32, ttl_s=100)
    decision_id = ids.issue(RECORD)
    body, _, signature = decision_id.partition(".")
    standard = base64.b64encode(base64.urlsafe_b64decode(signature + "==")).decode()
    variants = [
        f"{body}=.{signature}", f"{body}.{signature}==", f"{body}.{standard}",
        f"{body}.{signature[:-1]}{chr(ord(signature[-1]) + 1)}",
        f"{body[:8]}!{body[8:]}.{signature}",
    ]  # fmt: skip
    assert ids.verify(decision_id, now=NOW).decision_id == decision_id
    for variant in variants:
        assert variant != decision_id
        with pytest.raises(DecisionNotFoundError):
            ids.verify(variant, now=NOW)


def _signed(secret: bytes, payload: bytes) -> str:
    mac = hmac.new(secret, payload, hashlib.sha256).digest()[:16]
    return f"{_b64(payload)}.{_b64(mac)}"


@pytest.mark.parametrize(
    "payload",
    [
        b"not json", b"\xff", b"{}", b"[]", b'"x"', b"null",
        b'["C-1",["a"],"","voice","v1","champion",1750000000]',
        b'["C-1",["a"],"","voice","v1","champion",1750000000,"n","extra"]',
        b'[1,["a"],"","voice","v1","champion",1750000000,"n"]',
        b'["C-1","a","","voice","v1","champion",1750000000,"n"]',
        b'["C-1",[1],"","voice","v1","champion",1750000000,"n"]',
        b'["C-1",["a"],"","voice","v1","champion","1750000000","n"]',
        b'["C-1",["a"],"","voice","v1","champion",true,"n"]',
        b'["C-1",["a"],"","voice","v1","champion",NaN,"n"]',
        b'["C-1",["a"],"","voice","v1","champion",1e999,"n"]',
        b'["C-1",["a"],"i;x|declined","voice","v1","champion",1750000000,"n"]',
        b'["{C-1}",["a"],"","voice","v1","champion",1750000000,"n"]',
    ],
)  # fmt: skip
def test_a_signed_payload_of_another_shape_is_unknown(payload: bytes) -> None:
    secret = b"k" * 32
    ids = DecisionIds(secret, ttl_s=7 * 86400)
    assert ids.verify(
        _signed(secret, b'["C-1",["a"],"","voice","v1","champion",1750000000,"n"]'), now=NOW
    ).offer_ids == ("a",)
    with pytest.raises(DecisionNotFoundError):
        ids.verify(_signed(secret, payload), now=NOW)
