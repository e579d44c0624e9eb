"""Starting and stopping the `serve` under benchmark, shared by bench/run.py and
bench/notices.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(
    rules: Path,
    redis_url: str,
    port: int,
    log: Path,
    outcomes_url: str | None = None,
    metrics_port: int = 0,
    extra: tuple[str, ...] = (),
    moment_workers: int = 0,
    notice_workers: int = 0,
    tree: Path | None = None,
) -> subprocess.Popen[bytes]:
    """`serve --workers 2` as `make bench` runs it; with `tree`, the package in that
    directory (another commit's checkout) instead of the installed one."""
    command = [str(BIN / "decision-engine")]
    env = None
    if tree is not None:
        command = [sys.executable, "-m", "decision_engine.cli"]
        env = dict(os.environ, PYTHONPATH=str(tree))
    args = [
        *command, "serve",
        "--rules", str(rules), "--redis-url", redis_url,
        "--outcomes-redis-url", outcomes_url or redis_url,
        "--host", "127.0.0.1", "--port", str(port),
        "--metrics-port", str(metrics_port or free_port()), "--workers", "2",
        "--moment-workers", str(moment_workers), "--notice-workers", str(notice_workers),
        "--log-level", "WARNING", *extra,
    ]  # fmt: skip
    with log.open("wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tree)


def child_pids(pid: int) -> list[int]:
    """The direct children of a process (the server's workers), from /proc."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        children += [int(c) for c in task.read_text().split()]
    return children


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def compact_aof(url: str) -> None:
    """Rewrite the append-only file after the bulk load, as an operator would.

    Otherwise Redis starts the rewrite by itself in the middle of the measurement
    (the file doubled during the import): its fork stalls Redis for tens of
    milliseconds on this machine and shows up as degraded answers at p99.9.
    """
    import redis as redis_py

    with redis_py.Redis.from_url(url) as client:
        client.bgrewriteaof()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            info = client.info("persistence")
            if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
                break
            time.sleep(0.2)
