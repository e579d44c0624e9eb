"""A real `decision-engine serve` process (supervisor + workers) on ephemeral ports."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from decision_engine.channels import ClientTls
from decision_engine.channels import channel as tls_channel
from decision_engine.ruleset.load import load_profile_rules
from decision_engine.store.demo import ensure_demo_data
from decision_engine.store.embedded import EmbeddedRedis
from decision_engine.store.profiles import ProfileStore

RULES = Path(__file__).resolve().parents[2] / "rules"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[str]
    target: str
    metrics_port: int
    log_path: Path
    tls: ClientTls | None = None

    def log(self) -> str:
        return self.log_path.read_text()

    def channel(self) -> grpc.Channel:
        return tls_channel(self.target, self.tls)

    def stub(self) -> Iterator[pb_grpc.DecisionServiceStub]:
        with self.channel() as channel:
            yield pb_grpc.DecisionServiceStub(channel)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics") as reply:
            return str(reply.read().decode())

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def child_named(server: Server, name: str, *, not_pid: int = 0, timeout: float = 30) -> int:
    """The pid of the supervisor's child process named `name` (as prctl set it, e.g.
    `moments-0`, `notices-0`), other than `not_pid`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = subprocess.run(
            ["pgrep", "-P", str(server.process.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        for pid in map(int, children):
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if comm == name and pid != not_pid:
                return pid
        time.sleep(0.05)
    raise AssertionError(f"no {name} process:\n{server.log()}")


def start_server(
    tmp: Path,
    *args: str,
    workers: int = 2,
    moment_workers: int = 0,
    notice_workers: int = 0,
    port: int = 0,
    timeout: float = 30.0,
    env: dict[str, str] | None = None,
    tls: ClientTls | None = None,
) -> Server:
    """Start `decision-engine serve` and wait until its health check says SERVING.

    Without moment or notice processes unless asked (`moment_workers`, `notice_workers`):
    the supervisor's children are then its gRPC workers, whatever moment engine is
    installed."""
    port, metrics_port = port or free_port(), free_port()
    log_path = tmp / f"serve-{port}-{metrics_port}.log"
    command = [
        sys.executable, "-m", "decision_engine.cli", "serve",
        "--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics_port),
        "--workers", str(workers), "--moment-workers", str(moment_workers),
        "--notice-workers", str(notice_workers), *args,
    ]  # fmt: skip
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )
    server = Server(process, f"127.0.0.1:{port}", metrics_port, log_path, tls)
    deadline = time.monotonic() + timeout
    with server.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"serve exited with {process.returncode}:\n{server.log()}")
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return server
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"serve did not become SERVING in {timeout}s:\n{server.log()}")


@pytest.fixture(scope="session")
def server(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The service with the demo rules, two workers, on the session's Redis."""
    tmp = tmp_path_factory.mktemp("server")
    srv = start_server(tmp, "--rules", str(RULES), "--redis-url", redis_server.url)
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture
def stub(server: Server) -> Iterator[pb_grpc.DecisionServiceStub]:
    yield from server.stub()


def load_demo(url: str, *, generated: int = 50) -> float:
    """The demo customers (and `generated` synthetic ones) into a Redis; returns `now`."""
    now = time.time()

    async def load() -> None:
        store = ProfileStore.from_url(url)
        try:
            schema, audiences = load_profile_rules(RULES)
            await ensure_demo_data(
                store,
                schema=schema,
                audiences=audiences,
                today=datetime.fromtimestamp(now, UTC).date(),
                now=now,
                generated=generated,
            )
        finally:
            await store.aclose()

    asyncio.run(load())
    return now


@pytest.fixture
def demo_data(redis_url: str) -> float:
    """The demo customers (and 50 synthetic ones) in an emptied Redis; returns `now`."""
    return load_demo(redis_url)
