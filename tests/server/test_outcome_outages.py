"""RecordOutcome when one of its two Redis is slow or down.

It answers UNAVAILABLE within its own timeout and names the store that failed; what
reached the outcome log but was not applied to what decisions read (offer history,
counters, learning) is applied later by the reconciler, exactly once. Real Redis
processes (paused with SIGSTOP, killed with SIGKILL) and a real `serve`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import redis

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from decision_engine.store.embedded import EmbeddedRedis
from decision_engine.store.keys import (
    ARM_STATS,
    LEARNING,
    OFFER_STATS,
    OUTCOME_STREAM,
    history_key,
)
from tests.server.conftest import RULES, Server, load_demo, start_server
from tests.server.test_durability import wait_loaded

LOCAL_POOL = [("grpc.use_local_subchannel_pool", 1)]
OUTCOME_NAMES = {pb.OUTCOME_PRESENTED: "presented", pb.OUTCOME_ACCEPTED: "accepted",
                 pb.OUTCOME_DECLINED: "declined", pb.OUTCOME_RESOLVED: "resolved"}  # fmt: skip
CUSTOMERS = [f"C-{n:06d}" for n in range(1, 51)]
# Reconciles every 5 s, on entries at least 2 s old: generous for two shared cores.
RECONCILED_WITHIN_S = 60.0


@dataclass
class Deployment:
    decisions: EmbeddedRedis
    """The decision path's Redis (profiles, history, counters, learning)."""
    log: EmbeddedRedis
    """The outcome log's Redis."""
    server: Server


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    decisions = EmbeddedRedis(data_dir=tmp_path / "redis", fsync="everysec").start()
    log = EmbeddedRedis(data_dir=tmp_path / "redis-outcomes", fsync="always").start()
    servers: list[EmbeddedRedis] = [decisions, log]
    try:
        load_demo(decisions.url, generated=len(CUSTOMERS))
        server = start_server(
            tmp_path, "--rules", str(RULES), "--redis-url", decisions.url,
            "--outcomes-redis-url", log.url,
            # Degraded decisions are not the subject here, and the machine may be busy.
            "--redis-timeout-ms", "1000",
        )  # fmt: skip
        try:
            yield Deployment(decisions, log, server)
        finally:
            assert server.stop() == 0, server.log()
    finally:
        for r in servers:
            if r.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(r.pid, signal.SIGCONT)
            r.stop()


@contextlib.contextmanager
def paused(server: EmbeddedRedis) -> Iterator[None]:
    """The Redis process stopped (SIGSTOP): connections stay open, nothing answers."""
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


def decide(stub: pb_grpc.DecisionServiceStub, customer: str) -> pb.DecideResponse:
    context = pb.InteractionContext(channel=pb.CHANNEL_VOICE, intent="general_inquiry")
    return stub.Decide(pb.DecideRequest(customer_id=customer, context=context), timeout=5)


def outcome_requests(server: Server, decisions: int) -> list[pb.RecordOutcomeRequest]:
    """Per decision: each offer presented, then accepted or declined; the interaction resolved."""
    requests = []
    for stub in server.stub():
        for n in range(decisions):
            d = decide(stub, CUSTOMERS[n % len(CUSTOMERS)])
            assert not d.degraded and d.profile_found
            for i, offer in enumerate(d.offers):
                answer = pb.OUTCOME_ACCEPTED if (n + i) % 3 == 0 else pb.OUTCOME_DECLINED
                for outcome in (pb.OUTCOME_PRESENTED, answer):
                    requests.append(
                        pb.RecordOutcomeRequest(
                            decision_id=d.decision_id, offer_id=offer.offer_id, outcome=outcome
                        )
                    )
            requests.append(
                pb.RecordOutcomeRequest(decision_id=d.decision_id, outcome=pb.OUTCOME_RESOLVED)
            )
    return requests


@dataclass
class Answer:
    code: grpc.StatusCode
    details: str
    seconds: float


async def send_once(
    target: str,
    requests: list[pb.RecordOutcomeRequest],
    *,
    concurrency: int,
    timeout_s: float,
    meanwhile: Callable[[list[Answer]], Awaitable[None]],
) -> list[Answer]:
    """Every request once (no retries), `concurrency` at a time; `meanwhile` runs alongside."""
    answers: list[Answer] = []
    channels = [grpc.aio.insecure_channel(target, options=LOCAL_POOL) for _ in range(4)]
    pending = iter(requests)

    async def sender(n: int) -> None:
        stub = pb_grpc.DecisionServiceStub(channels[n % len(channels)])
        for request in pending:
            started = time.monotonic()
            try:
                await stub.RecordOutcome(request, timeout=timeout_s)
            except grpc.aio.AioRpcError as exc:
                answer = Answer(exc.code(), exc.details() or "", time.monotonic() - started)
            else:
                answer = Answer(grpc.StatusCode.OK, "", time.monotonic() - started)
            answers.append(answer)

    try:
        await asyncio.gather(meanwhile(answers), *(sender(n) for n in range(concurrency)))
    finally:
        for channel in channels:
            await channel.close()
    return answers


