"""Admission control on a real server: calls past the in-flight bound are shed at once,
calls whose deadline is (nearly) spent are not served, health is never shed, and a
profile read that ran out of time because the worker was frozen is told apart from
Redis being slow.

Calls are made slow deterministically by stopping the real Redis (SIGSTOP): a Decide
then waits in its profile read until Redis continues (the budget is set far away).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from decision_engine.store.embedded import EmbeddedRedis
from tests.server.conftest import RULES, Server, load_demo, start_server

LONG = 120.0  # seconds: a deadline no test reaches
CANCEL = pb.DecideRequest(
    customer_id="C-1001",
    context=pb.InteractionContext(channel=pb.CHANNEL_VOICE, intent="cancel"),
)


def metric(server: Server, name: str, **labels: str) -> float:
    """One sample of the server's /metrics (all workers), 0 when absent."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics") as r:
        text = r.read().decode()
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == wanted:
            return float(match.group(2))
    return 0.0


def wait_until(condition: Callable[[], bool], what: str, *, timeout: float = 60.0) -> None:
    """Poll `condition` until it holds (the timeout only keeps a broken test from hanging)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.01)


def redis_pid(redis: EmbeddedRedis) -> int:
    process = redis._process
    assert process is not None
    return process.pid


def worker_pids(server: Server) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(server.process.pid)], capture_output=True, text=True, check=False
    )
    return [int(pid) for pid in out.stdout.split()]


def bytes_waiting_at(port: int) -> int:
    """Bytes sent to the server on `port` that it has not read yet (Linux /proc/net/tcp)."""
    waiting = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if int(local.split(":")[1], 16) == port and state == "01":  # ESTABLISHED
            waiting += int(queues.split(":")[1], 16)
    return waiting


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(data_dir=tmp_path / "redis") as store:
        load_demo(store.url)
        yield store


@pytest.fixture
def admitting_one(tmp_path: Path, redis: EmbeddedRedis) -> Iterator[Server]:
    """One worker that serves one call at once, and none with less than 60 s left."""
    server = start_server(tmp_path, "--rules", str(RULES), "--redis-url", redis.url,
                          "--max-in-flight", "1", "--min-deadline-ms", "60000",
                          "--redis-timeout-ms", "60000", workers=1)  # fmt: skip
    yield server
    assert server.stop() == 0, server.log()


def test_calls_past_the_in_flight_bound_are_shed_and_health_still_answers(
    admitting_one: Server, redis: EmbeddedRedis
) -> None:
    server = admitting_one
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.DecisionServiceStub(channel)
        assert not stub.Decide(CANCEL, timeout=LONG).degraded
        extra = 5
        os.kill(redis_pid(redis), signal.SIGSTOP)
        try:
            with ThreadPoolExecutor(extra + 1) as pool:
                # Whichever call comes first holds the one place until Redis continues;
                # every other one is turned away while it does.
                calls: list[Future[pb.DecideResponse]] = [
                    pool.submit(stub.Decide, CANCEL, timeout=LONG) for _ in range(extra + 1)
                ]
                wait_until(lambda: sum(c.done() for c in calls) == extra, "the extra calls shed")
                shed = [c.exception() for c in calls if c.done()]
                for error in shed:
                    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
                    assert "server overloaded: 1 calls in flight" in error.details()  # type: ignore[attr-defined]
                # The worker is full, and says so: health and the admin service answer,
                # Ping (a DecisionService call) is shed like the rest.
                health = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service="decision.v1.DecisionService"),
                    timeout=LONG,
                )
                assert health.status == health_pb2.HealthCheckResponse.SERVING
                admin = pb_grpc.AdminServiceStub(channel)
                assert admin.GetRuleset(pb.GetRulesetRequest(), timeout=LONG).version
                with pytest.raises(grpc.RpcError) as ping:
                    stub.Ping(pb.PingRequest(), timeout=LONG)
                assert ping.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert len([c for c in calls if not c.done()]) == 1
                os.kill(redis_pid(redis), signal.SIGCONT)
                admitted = [c.result() for c in calls if c.exception() is None]
        finally:
            os.kill(redis_pid(redis), signal.SIGCONT)
        assert len(admitted) == 1 and not admitted[0].degraded
        # The load is gone: the server answers normally again.
        assert stub.Decide(CANCEL, timeout=LONG).routing.queue == "retention_specialists"
        stub.Ping(pb.PingRequest(), timeout=LONG)
    assert metric(server, "requests_shed_total", method="Decide", reason="in_flight") == extra
    assert metric(server, "requests_shed_total", method="Ping", reason="in_flight") == 1
    assert metric(server, "decisions_total", queue="retention_specialists", degraded="false") == 3


def test_a_call_with_its_deadline_nearly_spent_is_not_served(admitting_one: Server) -> None:
    server = admitting_one
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.DecisionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as short:
            stub.Decide(CANCEL, timeout=10)  # well under the 60 s this server wants
        assert short.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert short.value.details().startswith("not served: ")
        assert stub.Decide(CANCEL, timeout=LONG).profile_found
        assert stub.Decide(CANCEL).profile_found  # no deadline at all: served
    assert metric(server, "requests_shed_total", method="Decide", reason="deadline") == 1
    assert metric(server, "decisions_total", queue="retention_specialists", degraded="false") == 2
    assert "C-1001" not in server.log()


def test_a_reply_that_came_while_the_worker_was_frozen_is_used_not_dropped(
    tmp_path: Path, redis: EmbeddedRedis
) -> None:
    """The profile read's budget ran out while the worker could not run (as under CPU
    starvation), but Redis had answered: the answer has the profile, and nothing
    blames Redis."""
    # Without learning the worker sends Redis nothing of its own accord, so bytes
    # waiting at Redis are the Decide's profile read.
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules, ignore=shutil.ignore_patterns("tests"))
    arbitration = rules / "arbitration.yaml"
    text = arbitration.read_text().replace("  learning:\n", "  learning:\n    enabled: false\n")
    arbitration.write_text(text)
    server = start_server(tmp_path, "--rules", str(rules), "--redis-url", redis.url,
                          "--redis-timeout-ms", "1000", workers=1)  # fmt: skip
    try:
        (worker,) = worker_pids(server)
        with grpc.insecure_channel(server.target) as channel, ThreadPoolExecutor(1) as pool:
            stub = pb_grpc.DecisionServiceStub(channel)
            assert not stub.Decide(CANCEL, timeout=LONG).degraded
            os.kill(redis_pid(redis), signal.SIGSTOP)
            try:
                call = pool.submit(stub.Decide, CANCEL, timeout=LONG)
                wait_until(lambda: bytes_waiting_at(redis.port) > 0, "the read reached Redis")
                # Redis answers at once, but the worker is not there to read it until
                # after the read's budget and its grace (1 + 2 s) have run out.
                os.kill(worker, signal.SIGSTOP)
                os.kill(redis_pid(redis), signal.SIGCONT)
                time.sleep(3.5)
            finally:
                os.kill(redis_pid(redis), signal.SIGCONT)
                os.kill(worker, signal.SIGCONT)
            answer = call.result()
            assert answer.profile_found and not answer.degraded
        assert metric(server, "redis_errors_total", kind="timeout") == 0
        assert metric(server, "redis_errors_total", kind="overloaded") == 0
        assert "profile store unavailable" not in server.log()
    finally:
        assert server.stop() == 0, server.log()
