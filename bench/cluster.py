"""Scale-out on one machine: 3 replicas vs 1 behind nginx, and a Redis Cluster vs a plain
Redis under one replica. `make bench-cluster`.

    python -m bench.cluster [--quick] [--rounds 3]

Every server runs `serve --workers 2` with the benchmark's 1,000-offer ruleset over the
same synthetic profiles, and bench/load.py drives it from its own process: Decide open
loop at RATE req/s (latency from each call's due time), then closed loop with
CONCURRENCY calls in flight (decisions per second). The setups take turns, round after
round, so a noisy minute on this shared machine lands on all of them; medians and spread
over the rounds.

CPU per decision is the user + system time of every process that served it (the
replicas' workers; nginx's; Redis: one process, or the cluster's six nodes) over the
calls of the phase, at the fixed rate and at full load. On 2 cores three replicas compete
for the same cores as one: what they can show is the cost of spreading the work, not a
speed-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.gen_rules import write_ruleset
from bench.load import wait_serving
from bench.run import RESULTS, load_profiles, machine
from bench.serve import child_pids, free_port, start_server, stop
from decision_engine.store.embedded import EmbeddedRedis
from tests.cluster.fleet import nginx_config
from tests.cluster.redis_cluster import LocalCluster

RATE = 300.0
CONCURRENCY = 32
"""In flight at full load: 16 per worker of one replica, under the 32 calls a worker lets
wait for its event loop (--max-queued 64), so no setup sheds and all count the same work."""


@dataclass
class Setup:
    name: str
    target: str
    serve_pids: list[int]
    """The workers of the replicas behind `target`."""
    other_pids: list[int]
    """The load balancer's and Redis' processes."""


def nginx(work: Path, name: str, ports: list[int], stack: ExitStack) -> tuple[str, list[int]]:
    """An nginx with the shipped config in front of `ports`: (its address, its pids)."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    home = work / name
    home.mkdir()
    listen = free_port()
    log = (home / "nginx.log").open("w")
    stack.callback(log.close)
    proxy = subprocess.Popen(
        [binary, "-c", str(nginx_config(home, listen, ports)), "-p", str(home)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    stack.callback(proxy.wait, 15)
    stack.callback(proxy.terminate)
    target = f"127.0.0.1:{listen}"
    asyncio.run(wait_serving(target, timeout=30))
    return target, [proxy.pid, *child_pids(proxy.pid)]


def replica(
    work: Path, name: str, rules: Path, url: str, stack: ExitStack
) -> tuple[int, list[int]]:
    """A `serve` on `url`: (its port, its workers' pids)."""
    port = free_port()
    server = start_server(rules, url, port, work / f"{name}.log")
    stack.callback(stop, server)
    try:
        asyncio.run(wait_serving(f"127.0.0.1:{port}", timeout=60))
    except TimeoutError:
        tail = (work / f"{name}.log").read_text(errors="replace")[-3000:]
        raise SystemExit(f"{name} not SERVING; log tail:\n{tail}") from None
    return port, child_pids(server.pid)


def drive(setup: Setup, work: Path, customers: int, quick: bool) -> dict[str, Any]:
    """One round on one setup: the fixed rate, then the closed loop."""
    out = work / "load.json"
    timing = ["--warmup", "1", "--duration", "4", "--max-duration", "4"] if quick else [
        "--warmup", "2", "--duration", "15", "--max-duration", "10"]  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "bench.load", "--target", setup.target, "--out", str(out),
         "--customers", str(customers), "--phases", "decide", "--rounds", "1", "--rate", str(RATE),
         "--concurrency", str(CONCURRENCY),
         "--server-pids", ",".join(map(str, setup.serve_pids)),
         "--other-pids", ",".join(map(str, setup.other_pids)), *timing],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    decide = json.loads(out.read_text())["decide"]
    rate, closed = decide["fixed_rate"], decide["max_throughput"]
    # Per decision answered: a refused call costs little, and would lower the average.
    per_ok = closed["requests"] / max(closed["ok"], 1)
    return {
        "p50_ms": rate["p50_ms"],
        "p99_ms": rate["p99_ms"],
        "failed": sum(rate["errors"].values()),
        "degraded": rate["degraded"],
        "serve_cpu_us": rate["server_cpu_us_per_req"],
        "lb_and_redis_cpu_us": rate["helper_cpu_us_per_req"],
        "decisions_per_s": closed["rps"],
        "refused_at_max": sum(closed["errors"].values()),
        "serve_cpu_us_at_max": round(closed["server_cpu_us_per_req"] * per_ok),
        "lb_and_redis_cpu_us_at_max": round(closed["helper_cpu_us_per_req"] * per_ok),
    }


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and (min, max) of every figure over the rounds."""
    out: dict[str, Any] = {"rounds": len(rounds)}
    for key in rounds[0]:
        values = [r[key] for r in rounds]
        out[key] = round(statistics.median(values), 3)
        out[f"{key}_spread"] = [min(values), max(values)]
    out["total_cpu_us"] = round(out["serve_cpu_us"] + out["lb_and_redis_cpu_us"])
    at_max = out["serve_cpu_us_at_max"] + out["lb_and_redis_cpu_us_at_max"]
    out["total_cpu_us_at_max"] = round(at_max)
    # Decisions per second of CPU at full load: what a core buys, whatever the number
    # of replicas.
    out["decisions_per_core_s"] = round(1e6 / at_max)
    return out


def run(quick: bool, rounds: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    rules = work / "rules"
    write_ruleset(rules, offers=1000, routes=100)
    customers = 10_000 if quick else 50_000
    with ExitStack() as stack:
        plain = stack.enter_context(EmbeddedRedis(data_dir=work / "redis", fsync="everysec"))
        cluster = LocalCluster(work / "cluster")
        stack.callback(cluster.stop)
        for node in cluster.nodes:  # as the plain Redis: fsync every second
            redis.Redis(port=node.port).config_set("appendfsync", "everysec")
        for url in (plain.url, cluster.url):
            print(f"loading {customers:,} profiles into {url.split('://')[0]}", flush=True)
            asyncio.run(load_profiles(url, rules, customers))
        redis_pid = [plain.pid] if plain.pid else []
        cluster_pids = [node.process.pid for node in cluster.nodes]
        ports, workers = [], []
        for i in range(3):
            port, pids = replica(work, f"replica-{i}", rules, plain.url, stack)
            ports.append(port)
            workers.append(pids)
        on_cluster, cluster_workers = replica(work, "on-cluster", rules, cluster.url, stack)
        lb1, lb1_pids = nginx(work, "nginx-1", ports[:1], stack)
        lb3, lb3_pids = nginx(work, "nginx-3", ports, stack)
        every_worker = [pid for w in workers for pid in w]
        setups = [
            Setup("1 replica, direct", f"127.0.0.1:{ports[0]}", workers[0], redis_pid),
            Setup("1 replica, nginx", lb1, workers[0], lb1_pids + redis_pid),
            Setup("3 replicas, nginx", lb3, every_worker, lb3_pids + redis_pid),
            Setup("1 replica, direct, Redis Cluster", f"127.0.0.1:{on_cluster}",
                  cluster_workers, cluster_pids),
        ]  # fmt: skip
        measured: dict[str, list[dict[str, Any]]] = {s.name: [] for s in setups}
        for n in range(rounds):
            for setup in setups:
                print(f"round {n + 1}/{rounds}: {setup.name}", flush=True)
                measured[setup.name].append(drive(setup, work, customers, quick))
    results = {name: summarize(r) for name, r in measured.items()}
    one, three = results["1 replica, nginx"], results["3 replicas, nginx"]
    direct, clustered = results["1 replica, direct"], results["1 replica, direct, Redis Cluster"]
    return {
        "machine": machine(),
        "rate": RATE,
        "concurrency": CONCURRENCY,
        "customers": customers,
        "setups": results,
        "three_over_one_throughput": round(three["decisions_per_s"] / one["decisions_per_s"], 3),
        "three_over_one_cpu": round(three["total_cpu_us_at_max"] / one["total_cpu_us_at_max"], 3),
        "cluster_over_plain_serve_cpu": round(
            clustered["serve_cpu_us"] / direct["serve_cpu_us"], 3
        ),
        "cluster_over_plain_total_cpu": round(
            clustered["total_cpu_us"] / direct["total_cpu_us"], 3
        ),
    }


def report(results: dict[str, Any]) -> None:
    print(f"\nDecide, {results['customers']:,} customers, 1,000 offers; open loop at "
          f"{results['rate']:g} req/s, closed loop x{results['concurrency']}; "
          f"medians of {next(iter(results['setups'].values()))['rounds']} rounds")  # fmt: skip
    header = ("setup", "p50 ms", "p99 ms", "serve CPU µs", "LB+Redis CPU µs", "decisions/s",
              "CPU µs at max", "decisions/core-s", "failed", "refused at max")  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, s in results["setups"].items():
        lo, hi = s["decisions_per_s_spread"]
        row = (name, f"{s['p50_ms']:.2f}", f"{s['p99_ms']:.2f}", f"{s['serve_cpu_us']:.0f}",
               f"{s['lb_and_redis_cpu_us']:.0f}",
               f"{s['decisions_per_s']:,.0f} ({lo:,.0f}–{hi:,.0f})",
               f"{s['total_cpu_us_at_max']:.0f}", f"{s['decisions_per_core_s']:,}",
               f"{s['failed']:g}", f"{s['refused_at_max']:g}")  # fmt: skip
        print("| " + " | ".join(row) + " |")
    print(f"\n3 replicas / 1 (both behind nginx): throughput "
          f"x{results['three_over_one_throughput']}, CPU per decision at full load "
          f"x{results['three_over_one_cpu']}")  # fmt: skip
    print(f"Redis Cluster / plain Redis at {results['rate']:g} req/s: serve CPU per decision "
          f"x{results['cluster_over_plain_serve_cpu']}, with Redis "
          f"x{results['cluster_over_plain_total_cpu']}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short phases, fewer customers")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = run(args.quick, args.rounds)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cluster.json").write_text(json.dumps(results, indent=2) + "\n")
    report(results)
    print(f"\nwrote {RESULTS / 'cluster.json'}")


if __name__ == "__main__":
    main()
