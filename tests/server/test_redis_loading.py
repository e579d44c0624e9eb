"""The decision Redis restarted with a loading window: for seconds it answers -LOADING.

Decide answers degraded meanwhile (never an error), and each worker's refresh of the
learned acceptance rates keeps the last ones and picks up again by itself.
"""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from decision_engine.store.embedded import EmbeddedRedis
from tests.conftest import SlowRestart, fill_for_a_slow_load
from tests.server.conftest import RULES, Server, load_demo, start_server

Stub = pb_grpc.DecisionServiceStub


def decide(stub: Stub, customer: str = "C-1007") -> pb.DecideResponse:
    context = pb.InteractionContext(channel=pb.CHANNEL_VOICE, intent="general_inquiry")
    return stub.Decide(pb.DecideRequest(customer_id=customer, context=context), timeout=5)


def propensity(server: Server, offer_id: str) -> float:
    """The learned acceptance rate the worker serves (offer_propensity)."""
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    match = re.search(rf'^offer_propensity{{offer_id="{offer_id}"}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def accept_until_it_moves(server: Server, stub: Stub, offer_id: str, *, above: float) -> float:
    """Accepted outcomes, one new decision each, until the served rate rises past `above`."""
    # Generous: on a busy machine (a clean-clone run beside other test runs) 30 s was once
    # not enough; the message says which step did not happen.
    deadline = time.monotonic() + 120
    seen = {"degraded": 0, "offer absent": 0, "accepted": 0}
    while True:
        d = decide(stub)
        if d.degraded:
            seen["degraded"] += 1
        elif offer_id not in [o.offer_id for o in d.offers]:
            seen["offer absent"] += 1
        else:
            stub.RecordOutcome(
                pb.RecordOutcomeRequest(
                    decision_id=d.decision_id, offer_id=offer_id, outcome=pb.OUTCOME_ACCEPTED
                ),
                timeout=5,
            )
            seen["accepted"] += 1
        now = propensity(server, offer_id)
        if now > above:
            return now
        assert time.monotonic() < deadline, f"the learned rate of {offer_id} stays at {now}: {seen}"
        time.sleep(0.2)


@pytest.mark.slow
def test_learning_refresh_and_decide_survive_a_redis_that_is_loading(tmp_path: Path) -> None:
    """Regression: after such a restart no worker refreshed its posteriors again, and
    nothing was logged (the refresh loop stopped on the first -LOADING reply)."""
    store = EmbeddedRedis(data_dir=tmp_path / "redis", fsync="everysec").start()
    restart: SlowRestart | None = None
    server = None
    try:
        load_demo(store.url, generated=0)
        fill_for_a_slow_load(store.url)
        server = start_server(
            tmp_path, "--rules", str(RULES), "--redis-url", store.url,
            # -LOADING replies come every few hundred ms while Redis loads; wait for them.
            "--redis-timeout-ms", "2000",
            workers=1,
        )  # fmt: skip
        for stub in server.stub():
            offer_id = decide(stub).offers[0].offer_id
            deadline = time.monotonic() + 10
            while not (prior := propensity(server, offer_id)):
                assert time.monotonic() < deadline, "no learned rate is served"
                time.sleep(0.1)
            before = accept_until_it_moves(server, stub, offer_id, above=prior)

            restart = SlowRestart(store).start()
            answers = []
            while restart.loading:
                try:
                    answers.append(decide(stub).degraded)
                except grpc.RpcError as exc:
                    pytest.fail(f"Decide failed while Redis was loading: {exc.code()}")
                time.sleep(0.05)
            store = restart.wait()
            assert any(answers), "Redis must have been loading while Decide was called"

            accept_until_it_moves(server, stub, offer_id, above=before)
        log = server.log()
        assert "learned acceptance rates not refreshed" in log
        assert "refreshed again" in log
        assert log.count("learned acceptance rates not refreshed") <= 2, "at most every 10 s"
    finally:
        if server is not None:
            assert server.stop() == 0, server.log()
        if restart is not None:
            restart.wait()
        store.stop()
