"""store/outcomes.py against a real Redis: the outcome log (once per outcome), applying
an outcome to what decisions read (once, however often it is sent), the TTLs of both,
stored entries that do not parse, and which Redis a failure is blamed on."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest
import redis

from decision_engine.errors import OutcomeLogUnavailableError, StoreUnavailableError
from decision_engine.ruleset.spec import Learning
from decision_engine.store.connection import PipelinedConnection
from decision_engine.store.keys import (
    ARM_STATS,
    LEARNING,
    OFFER_STATS,
    OUTCOME_STREAM,
    history_key,
    profile_key,
)
from decision_engine.store.outcomes import (
    HISTORY_DAYS,
    HISTORY_EVENTS,
    DecisionRecord,
    LoggedOutcome,
    Recorded,
    apply_outcome,
    load_learning,
    log_outcome,
    logged_outcome,
    record_outcome,
)

T = TypeVar("T")
NOW = 1_750_000_000.0
DAY = 86_400
TTL_S = 3_600.0
LEARN = Learning(enabled=True, prior_strength=20, half_life_days=30, by=None, exploration=0)
BY_SEGMENT = Learning(
    enabled=True, prior_strength=20, half_life_days=30, by="segment", exploration=0
)
DECISION = DecisionRecord(
    "payload.sig", "C-1", ("a", "b"), "call-7", "voice", "v1", "champion", NOW - 60
)


def run(redis_url: str, scenario: Callable[[PipelinedConnection], Awaitable[T]]) -> T:
    async def main() -> T:
        connection = PipelinedConnection(redis_url)
        try:
            return await scenario(connection)
        finally:
            await connection.aclose()

    return asyncio.run(main())


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url, decode_responses=True) as c:
        yield c


def marker(decision: DecisionRecord, offer_id: str, outcome: str) -> str:
    digest = hashlib.sha1(decision.decision_id.encode()).hexdigest()
    return f"nba:outcome:{{nba:outcomes}}:{digest}:{offer_id}:{outcome}"


def applied_markers(decision: DecisionRecord, offer_id: str, outcome: str) -> list[str]:
    """Every step's marker of applying an offer outcome (with learning off)."""
    digest = hashlib.sha1(decision.decision_id.encode()).hexdigest()
    which = f"{digest}:{offer_id}:{outcome}"
    return [
        f"nba:{{{decision.customer_id}}}:applied:{which}",
        f"nba:applied:{{nba:arm-stats}}:{digest}",
        f"nba:applied:{{nba:arm-stats}}:{which}",
        f"nba:applied:{{nba:offer-stats}}:{which}",
    ]


async def log(
    connection: PipelinedConnection,
    decision: DecisionRecord = DECISION,
    offer_id: str = "a",
    outcome: str = "accepted",
    *,
    channel: str = "",
    reason: str = "",
    at: float = NOW,
    stream_maxlen: int = 1_000_000,
) -> Recorded:
    return await log_outcome(
        connection, decision=decision, offer_id=offer_id, outcome=outcome, channel=channel,
        reason=reason, at=at, decision_ttl_s=TTL_S, stream_maxlen=stream_maxlen,
    )  # fmt: skip


async def apply(
    connection: PipelinedConnection,
    offer_id: str = "a",
    outcome: str = "accepted",
    *,
    decision: DecisionRecord = DECISION,
    at: float = NOW,
    learning: Learning | None = None,
) -> bool:
    entry = logged_outcome(decision, offer_id=offer_id, outcome=outcome, at=at)
    return await apply_outcome(connection, entry, decision_ttl_s=TTL_S, learning=learning)


def history(client: redis.Redis, offer_id: str = "a", customer: str = "C-1") -> list[str]:
    stored = client.hget(history_key(customer), offer_id)
    return [] if stored is None else str(stored).split(";")


# --- the outcome log ---------------------------------------------------------------------


