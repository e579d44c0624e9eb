"""The serve process: embedded default, degraded mode, worker restarts, bad rules, the CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import redis

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from decision_engine.store.embedded import EmbeddedRedis
from tests.server.conftest import RULES, Server, free_port, start_server


def decide(
    server: Server, customer: str, intent: str = "lost_card", **kw: object
) -> pb.DecideResponse:
    for stub in server.stub():
        context = pb.InteractionContext(channel=pb.CHANNEL_VOICE, intent=intent)
        return stub.Decide(pb.DecideRequest(customer_id=customer, context=context), **kw)  # type: ignore[arg-type]
    raise AssertionError("unreachable")


def test_embedded_default_starts_its_own_redis_with_demo_data(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--rules", str(RULES), "--data-dir", str(tmp_path / "var"),
                          "--demo-profiles", "20", workers=1)  # fmt: skip
    try:
        r = decide(server, "C-1001", "cancel", timeout=5)
        assert r.profile_found and r.routing.queue == "retention_specialists"
        assert decide(server, "C-000020", timeout=5).profile_found
        assert (
            "embedded Redis" in server.log()
            and "first start: loaded demo customers" in server.log()
        )
        # Two Redis: the outcome log fsyncs every write, the decision path's data does not.
        # Each has a password, in its data dir, never in the log.
        addresses = re.findall(r"redis://127\.0\.0\.1:(\d+)/0", server.log())
        passwords = [
            (tmp_path / "var" / name / "password").read_text().strip()
            for name in ("redis", "redis-outcomes")
        ]
        assert all(p not in server.log() for p in passwords)
        profiles_url, outcomes_url = (
            f"redis://:{password}@127.0.0.1:{port}/0"
            for password, port in zip(passwords, addresses[:2], strict=True)
        )
        assert "outcome log: embedded Redis" in server.log() and profiles_url != outcomes_url
        # The key decision ids are signed with is not for any local process to read.
        with socket.create_connection(("127.0.0.1", int(addresses[0])), timeout=5) as sock:
            sock.sendall(b"GET nba:decision-secret\r\n")
            assert sock.recv(100).startswith(b"-NOAUTH")
        with redis.Redis.from_url(profiles_url, decode_responses=True) as data:
            assert data.get("nba:decision-secret")
        for stub in server.stub():
            stub.RecordOutcome(
                pb.RecordOutcomeRequest(
                    decision_id=r.decision_id,
                    offer_id=r.offers[0].offer_id,
                    outcome=pb.OUTCOME_DECLINED,
                )
            )
        with redis.Redis.from_url(outcomes_url, decode_responses=True) as log_redis:
            assert log_redis.xlen("nba:outcomes") == 1
            assert log_redis.config_get("appendfsync") == {"appendfsync": "always"}
        with redis.Redis.from_url(profiles_url, decode_responses=True) as data:
            assert data.hget("nba:{C-1001}:history", r.offers[0].offer_id)
            assert data.config_get("appendfsync") == {"appendfsync": "everysec"}
            assert not data.exists("nba:outcomes")
    finally:
        assert server.stop() == 0
    assert (tmp_path / "var" / "redis" / "appendonly.aof").exists() or any(
        (tmp_path / "var" / "redis").rglob("*.aof*")
    )
    # Second start: same data, not loaded again.
    again = start_server(
        tmp_path, "--rules", str(RULES), "--data-dir", str(tmp_path / "var"), workers=1
    )
    try:
        assert decide(again, "C-1001", "cancel", timeout=5).profile_found
        assert "demo data already present" in again.log()
    finally:
        again.stop()


def test_slow_or_down_redis_gives_degraded_context_only_answers(tmp_path: Path) -> None:
    with EmbeddedRedis(data_dir=tmp_path / "redis") as store:
        server = start_server(tmp_path, "--rules", str(RULES), "--redis-url", store.url,
                              "--redis-timeout-ms", "30", workers=1)  # fmt: skip
        try:
            assert not decide(server, "C-x", timeout=5).degraded
            with redis.Redis.from_url(store.url) as client:
                client.execute_command("CLIENT", "PAUSE", "1500", "ALL")
            started = time.monotonic()
            r = decide(server, "C-x", timeout=1)
            elapsed = time.monotonic() - started
            assert r.degraded and not r.profile_found
            assert r.routing.queue == "card_security", "context-only rules still apply"
            assert elapsed < 1.0, f"degraded answer took {elapsed:.3f}s (deadline 1 s)"
        finally:
            server.stop()
    # Redis gone entirely (connection refused).
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    server = start_server(tmp_path, "--rules", str(RULES), "--redis-url", nowhere, workers=1)
    try:
        for _ in range(20):
            r = decide(server, "C-1001", "cancel", timeout=2)
            assert r.degraded and r.routing.queue in ("retention", "general")
        # One warning when the outage starts, not one per request.
        assert server.log().count("profile store unavailable") == 1
    finally:
        server.stop()


def test_a_killed_worker_is_replaced(server: Server) -> None:
    children = subprocess.run(
        ["pgrep", "-P", str(server.process.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    workers = [int(pid) for pid in children]
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "restarting" not in server.log():
        time.sleep(0.1)
    assert "restarting" in server.log()
    for _ in range(10):
        assert decide(server, "C-1", timeout=5).routing.queue == "card_security"


def test_a_ruleset_with_errors_does_not_start(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    offers = rules / "offers.yaml"
    offers.write_text(
        offers.read_text().replace("when: contacts_7d >= 3", "when: contacts_7d >= 'x'")
    )
    result = subprocess.run(
        [sys.executable, "-m", "decision_engine.cli", "serve", "--rules", str(rules),
         "--port", str(free_port()), "--metrics-port", "0", "--redis-url", "redis://127.0.0.1:1/0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert (
        f"{offers}:" in result.stderr and "cannot compare a number with a string" in result.stderr
    )


def test_cli_decide_prints_json_and_a_table(server: Server, demo_data: float) -> None:
    base = [sys.executable, "-m", "decision_engine.cli", "decide", "--target", server.target]
    out = subprocess.run(
        [*base, "--customer", "C-1001", "--intent", "cancel", "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    response = json.loads(out)
    assert response["routing"]["queue"] == "retention_specialists"
    assert response["offers"][0]["offer_id"] == "retention-loyalty-credit"
    table = subprocess.run(
        [*base, "--customer", "C-1002", "--intent", "cancel", "--explain"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert "digital_assist" in table and "clv 180 is not >= 5000" in table
    bad = subprocess.run([*base, "--customer", " x"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "INVALID_ARGUMENT: customer_id" in bad.stderr


def test_cli_outcome_and_rules_show(server: Server, demo_data: float) -> None:
    base = [sys.executable, "-m", "decision_engine.cli"]
    target = ["--target", server.target]
    decided = json.loads(
        subprocess.run(
            [*base, "decide", *target, "--customer", "C-1001", "--intent", "cancel", "--json"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout
    )  # fmt: skip
    offer = decided["offers"][0]["offer_id"]
    outcome = [*base, "outcome", *target, "--decision", decided["decision_id"], "--offer", offer]
    first = subprocess.run([*outcome, "--outcome", "declined"], capture_output=True, text=True)
    again = subprocess.run([*outcome, "--outcome", "declined"], capture_output=True, text=True)
    assert first.returncode == 0 and first.stdout.startswith("recorded as ")
    assert again.returncode == 0 and "already recorded" in again.stdout
    wrong = subprocess.run(
        [*base, "outcome", *target, "--decision", decided["decision_id"], "--offer",
         "card-replacement-express", "--outcome", "accepted"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert wrong.returncode == 1 and "INVALID_ARGUMENT: offer_id" in wrong.stderr
    shown = json.loads(
        subprocess.run(
            [*base, "rules", "show", *target, "--json"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout
    )  # fmt: skip
    assert shown["version"] == decided["ruleset_version"]
    assert shown["label"] == "demo" and int(shown["offers"]) == 10


def test_workers_die_with_their_supervisor(tmp_path: Path, redis_server: EmbeddedRedis) -> None:
    server = start_server(tmp_path, "--rules", str(RULES), "--redis-url", redis_server.url)
    children = subprocess.run(
        ["pgrep", "-P", str(server.process.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    workers = [int(pid) for pid in children]
    assert len(workers) == 2
    server.process.kill()  # SIGKILL: the supervisor gets no chance to stop them
    server.process.wait()
    killed = time.monotonic()
    deadline = killed + 15

    def alive(pid: int) -> bool:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return False
        return "State:\tZ" not in status  # a zombie no longer serves

    while any(alive(pid) for pid in workers):
        assert time.monotonic() < deadline, "workers outlived their supervisor"
        time.sleep(0.05)
    # The port is free again: nothing stale keeps answering.
    for stub in server.stub():
        try:
            stub.Ping(pb.PingRequest(), timeout=1)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
        else:
            raise AssertionError("an orphaned worker still answers")
    print(f"workers gone {time.monotonic() - killed:.3f} s after the supervisor was killed")


def test_a_replacement_worker_gets_traffic_from_connected_clients(
    tmp_path: Path, redis_server: EmbeddedRedis
) -> None:
    """Connections are recycled (max connection age), so a client that stays connected
    reaches the worker that replaced a dead one without reconnecting by hand."""
    server = start_server(
        tmp_path, "--rules", str(RULES), "--redis-url", redis_server.url,
        "--max-connection-age-s", "1",
    )  # fmt: skip
    try:
        workers = {
            int(pid)
            for pid in subprocess.run(
                ["pgrep", "-P", str(server.process.pid)], capture_output=True, text=True
            ).stdout.split()
        }
        assert len(workers) == 2
        with server.channel() as channel:
            admin = pb_grpc.AdminServiceStub(channel)
            os.kill(min(workers), signal.SIGKILL)
            deadline = time.monotonic() + 60
            seen: set[int] = set()
            while not seen - workers:
                assert time.monotonic() < deadline, f"only {seen} answered:\n{server.log()}"
                try:
                    seen.add(admin.GetRuleset(pb.GetRulesetRequest(), timeout=5).worker_pid)
                except grpc.RpcError as exc:  # the killed worker's connection, once
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                time.sleep(0.05)
        assert "restarting" in server.log()
    finally:
        assert server.stop() == 0, server.log()