def metric(server: Server, name: str) -> float:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


@dataclass(frozen=True)
class Applied:
    """What decisions read, in the form the log predicts it."""

    stats: dict[str, int]
    arms: dict[str, int]
    history: dict[tuple[str, str], int]
    learning: dict[str, tuple[float, float]]


def from_log(entries: list[tuple[str, dict[str, str]]]) -> Applied:
    """Each logged outcome applied exactly once."""
    stats: Counter[str] = Counter()
    arms: Counter[str] = Counter()
    history: Counter[tuple[str, str]] = Counter()
    learning: dict[str, tuple[float, float]] = {}
    decisions = {}
    for _, e in entries:
        offer, outcome, arm = e["offer"], e["outcome"], e["arm"]
        decisions[e["decision"]] = arm
        if not offer:
            arms[f"{arm}|{outcome}"] += 1
            continue
        stats[f"{offer}|{outcome}"] += 1
        stats[f"{arm}|{offer}|{outcome}"] += 1
        history[(e["customer"], offer)] += 1
        if outcome in ("accepted", "declined"):
            a, b = learning.get(offer, (0.0, 0.0))
            learning[offer] = (a + (outcome == "accepted"), b + (outcome == "declined"))
    arms.update(Counter(f"{arm}|decisions" for arm in decisions.values()))
    return Applied(dict(stats), dict(arms), dict(history), learning)


def applied(client: redis.Redis) -> Applied:
    history = {}
    for customer in CUSTOMERS:
        for offer, events in client.hgetall(history_key(customer)).items():
            history[(customer, offer)] = len(events.split(";"))
    learning = {}
    for field, counts in client.hgetall(LEARNING).items():
        if "|" not in field:
            a, b, _ = counts.split(",")
            # Decay over a test's seconds with a 30-day half-life is below the rounding.
            learning[field] = (round(float(a), 2), round(float(b), 2))
    return Applied(
        {k: int(v) for k, v in client.hgetall(OFFER_STATS).items()},
        {k: int(v) for k, v in client.hgetall(ARM_STATS).items()},
        history,
        learning,
    )


def wait_until_applied_as_logged(deployment: Deployment) -> Applied:
    """Poll until what decisions read is what the log says (the reconciler runs every 5 s)."""
    wait_loaded(deployment.decisions.url)
    with (
        redis.Redis.from_url(deployment.log.url, decode_responses=True) as log,
        redis.Redis.from_url(deployment.decisions.url, decode_responses=True) as data,
    ):
        deadline = time.monotonic() + RECONCILED_WITHIN_S
        while True:
            entries = log.xrange(OUTCOME_STREAM)
            expected, actual = from_log(entries), applied(data)
            if actual == expected or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert actual.stats == expected.stats
    assert actual.arms == expected.arms
    assert actual.history == expected.history
    assert actual.learning == expected.learning
    keys = [(e["decision"], e["offer"], e["outcome"]) for _, e in entries]
    assert len(set(keys)) == len(keys), "an outcome was logged twice"
    return expected


def logged_keys(deployment: Deployment) -> set[tuple[str, str, str]]:
    with redis.Redis.from_url(deployment.log.url, decode_responses=True) as log:
        return {(e["decision"], e["offer"], e["outcome"]) for _, e in log.xrange(OUTCOME_STREAM)}


# --------------------------------------------------------------------------- timeouts


