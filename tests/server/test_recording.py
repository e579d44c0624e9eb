"""OutcomeRecorder (server/recording.py) on a real Redis, without gRPC: what is checked
before anything is written, which arm's learning applies, and the budget of each step."""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from collections.abc import Iterator

import pytest
import redis

from decision_engine.errors import (
    DecisionNotFoundError,
    InvalidRequestError,
    OutcomeLogUnavailableError,
)
from decision_engine.ruleset.compiled import CompiledRuleset, load_compiled
from decision_engine.server.convert import OutcomeRequest
from decision_engine.server.decision_ids import DecisionIds
from decision_engine.server.recording import OutcomeRecorder
from decision_engine.server.rulesets import ActiveRuleset
from decision_engine.server.session import DecisionSession
from decision_engine.store.connection import PipelinedConnection
from decision_engine.store.keys import LEARNING, OFFER_STATS, OUTCOME_STREAM
from decision_engine.store.outcomes import DecisionRecord, Recorded
from decision_engine.store.profiles import ProfileStore
from tests.server.conftest import RULES

OFFER = "retention-loyalty-credit"
IDS = DecisionIds(b"recording test secret", ttl_s=86_400)


@pytest.fixture(scope="module")
def champion() -> CompiledRuleset:
    ruleset = load_compiled(RULES)
    assert ruleset.source.learning.enabled
    return ruleset


@pytest.fixture(scope="module")
def challenger(tmp_path_factory: pytest.TempPathFactory) -> CompiledRuleset:
    """The demo rules without learning."""
    directory = tmp_path_factory.mktemp("challenger")
    shutil.copytree(RULES, directory, dirs_exist_ok=True, ignore=shutil.ignore_patterns("tests"))
    arbitration = directory / "arbitration.yaml"
    text = arbitration.read_text()
    start = text.index("  learning:")
    end = text.index("  contact_policies:")
    arbitration.write_text(text[:start] + text[end:])
    ruleset = load_compiled(directory)
    assert not ruleset.source.learning.enabled
    return ruleset


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url, decode_responses=True) as c:
        yield c


def issued(arm: str = "champion", offers: tuple[str, ...] = (OFFER,)) -> str:
    return IDS.issue(DecisionRecord("", "C-1", offers, "", "voice", "v", arm, time.time()))


def outcome(decision_id: str, offer_id: str = OFFER, name: str = "accepted") -> OutcomeRequest:
    return OutcomeRequest(decision_id, offer_id, name, "", "", time.time())


def record(
    redis_url: str,
    champion: CompiledRuleset,
    challenger: CompiledRuleset,
    requests: list[OutcomeRequest],
    *,
    outcomes_url: str | None = None,
    caller_deadline_in: float | None = None,
) -> list[tuple[Recorded, str]]:
    async def scenario() -> list[tuple[Recorded, str]]:
        store = ProfileStore.from_url(redis_url)
        outcomes = PipelinedConnection(outcomes_url) if outcomes_url else None
        session = DecisionSession(
            ActiveRuleset(champion, loaded_at=time.time()),
            store,
            store_timeout_s=1.0,
            ids=IDS,
            challenger=ActiveRuleset(challenger, loaded_at=time.time(), arm="challenger"),
        )
        recorder = OutcomeRecorder(session, store, ids=IDS, outcomes=outcomes, timeout_s=5.0)
        deadline = (
            None
            if caller_deadline_in is None
            else asyncio.get_running_loop().time() + caller_deadline_in
        )
        try:
            return [await recorder.record(r, caller_deadline=deadline) for r in requests]
        finally:
            await store.aclose()
            if outcomes is not None:
                await outcomes.aclose()

    return asyncio.run(scenario())


def test_an_outcome_is_logged_applied_and_then_a_duplicate(
    redis_url: str, client: redis.Redis, champion: CompiledRuleset, challenger: CompiledRuleset
) -> None:
    decision_id = issued()
    (first, arm), (again, _) = record(
        redis_url, champion, challenger, [outcome(decision_id), outcome(decision_id)]
    )
    assert (first.status, arm) == ("ok", "champion")
    assert again == Recorded("duplicate", "")
    assert client.xlen(OUTCOME_STREAM) == 1
    assert client.hget(OFFER_STATS, f"{OFFER}|accepted") == "1"


def test_an_id_not_issued_here_is_unknown_and_writes_nothing(
    redis_url: str, client: redis.Redis, champion: CompiledRuleset, challenger: CompiledRuleset
) -> None:
    foreign = DecisionIds(b"another replica set", ttl_s=86_400).issue(
        DecisionRecord("", "C-1", (OFFER,), "", "voice", "v", "champion", time.time())
    )
    for decision_id in (foreign, "not.an-id", issued()[:-2]):
        with pytest.raises(DecisionNotFoundError):
            record(redis_url, champion, challenger, [outcome(decision_id)])
    assert client.keys("*") == []


def test_an_offer_the_decision_did_not_return_writes_nothing(
    redis_url: str, client: redis.Redis, champion: CompiledRuleset, challenger: CompiledRuleset
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        record(redis_url, champion, challenger, [outcome(issued(), "retention-plan-review")])
    assert caught.value.field == "offer_id"
    assert client.keys("*") == []


def test_an_outcome_learns_as_the_arm_its_decision_was_made_in(
    redis_url: str, client: redis.Redis, champion: CompiledRuleset, challenger: CompiledRuleset
) -> None:
    [(_, arm)] = record(redis_url, champion, challenger, [outcome(issued("challenger"))])
    assert arm == "challenger"
    assert client.hgetall(LEARNING) == {}, "the challenger does not learn"
    assert client.hget(OFFER_STATS, f"challenger|{OFFER}|accepted") == "1"
    record(redis_url, champion, challenger, [outcome(issued("champion"))])
    assert set(client.hgetall(LEARNING)) == {OFFER}


def test_the_callers_deadline_bounds_each_step(
    redis_url: str, client: redis.Redis, champion: CompiledRuleset, challenger: CompiledRuleset
) -> None:
    """With its caller's deadline already past, a step still gets 1 ms (not the 5 s
    outcome timeout): the silent outcome log is given up on at once, and named."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(OutcomeLogUnavailableError) as caught:
            record(
                redis_url,
                champion,
                challenger,
                [outcome(issued())],
                outcomes_url=url,
                caller_deadline_in=-1.0,
            )
    assert str(caught.value) == "no answer within 1 ms"
    assert client.keys("*") == []