def test_an_outcome_is_logged_with_all_that_applying_it_needs(
    redis_url: str, client: redis.Redis
) -> None:
    recorded = run(redis_url, lambda c: log(c, reason="price", at=NOW + 0.1234))
    assert recorded.status == "ok"
    [(entry_id, fields)] = client.xrange(OUTCOME_STREAM)
    assert recorded.outcome_id == entry_id
    assert fields == {
        "decision": "payload.sig",
        "customer": "C-1",
        "offer": "a",
        "outcome": "accepted",
        "channel": "voice",  # the decision's, when the outcome names none
        "reason": "price",
        "at": f"{NOW + 0.1234:.3f}",
        "arm": "champion",
        "ruleset": "v1",
        "interaction": "call-7",
    }
    assert client.keys("nba:applied*") == [], "logging applies nothing"
    assert client.hgetall(OFFER_STATS) == {}


def test_the_channel_of_an_outcome_is_kept_when_it_names_one(
    redis_url: str, client: redis.Redis
) -> None:
    run(redis_url, lambda c: log(c, channel="email"))
    [(_, fields)] = client.xrange(OUTCOME_STREAM)
    assert fields["channel"] == "email"


def test_the_same_outcome_again_is_a_duplicate_and_logged_once(
    redis_url: str, client: redis.Redis
) -> None:
    async def scenario(c: PipelinedConnection) -> list[Recorded]:
        return [await log(c), await log(c, at=NOW + 5, reason="retried")]

    first, again = run(redis_url, scenario)
    assert first.status == "ok" and first.outcome_id
    assert again == Recorded("duplicate", "")
    assert client.xlen(OUTCOME_STREAM) == 1


def test_other_outcomes_offers_and_decisions_are_not_duplicates(
    redis_url: str, client: redis.Redis
) -> None:
    other = DecisionRecord("other.sig", "C-1", ("a",), "", "voice", "v1", "champion", NOW)

    async def scenario(c: PipelinedConnection) -> list[str]:
        return [
            (await log(c, offer_id="a", outcome="presented")).status,
            (await log(c, offer_id="a", outcome="accepted")).status,
            (await log(c, offer_id="b", outcome="accepted")).status,
            (await log(c, decision=other, offer_id="a", outcome="accepted")).status,
            (await log(c, offer_id="", outcome="resolved")).status,
            (await log(c, offer_id="", outcome="resolved")).status,
        ]

    assert run(redis_url, scenario) == ["ok", "ok", "ok", "ok", "ok", "duplicate"]
    assert client.xlen(OUTCOME_STREAM) == 5


def test_a_duplicate_is_known_for_as_long_as_the_decision_is_kept(
    redis_url: str, client: redis.Redis
) -> None:
    run(redis_url, lambda c: log(c))
    ttl_ms = client.pttl(marker(DECISION, "a", "accepted"))
    assert TTL_S * 1000 - 60_000 < ttl_ms <= TTL_S * 1000


def test_once_its_marker_has_expired_an_outcome_is_logged_again(
    redis_url: str, client: redis.Redis
) -> None:
    """After the decision TTL the marker is gone (and the signed id no longer verifies,
    so the server refuses the outcome before it gets here)."""
    run(redis_url, lambda c: log(c))
    key = marker(DECISION, "a", "accepted")
    client.pexpire(key, 1)
    deadline = time.monotonic() + 10
    while client.exists(key):
        assert time.monotonic() < deadline, "the marker did not expire"
        time.sleep(0.01)
    assert run(redis_url, lambda c: log(c)).status == "ok"
    assert client.xlen(OUTCOME_STREAM) == 2


def test_the_log_is_trimmed_to_about_its_maximum_length(
    redis_url: str, client: redis.Redis
) -> None:
    async def scenario(c: PipelinedConnection) -> None:
        for n in range(400):
            decision = DecisionRecord(f"d{n}.s", "C-1", ("a",), "", "voice", "v1", "champion", NOW)
            await log(c, decision=decision, stream_maxlen=50)

    run(redis_url, scenario)
    # MAXLEN ~ trims whole stream nodes (100 entries by default): at least 50 are kept,
    # never the whole 400, and the newest entry is always there.
    assert 50 <= client.xlen(OUTCOME_STREAM) <= 50 + 100
    [(_, newest)] = client.xrevrange(OUTCOME_STREAM, count=1)
    assert newest["decision"] == "d399.s"


