"""Where a Decide's (and a Ping's) server time goes: py-spy on one worker under load.

    python -m bench.profile [--seconds 12] [--rate 1000]

Serves `make bench`'s 1,000-offer ruleset on 20,000 customers, drives each call at a
fixed rate with `bench.load`'s generator, records one worker with `py-spy --native`
(compiled frames included), and prints the share of the worker's busy samples in each
stage: samples waiting in epoll, on a lock or on a queue are left out, and a sample goes
to the first stage it shows, in the order below. `--native` stops the process to take
each sample, so the run's own CPU figures are inflated; multiply the shares by a
`make bench` run's CPU per call.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from bench.gen_rules import write_ruleset
from bench.load import Calls, Options, fixed_rate, measured, open_channels, wait_serving
from bench.run import load_profiles
from bench.serve import child_pids, free_port, start_server, stop
from decision_engine.store.embedded import EmbeddedRedis

IDLE = ("epoll_wait", "PyThread_acquire_lock_timed", "_queue_SimpleQueue_get", "select_epoll")
"""Frames that mean the thread waits (looked for in a sample's innermost five)."""

STAGES = (
    ("the compiled core: facts, routing, policies, ranking, scripts",
     r"core__mypyc|CPyDef_|decision_engine/decide/|decision_engine/ruleset/"),
    ("metrics (prometheus_client)", r"prometheus_client|server/metrics"),
    ("signing the decision id", r"server/ids|hmac|_hashlib"),
    ("request to facts, reply building", r"server/convert|decision_engine/wire"),
    ("profile read (store, redis-py)", r"decision_engine/store/|/redis/"),
    ("admission, gate, session, the rest of the servicer",
     r"server/(admission|gate|session|service|caps|outcome)"),
    ("gRPC and asyncio machinery", r"cygrpc|_asynciomodule|asyncio/|protobuf|_message"),
)  # fmt: skip


def stage_shares(raw: Path) -> tuple[dict[str, float], int]:
    """Share of the busy samples per stage (and "other"), and the busy sample count."""
    patterns = [(name, re.compile(pattern)) for name, pattern in STAGES]
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if any(mark in frame for frame in frames[-5:] for mark in IDLE):
            continue
        stage = next((name for name, rx in patterns if any(map(rx.search, frames))), "other")
        counts[stage] += int(n)
    busy = sum(counts.values())
    return {name: counts[name] / busy for name, _ in (*STAGES, ("other", ""))}, busy


def _py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"  # the venv's, when not on PATH
    return str(beside) if beside.is_file() else shutil.which("py-spy") or "py-spy"


async def _load(
    port: int, pids: list[int], call: str, rate: float, seconds: float, out: Path
) -> dict[str, Any]:
    opts = Options(target=f"127.0.0.1:{port}")
    channels = open_channels(opts.target, opts.channels)
    calls = Calls(channels, opts)
    send = calls.decide if call == "decide" else calls.ping
    await fixed_rate(send, rate, 3)  # warm-up
    spy = subprocess.Popen(
        [_py_spy(), "record", "--native", "-r", "400",
         "-d", str(int(seconds)), "-f", "raw", "-o", str(out), "-p", str(pids[0])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    result = await measured(fixed_rate(send, rate, seconds + 2), pids)
    spy.wait()
    for channel in channels:
        await channel.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        work = Path(tmp)
        write_ruleset(work / "rules", offers=1000, routes=100)
        with EmbeddedRedis(data_dir=work / "redis", fsync="everysec") as redis:
            asyncio.run(load_profiles(redis.url, work / "rules", 20_000))
            port = free_port()
            server = start_server(work / "rules", redis.url, port, work / "log")
            try:
                asyncio.run(wait_serving(f"127.0.0.1:{port}", timeout=60))
                pids = child_pids(server.pid)
                shares: dict[str, dict[str, float]] = {}
                for call in ("decide", "ping"):
                    raw = work / f"{call}.txt"
                    result = asyncio.run(_load(port, pids, call, args.rate, args.seconds, raw))
                    shares[call], busy = stage_shares(raw)
                    print(f"{call}: {busy} busy samples, p99 {result['p99_ms']} ms (sampled)")
            finally:
                stop(server)
    print("| stage | Decide | Ping |\n|---|---|---|")
    for name in shares["decide"]:
        print(f"| {name} | {shares['decide'][name]:.1%} | {shares['ping'][name]:.1%} |")


if __name__ == "__main__":
    main()
