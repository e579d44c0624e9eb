"""Three `serve` replicas on one Redis (plain or a cluster) behind a real nginx with the
shipped ops/nginx config, and clients with the shipped gRPC service config."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from decision_engine.ruleset.compiled import load_compiled
from tests.server.conftest import RULES, Server, free_port, start_server

OPS = Path(__file__).resolve().parents[2] / "ops"
SERVICE_CONFIG = (OPS / "grpc" / "service-config.json").read_text()
REPLICAS = 3
CAPPED = set(load_compiled(RULES).daily_caps)
QUESTIONS = [
    ("C-1001", "cancel"), ("C-1002", "cancel"), ("C-1003", "lost_card"),
    ("C-1004", "billing_dispute"), ("C-1005", "general_inquiry"), ("C-1006", "complaint"),
    ("C-1007", "general_inquiry"),
]  # fmt: skip


def nginx_config(tmp: Path, listen: int, ports: list[int]) -> Path:
    """The shipped server and upstream blocks, pointed at these replicas, in an nginx.conf
    of this test's own (foreground, files under tmp)."""
    shipped = (OPS / "nginx" / "decision-engine.conf").read_text()
    # The shipped server lines' parameters (max_fails…), on these replicas' addresses.
    options = re.search(r"(?m)^    server replica-1:50051([^;]*);", shipped)
    assert options is not None
    servers = "".join(f"    server 127.0.0.1:{p}{options[1]};\n" for p in ports)
    shipped = re.sub(r"(?m)^    server replica-\d:50051[^\n]*\n", "", shipped)
    shipped = shipped.replace("    keepalive 64;", servers + "    keepalive 64;")
    shipped = shipped.replace("listen 50050 http2;", f"listen 127.0.0.1:{listen} http2;")
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {tmp}/nginx.pid;\n"
        f"error_log {tmp}/nginx-error.log warn;\nevents {{ worker_connections 1024; }}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {tmp}/body;\n"
        f"  proxy_temp_path {tmp}/proxy;\n  fastcgi_temp_path {tmp}/fastcgi;\n"
        f"  uwsgi_temp_path {tmp}/uwsgi;\n  scgi_temp_path {tmp}/scgi;\n{shipped}\n}}\n"
    )
    return conf


@dataclass
class Fleet:
    tmp: Path
    redis_url: str
    ports: list[int]
    replicas: list[Server]
    target: str
    rules: Path = RULES
    extra: tuple[str, ...] = ()

    def start(self, i: int) -> Server:
        return start_server(self.tmp, "--rules", str(self.rules), "--redis-url", self.redis_url,
                            *self.extra, workers=1, port=self.ports[i])  # fmt: skip


@contextlib.contextmanager
def running_fleet(
    tmp: Path, redis_url: str, *, rules: Path = RULES, extra: tuple[str, ...] = ()
) -> Iterator[Fleet]:
    """REPLICAS replicas of `serve` on `redis_url` (its data loaded) behind nginx."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(nginx).exists(), "nginx is not installed: `make ops-tools` installs it"
    ports = [free_port() for _ in range(REPLICAS)]
    fleet = Fleet(tmp, redis_url, ports, [], "", rules, extra)
    listen = free_port()
    log = (tmp / "nginx.log").open("w")
    proxy = None
    try:
        fleet.replicas = [fleet.start(i) for i in range(REPLICAS)]
        proxy = subprocess.Popen(
            [nginx, "-c", str(nginx_config(tmp, listen, ports)), "-p", str(tmp)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        fleet.target = f"127.0.0.1:{listen}"
        time.sleep(0.3)
        assert proxy.poll() is None, (tmp / "nginx.log").read_text()
        with channel(fleet.target) as ch:
            grpc.channel_ready_future(ch).result(timeout=15)
        yield fleet
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(timeout=15)
        log.close()
        for server in fleet.replicas:
            server.stop()


def channel(target: str) -> grpc.Channel:
    options = [("grpc.service_config", SERVICE_CONFIG), ("grpc.enable_retries", 1),
               ("grpc.use_local_subchannel_pool", 1)]  # fmt: skip
    return grpc.insecure_channel(target, options=options)


def answer(stub: pb_grpc.DecisionServiceStub, customer: str, intent: str) -> tuple[object, ...]:
    """One interaction per question, whichever replica answers: asked again, it counts once
    in the customer's contacts, so every answer sees the same history."""
    context = pb.InteractionContext(channel=pb.CHANNEL_VOICE, intent=intent)
    request = pb.DecideRequest(  # every offer that is eligible, not the top three
        customer_id=customer, context=context, interaction_id=f"{customer}-{intent}",
        max_offers=10,
    )  # fmt: skip
    r = stub.Decide(request, timeout=5)
    return (r.routing.queue, r.routing.priority, tuple(o.offer_id for o in r.offers),
            r.ruleset_version)  # fmt: skip


def uncapped(answers: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    """Answers without the capped offers: asking again takes another unit of the
    customer's daily share of a cap (one a day here), so those rightly differ."""
    return [(*a[:2], tuple(o for o in a[2] if o not in CAPPED), a[3]) for a in answers]  # type: ignore[union-attr]


@dataclass
class Load:
    """Threads calling Decide through the balancer, with the shipped retry policy."""

    target: str
    results: Counter[str] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, n: int) -> None:
        with channel(self.target) as ch:
            stub = pb_grpc.DecisionServiceStub(ch)
            k = 0
            while not self.stop.is_set():
                customer, intent = QUESTIONS[(n + k) % len(QUESTIONS)]
                k += 1
                try:
                    answer(stub, customer, intent)
                    outcome = "OK"
                except grpc.RpcError as exc:
                    outcome = f"{exc.code().name}: {exc.details()}"
                with self.lock:
                    self.results[outcome] += 1

    def __enter__(self) -> Load:
        self.threads = [threading.Thread(target=self.run, args=(n,)) for n in range(4)]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def wait_calls(self, more: int, timeout: float = 30) -> None:
        start = sum(self.results.values())
        deadline = time.monotonic() + timeout
        while sum(self.results.values()) < start + more and time.monotonic() < deadline:
            time.sleep(0.02)


def nginx_errors(fleet: Fleet) -> str:
    """nginx's error log without the refused connects it went past to the next replica."""
    lines = (fleet.tmp / "nginx-error.log").read_text().splitlines()
    return "\n".join(line for line in lines if "(111: Connection refused)" not in line)[-4000:]