# --- applying an outcome -----------------------------------------------------------------


def test_an_offer_outcome_is_applied_to_history_and_counters_once(
    redis_url: str, client: redis.Redis
) -> None:
    async def scenario(c: PipelinedConnection) -> list[bool]:
        return [await apply(c, "a", "declined"), await apply(c, "a", "declined")]

    assert run(redis_url, scenario) == [True, False]
    assert history(client) == [f"{NOW:.3f}|declined|call-7"]
    assert client.hgetall(OFFER_STATS) == {"a|declined": "1", "champion|a|declined": "1"}
    assert client.hgetall(ARM_STATS) == {"champion|decisions": "1"}


def test_a_decision_counts_once_for_its_arm_whatever_its_outcomes(
    redis_url: str, client: redis.Redis
) -> None:
    async def scenario(c: PipelinedConnection) -> list[bool]:
        return [
            await apply(c, "a", "presented"),
            await apply(c, "b", "presented"),
            await apply(c, "a", "accepted"),
            await apply(c, "", "resolved"),
            await apply(c, "", "resolved"),
        ]

    assert run(redis_url, scenario) == [True, True, True, True, False]
    assert client.hgetall(ARM_STATS) == {"champion|decisions": "1", "champion|resolved": "1"}
    assert history(client, "a") == [f"{NOW:.3f}|presented|call-7", f"{NOW:.3f}|accepted|call-7"]
    assert history(client, "b") == [f"{NOW:.3f}|presented|call-7"]


def test_an_interaction_outcome_touches_no_offer(redis_url: str, client: redis.Redis) -> None:
    control = DecisionRecord("c.sig", "C-2", (), "", "chat", "v1", "control", NOW)
    assert run(redis_url, lambda c: apply(c, "", "not_resolved", decision=control, learning=LEARN))
    assert client.hgetall(ARM_STATS) == {"control|decisions": "1", "control|not_resolved": "1"}
    assert client.exists(history_key("C-2")) == 0
    assert client.hgetall(OFFER_STATS) == {} and client.hgetall(LEARNING) == {}


def test_applied_markers_live_as_long_as_a_decision(redis_url: str, client: redis.Redis) -> None:
    run(redis_url, lambda c: apply(c, "a", "accepted"))
    keys = applied_markers(DECISION, "a", "accepted")
    assert sorted(client.keys("nba:*applied*")) == sorted(keys)
    for key in keys:
        assert TTL_S * 1000 - 60_000 < client.pttl(key) <= TTL_S * 1000


def test_offer_history_expires_after_its_retention(redis_url: str, client: redis.Redis) -> None:
    run(redis_url, lambda c: apply(c, "a", "accepted"))
    retention_ms = HISTORY_DAYS * DAY * 1000
    assert retention_ms - 60_000 < client.pttl(history_key("C-1")) <= retention_ms


def test_history_keeps_the_newest_events_within_retention(
    redis_url: str, client: redis.Redis
) -> None:
    too_old = NOW - (HISTORY_DAYS + 1) * DAY
    kept = [f"{NOW - 1000 + n:.3f}|presented|i{n}" for n in range(HISTORY_EVENTS)]
    client.hset(history_key("C-1"), "a", ";".join([f"{too_old:.3f}|declined|old", *kept]))
    run(redis_url, lambda c: apply(c, "a", "accepted"))
    events = history(client)
    assert len(events) == HISTORY_EVENTS
    assert events[-1] == f"{NOW:.3f}|accepted|call-7"
    assert events[:-1] == kept[1:], "the oldest went to make room"
    assert not any(e.endswith("|old") for e in events)


