"""The records a decision returns: equal, hashed and shown by their fields, read-only."""

from __future__ import annotations

import pytest

from decision_engine import _core
from decision_engine.decide.values import Decision, Explanation, RankedOffer, Record, Routing


def offer(score: float = 2.0) -> RankedOffer:
    return RankedOffer("upgrade", "Gold", "Hi", "cards", score, 1.5, 0.25, 8.0, ("upgrade",), ())


def test_records_are_equal_and_hash_alike_by_their_fields() -> None:
    assert offer() == offer() and hash(offer()) == hash(offer())
    assert offer(2.0) != offer(3.0)
    # The same values, not in a record of that kind, are not the record.
    assert offer() != offer().values()
    assert Explanation("routing", "r", True, "d") != Explanation("policy", "r", True, "d")
    assert len({Routing("q", 1, "r", "x"), Routing("q", 1, "r", "x")}) == 1


def test_a_record_shows_every_field() -> None:
    assert repr(Routing("retention", 2, "churn", "r1")) == (
        "Routing(queue='retention', priority=2, reason='churn', rule_id='r1', skip_ivr=False)"
    )


def test_replace_changes_only_what_the_server_sets() -> None:
    routing = Routing("q", 1, "r", "x")
    first = Decision("d1", (offer(),), routing, "v1", True, degraded=True, suppressed_by=("p",))
    again = first.replace(decision_id="d2", offers=(), arm="control")
    assert (again.decision_id, again.offers, again.arm) == ("d2", (), "control")
    kept = ("routing", "ruleset_version", "profile_found", "degraded", "suppressed_by", "notices")
    assert [getattr(again, f) for f in kept] == [getattr(first, f) for f in kept]
    assert first.replace() == first and first.decision_id == "d1"


@pytest.mark.skipif(not _core.MODE.startswith("compiled"), reason=f"core: {_core.MODE}")
def test_compiled_records_cannot_be_changed() -> None:
    record = offer()
    with pytest.raises(AttributeError):
        record.score = 9.0  # type: ignore[misc]
    assert record.score == 2.0


@pytest.mark.parametrize(
    "record",
    [
        offer(),
        Routing("q", 1, "r", "x", True),
        Explanation("offer", "upgrade", False, "clv >= 10: clv is 2"),
        Decision("d", (offer(),), Routing("q", 1, "r", "x"), "v", True, arm="control"),
    ],
    ids=lambda r: type(r).__name__,
)
def test_a_records_fields_are_its_constructors_arguments_in_order(record: Record) -> None:
    assert type(record)(*record.values()) == record
    attributes = getattr(record, "__dict__", None)  # compiled records keep no __dict__
    if attributes is not None:
        assert list(attributes) == list(record.FIELDS)
