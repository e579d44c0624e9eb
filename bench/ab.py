"""Two commits' servers in turns on the same Redis and customers: Decide at a fixed rate
(p50, p99, CPU per call), then at its maximum, round after round.

    python -m bench.ab --before 6a4aa4a [--after HEAD] [--rounds 4] [--duration 15]

A claim that a change did not make Decide slower needs both sides measured the same
minute: on a shared machine one run's p99 moves by ×3 from one hour to the next. Each
commit's `decision_engine` (its generated protobuf code built from its own .proto) is
served from a scratch copy with `serve --workers 2`, as `make bench` serves it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

from bench.gen_rules import write_ruleset
from bench.load import (
    Calls,
    Options,
    fixed_rate,
    max_throughput,
    measured,
    open_channels,
    wait_serving,
)
from bench.run import load_profiles
from bench.serve import child_pids, compact_aof, free_port, start_server, stop
from decision_engine.store.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[1]
PROTO = "decision_engine/_proto"


def checkout(revision: str, into: Path) -> Path:
    """The commit's package in `into`, with its protobuf code generated as `make protos` does."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "decision_engine",
                              "protos"], check=True, capture_output=True).stdout  # fmt: skip
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        # (The "data" filter: no absolute paths or links out; Python 3.11.4 and later.)
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(into, **safe)  # type: ignore[arg-type]
    out = into / PROTO
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", "protos",
                    f"--python_out={PROTO}", f"--grpc_python_out={PROTO}",
                    "protos/decision/v1/decision.proto"], check=True, cwd=into)  # fmt: skip
    for name in ("decision/__init__.py", "decision/v1/__init__.py"):
        (out / name).touch()
    package = "from decision_engine._proto.decision.v1 import"
    for generated in (out / "decision/v1").glob("*.py"):
        generated.write_text(generated.read_text().replace("from decision.v1 import", package))
    return into


async def phases(port: int, pids: list[int], rate: float, duration: float) -> dict[str, Any]:
    opts = Options(target=f"127.0.0.1:{port}")
    channels = open_channels(opts.target, opts.channels)
    calls = Calls(channels, opts)
    try:
        await fixed_rate(calls.decide, rate, 3)  # warm-up
        fixed = await measured(fixed_rate(calls.decide, rate, duration), pids)
        most = await measured(max_throughput(calls.decide, 96, min(duration, 10)), pids)
    finally:
        for channel in channels:
            await channel.close()
    return {"p50_ms": fixed["p50_ms"], "p99_ms": fixed["p99_ms"],
            "cpu_us": fixed["server_cpu_us_per_req"], "max_rps": most["rps"],
            "max_cpu_us": most["server_cpu_us_per_req"]}  # fmt: skip


def run(revisions: dict[str, str], rounds: int, duration: float, rate: float) -> dict[str, Any]:
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in revisions}
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        work = Path(tmp)
        trees = {name: checkout(rev, work / name) for name, rev in revisions.items()}
        write_ruleset(work / "rules", offers=1000, routes=100)
        with (
            EmbeddedRedis(data_dir=work / "redis", fsync="everysec") as redis,
            EmbeddedRedis(data_dir=work / "outcomes", fsync="always") as outcomes,
        ):
            asyncio.run(load_profiles(redis.url, work / "rules", 100_000))
            compact_aof(redis.url)
            for n in range(rounds):
                for name, tree in trees.items():
                    port = free_port()
                    log = work / f"{name}.log"
                    server = start_server(
                        work / "rules", redis.url, port, log, outcomes.url, tree=tree
                    )
                    try:
                        asyncio.run(wait_serving(f"127.0.0.1:{port}", timeout=60))
                        got = asyncio.run(phases(port, child_pids(server.pid), rate, duration))
                    finally:
                        stop(server)
                    results[name].append(got)
                    print(f"round {n + 1} {name} ({revisions[name]}): {got}", flush=True)
    return results


def report(revisions: dict[str, str], results: dict[str, Any]) -> None:
    fields = ("p50_ms", "p99_ms", "cpu_us", "max_rps", "max_cpu_us")
    print("\n| commit | " + " | ".join(fields) + " |")
    print("|---|" + "---|" * len(fields))
    for name, rounds in results.items():
        cells = [f"{statistics.median(r[f] for r in rounds):g} ("
                 + " / ".join(f"{r[f]:g}" for r in rounds) + ")" for f in fields]  # fmt: skip
        print(f"| {name} {revisions[name]} | " + " | ".join(cells) + " |")
    print("(medians, then each round's figure; Decide at the fixed rate, then 96 in flight)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="a commit (or anything git names)")
    parser.add_argument("--after", default="HEAD")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=15.0, help="s at the fixed rate")
    parser.add_argument("--rate", type=float, default=1000.0, help="req/s")
    args = parser.parse_args()
    revisions = {"before": args.before, "after": args.after}
    report(revisions, run(revisions, args.rounds, args.duration, args.rate))


if __name__ == "__main__":
    main()