def test_history_entries_that_do_not_parse_are_dropped_not_fatal(
    redis_url: str, client: redis.Redis
) -> None:
    good = [f"{NOW - 10:.3f}|presented|", f"{NOW - 5:.0f}|declined|call-1"]
    stored = ";".join(["junk", "", "|declined|x", "abc|accepted|i", good[0], ";;", good[1]])
    client.hset(history_key("C-1"), "a", stored)
    assert run(redis_url, lambda c: apply(c, "a", "accepted"))
    assert history(client) == [*good, f"{NOW:.3f}|accepted|call-7"]


def test_other_offers_history_is_left_alone(redis_url: str, client: redis.Redis) -> None:
    client.hset(history_key("C-1"), "b", "not|even|close;;")
    run(redis_url, lambda c: apply(c, "a", "accepted"))
    assert client.hget(history_key("C-1"), "b") == "not|even|close;;"


# --- learning ----------------------------------------------------------------------------


def test_accepted_is_a_success_declined_and_no_response_failures_presented_neither(
    redis_url: str, client: redis.Redis
) -> None:
    async def scenario(c: PipelinedConnection) -> None:
        await apply(c, "a", "presented", learning=LEARN)
        await apply(c, "a", "accepted", learning=LEARN)
        await apply(c, "b", "declined", learning=LEARN)
        await apply(c, "b", "no_response", learning=LEARN)

    run(redis_url, scenario)
    assert client.hgetall(LEARNING) == {
        "a": f"1.000000,0.000000,{NOW:.3f}",
        "b": f"0.000000,2.000000,{NOW:.3f}",
    }
    assert run(redis_url, load_learning) == client.hgetall(LEARNING)


def test_without_learning_nothing_is_learned(redis_url: str, client: redis.Redis) -> None:
    off = Learning(enabled=False, prior_strength=20, half_life_days=30, by=None, exploration=0)

    async def scenario(c: PipelinedConnection) -> None:
        await apply(c, "a", "accepted", learning=None)
        await apply(c, "b", "accepted", learning=off)

    run(redis_url, scenario)
    assert client.hgetall(LEARNING) == {}
    assert client.hget(OFFER_STATS, "b|accepted") == "1", "the outcome itself is applied"


def test_learning_by_segment_counts_the_offer_and_the_customers_segment(
    redis_url: str, client: redis.Redis
) -> None:
    client.hset(profile_key("C-1"), "segment", "gold")
    no_segment = DecisionRecord("n.sig", "C-9", ("a",), "", "voice", "v1", "champion", NOW)

    async def scenario(c: PipelinedConnection) -> None:
        await apply(c, "a", "accepted", learning=BY_SEGMENT)
        await apply(c, "a", "declined", decision=no_segment, learning=BY_SEGMENT)

    run(redis_url, scenario)
    assert client.hgetall(LEARNING) == {
        "a": f"1.000000,1.000000,{NOW:.3f}",
        "a|gold": f"1.000000,0.000000,{NOW:.3f}",
    }


def test_counts_decay_by_half_each_half_life_and_a_late_outcome_weighs_less(
    redis_url: str, client: redis.Redis
) -> None:
    half_life = 30 * DAY
    client.hset(LEARNING, "a", f"4.000000,2.000000,{NOW:.3f}")
    client.hset(LEARNING, "b", f"4.000000,2.000000,{NOW:.3f}")

    async def scenario(c: PipelinedConnection) -> None:
        await apply(c, "a", "accepted", at=NOW + half_life, learning=LEARN)
        await apply(c, "b", "declined", at=NOW - half_life, learning=LEARN)

    run(redis_url, scenario)
    assert client.hget(LEARNING, "a") == f"3.000000,1.000000,{NOW + half_life:.3f}"
    # Backdated by a half-life: the counts keep their time, the failure counts half.
    assert client.hget(LEARNING, "b") == f"4.000000,2.500000,{NOW:.3f}"


