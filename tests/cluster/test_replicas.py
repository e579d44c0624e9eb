"""Three `serve` replicas behind a real nginx (the shipped ops/nginx config), clients with
the shipped gRPC service config, on a plain Redis and on a Redis Cluster: any replica
gives the same answer, and neither a replica killed -9 nor a rolling restart of all three
fails a call the client retries."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from tests.cluster.fleet import (
    QUESTIONS,
    REPLICAS,
    SERVICE_CONFIG,
    Fleet,
    Load,
    answer,
    channel,
    nginx_errors,
    running_fleet,
    uncapped,
)
from tests.cluster.redis_cluster import LocalCluster
from tests.server.conftest import load_demo

pytestmark = pytest.mark.cluster


@pytest.fixture(params=["redis", "redis-cluster"])
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fleet]:
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
    else:
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        url = cluster.url
    load_demo(url, generated=50)
    with running_fleet(tmp_path, url) as fleet:
        yield fleet


def test_every_replica_and_the_balancer_give_the_same_answers(fleet: Fleet) -> None:
    direct = []
    for server in fleet.replicas:
        with server.channel() as ch:
            stub = pb_grpc.DecisionServiceStub(ch)
            direct.append([answer(stub, c, i) for c, i in QUESTIONS])
    with channel(fleet.target) as ch:
        stub = pb_grpc.DecisionServiceStub(ch)
        balanced = [answer(stub, c, i) for c, i in QUESTIONS]
    assert uncapped(direct[0]) == uncapped(direct[1]) == uncapped(direct[2]) == uncapped(balanced)
    queues = [a[0] for a in balanced]
    assert queues[0] == "retention_specialists" and queues[2] == "card_security"
    assert queues[6] == "general"


@pytest.mark.slow
def test_a_replica_killed_9_fails_no_call(fleet: Fleet) -> None:
    with Load(fleet.target) as load:
        load.wait_calls(200)
        os.kill(fleet.replicas[1].process.pid, signal.SIGKILL)
        load.wait_calls(500)
    assert set(load.results) == {"OK"}, f"{load.results}\n{nginx_errors(fleet)}"
    assert load.results["OK"] >= 700


@pytest.mark.slow
def test_a_rolling_restart_of_every_replica_fails_no_call(fleet: Fleet) -> None:
    with Load(fleet.target) as load:
        load.wait_calls(200)
        for i in range(REPLICAS):
            assert fleet.replicas[i].stop() == 0  # SIGTERM: drains, then exits
            load.wait_calls(100)
            fleet.replicas[i] = fleet.start(i)
            load.wait_calls(100)
    assert set(load.results) == {"OK"}, f"{load.results}\n{nginx_errors(fleet)}"
    assert all("Traceback" not in server.log() for server in fleet.replicas)


def test_with_no_replica_up_the_client_retries_and_gets_a_grpc_unavailable(fleet: Fleet) -> None:
    for server in fleet.replicas:
        assert server.stop() == 0
    log = fleet.tmp / "nginx-error.log"
    before = log.read_text().count("(111: Connection refused)")
    with channel(fleet.target) as ch, pytest.raises(grpc.RpcError) as raised:
        pb_grpc.DecisionServiceStub(ch).Ping(pb.PingRequest(), timeout=30)
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
    assert raised.value.details() == "no replica could answer, try again"
    policy = json.loads(SERVICE_CONFIG)["methodConfig"][0]["retryPolicy"]
    refused = log.read_text().count("(111: Connection refused)") - before
    assert refused == policy["maxAttempts"] * REPLICAS  # each attempt tried on every replica
