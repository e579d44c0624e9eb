"""An acknowledged outcome survives a crash (kill -9) of Redis with the shipped configuration."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import redis

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from decision_engine.store.embedded import EmbeddedRedis
from decision_engine.store.keys import OUTCOME_STREAM
from tests.server.conftest import RULES, load_demo, start_server

CUSTOMERS = [f"C-100{i}" for i in range(1, 8)]
INTENTS = ["general_inquiry", "cancel", "complaint", "billing_dispute", "upgrade"]
OUTCOME_NAMES = {
    pb.OUTCOME_PRESENTED: "presented",
    pb.OUTCOME_ACCEPTED: "accepted",
    pb.OUTCOME_DECLINED: "declined",
    pb.OUTCOME_NO_RESPONSE: "no_response",
    pb.OUTCOME_RESOLVED: "resolved",
    pb.OUTCOME_NOT_RESOLVED: "not_resolved",
}
OFFER_OUTCOMES = [pb.OUTCOME_PRESENTED, pb.OUTCOME_ACCEPTED, pb.OUTCOME_DECLINED]
LOCAL_POOL = [("grpc.use_local_subchannel_pool", 1)]
SENDERS = 4
RPC_TIMEOUT_S = 2.0


def wait_loaded(url: str, timeout: float = 10.0) -> None:
    """Until Redis has replayed its append-only file (it answers LOADING until then)."""
    deadline = time.monotonic() + timeout
    with redis.Redis.from_url(url) as client:
        while True:
            try:
                client.ping()
                return
            except redis.BusyLoadingError:
                assert time.monotonic() < deadline, "Redis is still loading"
                time.sleep(0.01)


@dataclass
class Sent:
    request: pb.RecordOutcomeRequest
    started: float
    ended: float
    code: grpc.StatusCode
    outcome_id: str = ""
    duplicate: bool = False


@dataclass
class Senders:
    """Threads sending RecordOutcome, each over its own connection, until stopped."""

    target: str
    requests: list[pb.RecordOutcomeRequest]
    sent: list[Sent] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, shard: int) -> None:
        # Every request once, then around again: repeats are answered as duplicates.
        mine = itertools.cycle(self.requests[shard::SENDERS])
        with grpc.insecure_channel(self.target, options=LOCAL_POOL) as channel:
            stub = pb_grpc.DecisionServiceStub(channel)
            while not self.stop.is_set():
                request = next(mine)
                started = time.monotonic()
                try:
                    reply = stub.RecordOutcome(request, timeout=RPC_TIMEOUT_S)
                except grpc.RpcError as exc:
                    result = Sent(request, started, time.monotonic(), exc.code())
                    time.sleep(0.01)  # failing fast: do not spin
                else:
                    result = Sent(
                        request, started, time.monotonic(), grpc.StatusCode.OK,
                        reply.outcome_id, reply.duplicate,
                    )  # fmt: skip
                with self.lock:
                    self.sent.append(result)

    def acknowledged(self) -> list[Sent]:
        with self.lock:
            return [s for s in self.sent if s.code == grpc.StatusCode.OK and not s.duplicate]


@pytest.mark.slow
def test_acknowledged_outcomes_survive_a_redis_crash(tmp_path: Path) -> None:
    data_dir = tmp_path / "redis"
    first = EmbeddedRedis(data_dir=data_dir).start()
    restarted: EmbeddedRedis | None = None
    server = None
    try:
        with redis.Redis.from_url(first.url, decode_responses=True) as client:
            # The shipped configuration, which the guarantee rests on.
            assert client.config_get("appendonly") == {"appendonly": "yes"}
            assert client.config_get("appendfsync") == {"appendfsync": "always"}
            redis_pid = int(client.info("server")["process_id"])
        load_demo(first.url, generated=0)
        server = start_server(tmp_path, "--rules", str(RULES), "--redis-url", first.url)

        requests: list[pb.RecordOutcomeRequest] = []
        decisions: list[pb.DecideResponse] = []
        for stub in server.stub():
            for customer, intent in itertools.islice(
                itertools.cycle(itertools.product(CUSTOMERS, INTENTS)), 400
            ):
                context = pb.InteractionContext(channel=pb.CHANNEL_VOICE, intent=intent)
                d = stub.Decide(pb.DecideRequest(customer_id=customer, context=context), timeout=5)
                assert not d.degraded and d.profile_found
                decisions.append(d)
                requests += [
                    pb.RecordOutcomeRequest(
                        decision_id=d.decision_id, offer_id=o.offer_id, outcome=outcome
                    )
                    for o in d.offers
                    for outcome in OFFER_OUTCOMES
                ]
                requests += [
                    pb.RecordOutcomeRequest(decision_id=d.decision_id, outcome=outcome)
                    for outcome in (pb.OUTCOME_RESOLVED, pb.OUTCOME_NOT_RESOLVED)
                ]
        assert len(requests) >= 1000

        senders = Senders(server.target, requests)
        threads = [
            threading.Thread(target=senders.run, args=(n,), daemon=True) for n in range(SENDERS)
        ]
        for thread in threads:
            thread.start()
        # Crash while fresh outcomes are still being written: after ~1.5 s, or sooner if
        # more than half of them have gone through (but never before 50 are).
        started = time.monotonic()
        while time.monotonic() - started < 10:
            acked_so_far = len(senders.acknowledged())
            if acked_so_far >= 50 and (
                time.monotonic() - started >= 1.5 or acked_so_far >= len(requests) // 2
            ):
                break
            time.sleep(0.01)
        os.kill(redis_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        time.sleep(1.0)  # keep sending into the outage
        senders.stop.set()
        for thread in threads:
            thread.join(timeout=RPC_TIMEOUT_S + 5)
        assert not any(t.is_alive() for t in threads), "RecordOutcome hung with Redis down"

        acked = senders.acknowledged()
        assert len(acked) >= 50, f"only {len(acked)} outcomes acknowledged before the crash"
        assert len(acked) < len(requests), "the crash must come while outcomes are being written"
        during = [s for s in senders.sent if s.started > killed_at + 0.05]
        assert during, "no outcome was sent while Redis was down"
        assert all(s.code != grpc.StatusCode.OK for s in during), "acknowledged with Redis down"
        codes = {s.code for s in during}
        assert codes <= {grpc.StatusCode.UNAVAILABLE}, codes
        assert max(s.ended - s.started for s in during) < RPC_TIMEOUT_S, "errors must come fast"

        restarted = EmbeddedRedis(data_dir=data_dir, port=first.port).start()
        # start() may return before the file is replayed (see the test below).
        wait_loaded(restarted.url)
        with redis.Redis.from_url(restarted.url, decode_responses=True) as client:
            assert int(client.info("server")["process_id"]) != redis_pid
            logged = dict(client.xrange(OUTCOME_STREAM))
        missing = [s for s in acked if s.outcome_id not in logged]
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged outcomes were lost"
        for s in acked:
            entry = logged[s.outcome_id]
            assert (entry["decision"], entry["offer"], entry["outcome"]) == (
                s.request.decision_id,
                s.request.offer_id,
                OUTCOME_NAMES[s.request.outcome],
            )

        # The server reconnects on its own and decides from the store again...
        for stub in server.stub():
            deadline = time.monotonic() + 10
            while True:
                d = stub.Decide(
                    pb.DecideRequest(
                        customer_id="C-1001",
                        context=pb.InteractionContext(channel=pb.CHANNEL_VOICE, intent="cancel"),
                    ),
                    timeout=5,
                )
                if not d.degraded or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert not d.degraded and d.profile_found
            assert d.routing.queue == "retention_specialists"
            # ...and decisions made before the crash are still known to RecordOutcome.
            old = decisions[0]
            again = stub.RecordOutcome(
                pb.RecordOutcomeRequest(
                    decision_id=old.decision_id,
                    offer_id=old.offers[0].offer_id,
                    outcome=pb.OUTCOME_NO_RESPONSE,
                ),
                timeout=5,
            )
            assert again.outcome_id and not again.duplicate
        # Everything logged was asked for; nothing was logged twice.
        assert len({(e["decision"], e["offer"], e["outcome"]) for e in logged.values()}) == len(
            logged
        )
    finally:
        if server is not None:
            server.stop()
        first.stop()
        if restarted is not None:
            restarted.stop()


@pytest.mark.slow
def test_serve_restarts_on_a_data_dir_with_a_large_append_only_file(tmp_path: Path) -> None:
    """The embedded default after a crash or a bulk import: Redis takes a moment to load."""
    data_dir = tmp_path / "var"
    with EmbeddedRedis(data_dir=data_dir / "redis") as store:
        load_demo(store.url, generated=0)
        with redis.Redis.from_url(store.url) as client:
            # ~300k profiles' worth of keys: ~11 MB of AOF, a few hundred ms to replay.
            client.eval(
                "for i = 1, tonumber(ARGV[1]) do redis.call('SET', 'bulk:' .. i, i) end",
                0,
                300_000,
            )
    server = start_server(tmp_path, "--rules", str(RULES), "--data-dir", str(data_dir), workers=1)
    try:
        for stub in server.stub():
            d = stub.Decide(
                pb.DecideRequest(
                    customer_id="C-1001",
                    context=pb.InteractionContext(channel=pb.CHANNEL_VOICE, intent="cancel"),
                ),
                timeout=5,
            )
            assert d.profile_found and not d.degraded
    finally:
        assert server.stop() == 0, server.log()
