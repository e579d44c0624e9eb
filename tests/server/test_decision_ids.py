"""Signed decision ids: what an outcome is checked against, without a write per decision."""

from __future__ import annotations

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