@pytest.mark.parametrize("stored", ["garbage", "1,2", "x,y,z", "1,2,", ",,", "1;2;3"])
def test_learned_counts_that_do_not_parse_are_started_afresh(
    redis_url: str, client: redis.Redis, stored: str
) -> None:
    """Regression: the script failed on them (`attempt to compare nil with number`)
    after setting its markers. The outcome was answered UNAVAILABLE although its history
    and counters were written, the retry was a no-op, and every later success or failure
    of the offer failed the same way. Decisions read such counts as absent; so does this."""
    client.hset(LEARNING, "a", stored)
    assert run(redis_url, lambda c: apply(c, "a", "declined", learning=LEARN))
    assert client.hget(LEARNING, "a") == f"0.000000,1.000000,{NOW:.3f}"
    assert history(client) == [f"{NOW:.3f}|declined|call-7"]


def test_a_segments_counts_that_do_not_parse_leave_the_offers_alone(
    redis_url: str, client: redis.Redis
) -> None:
    client.hset(profile_key("C-1"), "segment", "gold")
    client.hset(LEARNING, mapping={"a": f"2.000000,0.000000,{NOW:.3f}", "a|gold": "?"})
    run(redis_url, lambda c: apply(c, "a", "accepted", learning=BY_SEGMENT))
    assert client.hgetall(LEARNING) == {
        "a": f"3.000000,0.000000,{NOW:.3f}",
        "a|gold": f"1.000000,0.000000,{NOW:.3f}",
    }


# --- recording: log, then apply ----------------------------------------------------------


def test_record_outcome_logs_then_applies(redis_url: str, client: redis.Redis) -> None:
    async def scenario(c: PipelinedConnection) -> Recorded:
        return await record_outcome(
            c, c, decision=DECISION, offer_id="a", outcome="accepted", channel="chat",
            reason="", at=NOW, decision_ttl_s=TTL_S, learning=LEARN,
        )  # fmt: skip

    recorded = run(redis_url, scenario)
    assert recorded.status == "ok"
    [(entry_id, fields)] = client.xrange(OUTCOME_STREAM)
    assert entry_id == recorded.outcome_id and fields["channel"] == "chat"
    assert history(client) == [f"{NOW:.3f}|accepted|call-7"]
    assert client.hget(LEARNING, "a") == f"1.000000,0.000000,{NOW:.3f}"


def test_a_duplicate_applies_what_an_earlier_attempt_only_logged(
    redis_url: str, client: redis.Redis
) -> None:
    async def scenario(c: PipelinedConnection) -> list[str]:
        first = await log(c)  # an attempt whose apply never happened
        again = await record_outcome(
            c, c, decision=DECISION, offer_id="a", outcome="accepted", channel="",
            reason="", at=NOW, decision_ttl_s=TTL_S,
        )  # fmt: skip
        third = await record_outcome(
            c, c, decision=DECISION, offer_id="a", outcome="accepted", channel="",
            reason="", at=NOW, decision_ttl_s=TTL_S,
        )  # fmt: skip
        return [first.status, again.status, third.status]

    assert run(redis_url, scenario) == ["ok", "duplicate", "duplicate"]
    assert client.xlen(OUTCOME_STREAM) == 1
    assert history(client) == [f"{NOW:.3f}|accepted|call-7"], "applied once"
    assert client.hget(OFFER_STATS, "a|accepted") == "1"


def test_the_entry_a_logged_outcome_is_applied_from() -> None:
    assert logged_outcome(DECISION, offer_id="b", outcome="declined", at=NOW) == LoggedOutcome(
        "payload.sig", "C-1", "b", "declined", NOW, "champion", "call-7"
    )