def test_a_paused_redis_fails_record_outcome_fast_and_names_which(
    deployment: Deployment,
) -> None:
    """Regression: with the outcome log's Redis stopped, RecordOutcome hung until the
    caller's deadline, and every store failure was called "profile store unavailable"."""
    for stub in deployment.server.stub():
        first, second = decide(stub, "C-1001"), decide(stub, "C-1007")
        requests = [
            pb.RecordOutcomeRequest(
                decision_id=d.decision_id, offer_id=d.offers[0].offer_id,
                outcome=pb.OUTCOME_ACCEPTED,
            )
            for d in (first, second)
        ]  # fmt: skip
        for request, stopped, store in (
            (requests[0], deployment.log, "outcome log"),
            (requests[1], deployment.decisions, "profile store"),
        ):
            with paused(stopped):
                started = time.monotonic()
                with pytest.raises(grpc.RpcError) as caught:
                    stub.RecordOutcome(request, timeout=20)
                elapsed = time.monotonic() - started
                if stopped is deployment.log:
                    # The decision path does not wait for the outcome log.
                    assert not decide(stub, "C-1003").degraded
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            details = caught.value.details()
            assert details.startswith(f"{store} unavailable: no answer within 1000 ms"), details
            # The default timeout is 1 s; the caller's deadline was 20 s.
            assert elapsed < 10, f"answered after {elapsed:.1f} s"
        assert "logged" in details, "an outcome that reached the log says so"

        # Resumed, the Redis ran what it had been sent (if the script was cached there):
        # a retry goes through, a duplicate or not, and the outcome counts once.
        for request in requests:
            stub.RecordOutcome(request, timeout=10)
        assert stub.RecordOutcome(requests[1], timeout=10).duplicate
    with redis.Redis.from_url(deployment.decisions.url, decode_responses=True) as data:
        stats = data.hgetall(OFFER_STATS)
    accepted = Counter(r.offer_id for r in requests)
    assert {offer: int(stats[f"{offer}|accepted"]) for offer in accepted} == accepted


# --------------------------------------------------------------------------- reconciler


@pytest.mark.slow
def test_outcomes_logged_while_their_call_timed_out_are_applied_once(
    deployment: Deployment,
) -> None:
    """Regression: outcomes whose log write was late (its Redis paused under load) reached
    the log but were never applied to history, counters and learning."""
    requests = outcome_requests(deployment.server, decisions=200)

    async def pause_midway(answers: list[Answer]) -> None:
        while len(answers) < len(requests) // 4:
            await asyncio.sleep(0.01)
        with paused(deployment.log):
            await asyncio.sleep(3.0)

    answers = asyncio.run(
        send_once(
            deployment.server.target, requests, concurrency=32, timeout_s=2.0,
            meanwhile=pause_midway,
        )
    )  # fmt: skip
    failed = [a for a in answers if a.code != grpc.StatusCode.OK]
    assert failed and len(failed) < len(answers), Counter(a.code for a in answers)
    expected = wait_until_applied_as_logged(deployment)
    assert sum(expected.stats.values()) > 0
    # What the reconciler did: the outcomes whose call failed but which reached the log.
    reconciled = metric(deployment.server, "outcomes_reconciled_total")
    assert 0 < reconciled <= len(failed)
    assert {a.code for a in failed} == {grpc.StatusCode.UNAVAILABLE}
    assert all(a.details.startswith("outcome log unavailable:") for a in failed), Counter(
        a.details for a in failed
    )
    assert max(a.seconds for a in failed) < 2.0, "UNAVAILABLE before the caller's deadline"


@pytest.mark.slow
def test_outcomes_logged_while_the_decision_redis_was_down_are_applied_once_it_is_back(
    deployment: Deployment, tmp_path: Path
) -> None:
    """Killed (SIGKILL) under load, the decision path's Redis also loses its last second
    of writes (it fsyncs every second): applied outcomes, their markers and the
    reconciler's cursor alike. Replaying the log from the stale cursor applies what is
    missing and nothing twice."""
    requests = outcome_requests(deployment.server, decisions=200)
    port = deployment.decisions.port
    restarted: list[EmbeddedRedis] = []

    async def kill_midway(answers: list[Answer]) -> None:
        while len(answers) < len(requests) // 4:
            await asyncio.sleep(0.01)
        assert deployment.decisions.pid is not None
        os.kill(deployment.decisions.pid, signal.SIGKILL)
        await asyncio.sleep(1.5)
        again = EmbeddedRedis(data_dir=tmp_path / "redis", port=port, fsync="everysec")
        restarted.append(await asyncio.to_thread(again.start))

    try:
        answers = asyncio.run(
            send_once(
                deployment.server.target, requests, concurrency=32, timeout_s=5.0,
                meanwhile=kill_midway,
            )
        )  # fmt: skip
        failed = [a for a in answers if a.code != grpc.StatusCode.OK]
        assert failed, "outcomes must be sent while the Redis is down"
        deployment.decisions = restarted[0]
        wait_until_applied_as_logged(deployment)
        assert metric(deployment.server, "outcomes_reconciled_total") > 0
        assert {a.code for a in failed} == {grpc.StatusCode.UNAVAILABLE}
        assert any(a.details.startswith("profile store unavailable:") for a in failed)
    finally:
        for r in restarted:
            r.stop()