def test_the_log_and_what_decisions_read_may_be_two_redis(
    redis_url: str, client: redis.Redis, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from decision_engine.store.embedded import EmbeddedRedis

    with EmbeddedRedis(data_dir=tmp_path_factory.mktemp("log-redis")) as other:

        async def scenario() -> Recorded:
            log_connection = PipelinedConnection(other.url)
            apply_connection = PipelinedConnection(redis_url)
            try:
                return await record_outcome(
                    log_connection, apply_connection, decision=DECISION, offer_id="a",
                    outcome="accepted", channel="", reason="", at=NOW, decision_ttl_s=TTL_S,
                )  # fmt: skip
            finally:
                await log_connection.aclose()
                await apply_connection.aclose()

        assert asyncio.run(scenario()).status == "ok"
        with redis.Redis.from_url(other.url, decode_responses=True) as log_client:
            assert log_client.xlen(OUTCOME_STREAM) == 1
            assert log_client.exists(history_key("C-1")) == 0
    assert client.exists(OUTCOME_STREAM) == 0
    assert history(client) == [f"{NOW:.3f}|accepted|call-7"]


@pytest.fixture
def unreachable() -> Iterator[str]:
    """A URL where nothing listens (a port bound, never listened on)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"redis://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def silent() -> Iterator[str]:
    """A URL where a peer accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"redis://127.0.0.1:{sock.getsockname()[1]}"


def record_between(
    log_url: str, apply_url: str, budget: Callable[[], float] | None = None
) -> Recorded:
    async def scenario() -> Recorded:
        log_connection = PipelinedConnection(log_url)
        apply_connection = PipelinedConnection(apply_url)
        try:
            return await record_outcome(
                log_connection, apply_connection, decision=DECISION, offer_id="a",
                outcome="accepted", channel="", reason="", at=NOW, decision_ttl_s=TTL_S,
                budget=budget,
            )  # fmt: skip
        finally:
            await log_connection.aclose()
            await apply_connection.aclose()

    return asyncio.run(scenario())


def test_an_unreachable_log_is_named_and_nothing_is_applied(
    redis_url: str, client: redis.Redis, unreachable: str
) -> None:
    with pytest.raises(OutcomeLogUnavailableError) as caught:
        record_between(unreachable, redis_url)
    assert str(caught.value).startswith("unreachable: ")
    assert client.keys("*") == []


def test_an_unreachable_decision_redis_says_the_outcome_is_logged(
    redis_url: str, client: redis.Redis, unreachable: str
) -> None:
    with pytest.raises(StoreUnavailableError) as caught:
        record_between(redis_url, unreachable)
    assert not isinstance(caught.value, OutcomeLogUnavailableError)
    assert str(caught.value).endswith(
        "; the outcome is logged and will be applied by the reconciler"
    )
    assert client.xlen(OUTCOME_STREAM) == 1


def test_a_silent_redis_is_given_up_on_after_its_budget_step_by_step(
    redis_url: str, client: redis.Redis, silent: str
) -> None:
    asked: list[str] = []

    def budget() -> float:
        asked.append("a step starts")
        return 0.2

    with pytest.raises(OutcomeLogUnavailableError) as log_failed:
        record_between(silent, redis_url, budget)
    assert str(log_failed.value) == "no answer within 200 ms"
    assert len(asked) == 1, "the apply step never started"

    asked.clear()
    with pytest.raises(StoreUnavailableError) as apply_failed:
        record_between(redis_url, silent, budget)
    assert str(apply_failed.value) == (
        "no answer within 200 ms; the outcome is logged and will be applied by the reconciler"
    )
    assert len(asked) == 2, "each step asks for its own budget"
    assert client.xlen(OUTCOME_STREAM) == 1


def test_an_acceptance_a_year_old_is_still_in_the_history(
    redis_url: str, client: redis.Redis
) -> None:
    """max_acceptances {count: 1, within_days: 365} needs a 364-day-old acceptance kept."""
    assert HISTORY_DAYS >= 365
    year_ago = NOW - 364 * DAY
    client.hset(history_key("C-1"), "a", f"{year_ago:.3f}|accepted|i1")
    run(redis_url, lambda c: apply(c, "a", "presented"))
    assert history(client) == [f"{year_ago:.3f}|accepted|i1", f"{NOW:.3f}|presented|call-7"]
