"""The benchmark suite: micro-benchmarks, then a real server under load. `make bench`.

    python -m bench.run [--quick]

Starts a real Redis and a real `decision-engine serve` (2 workers) on ephemeral ports,
loads synthetic profiles, drives it from a separate load-generator process, prints a
table and writes bench/results/latest.json. Targets are reported as met / not met;
missing one is not an error exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from bench import eval_report, micro
from bench.gen_rules import write_ruleset
from bench.load import REFUSED, wait_serving
from bench.serve import child_pids, compact_aof, free_port, start_server, stop
from decision_engine._core import MODE as CORE_MODE
from decision_engine.ruleset.load import load_schema
from decision_engine.store.embedded import EmbeddedRedis
from decision_engine.store.generate import generate_profiles
from decision_engine.store.importer import canonical_profile
from decision_engine.store.profiles import ProfileStore

RESULTS = Path(__file__).resolve().parent / "results"
RULES_DIR = Path(__file__).resolve().parents[1] / "rules"
"""The demo rules, with the moments live guidance runs."""
P99_TARGET_MS = 5.0
THROUGHPUT_TARGET = 0.7
P99_VS_PING_TARGET = 1.5
CPU_VS_PING_TARGET = 2.0
SECURITY_P99_BUDGET = 0.15
OVERLOAD_P99_FACTOR = 3.0
"""Under 3x the max, admitted calls' p99 within this multiple of the p99 at 1,000 req/s."""
REFUSED_P99_TARGET_MS = 5.0
RSS_GROWTH_TARGET = 0.10


async def load_profiles(url: str, rules: Path, count: int) -> dict[str, float]:
    """Generate, validate (as the importer does) and store `count` profiles."""
    schema = load_schema(rules)
    store = ProfileStore.from_url(url, socket_timeout=30)
    start = time.perf_counter()
    try:
        rows = (
            canonical_profile(p, schema)
            for p in generate_profiles(count, seed=42, today=date.today())
        )
        written = await store.put_profiles(rows, batch_size=2000)
    finally:
        await store.aclose()
    seconds = time.perf_counter() - start
    return {"profiles": written, "seconds": round(seconds, 2), "per_s": round(written / seconds)}


def server_counters(metrics_port: int) -> dict[str, float]:
    """The server's shed, Redis-error and degraded-decision counters (all workers)."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    counters: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name.startswith(("requests_shed_total", "redis_errors_total")):
            counters[name] = float(value)
        elif name.startswith("decisions_total") and 'degraded="true"' in name:
            counters["decisions_total{degraded=true}"] = counters.get(
                "decisions_total{degraded=true}", 0.0
            ) + float(value)
    return counters


def server_under_load(
    quick: bool, work: Path, *, only_security: bool = False, only_guidance: bool = False
) -> dict[str, Any]:
    """Redis + profiles + server + the load generator in its own process."""
    rules = work / "rules"
    write_ruleset(rules, offers=1000, routes=100)
    profiles = 10_000 if quick else 100_000
    log = work / "server.log"
    with ExitStack() as stack:
        # As `serve` runs them by default: the decision path's Redis fsyncs every second,
        # the outcome log's before every reply.
        redis = stack.enter_context(
            EmbeddedRedis(data_dir=work / "redis", port=0, fsync="everysec")
        )
        outcomes = stack.enter_context(EmbeddedRedis(data_dir=work / "outcomes", fsync="always"))
        print(f"redis at {redis.address}; loading {profiles:,} profiles", flush=True)
        imported = asyncio.run(load_profiles(redis.url, rules, profiles))
        print(f"  {imported['profiles']:,} profiles in {imported['seconds']} s", flush=True)
        compact_aof(redis.url)
        if only_guidance:
            return {
                "import": imported,
                "guidance": guidance_cost(redis.url, outcomes.url, work, quick=quick),
            }
        if only_security:
            return {
                "import": imported,
                "security": security_cost(
                    rules, redis.url, outcomes.url, work, profiles=profiles, quick=quick
                ),
            }
        port, metrics_port = free_port(), free_port()
        server = start_server(rules, redis.url, port, log, outcomes.url, metrics_port)
        stack.callback(stop, server)
        target = f"127.0.0.1:{port}"
        try:
            asyncio.run(wait_serving(target, timeout=60))
        except TimeoutError:
            code = server.poll()
            tail = log.read_text(errors="replace")[-3000:]
            raise SystemExit(f"server not SERVING (exit code {code}); log tail:\n{tail}") from None
        print(f"server SERVING at {target} (2 workers); load generator starting", flush=True)
        pids = ",".join(map(str, child_pids(server.pid)))
        phases = (
            ["--warmup", "1", "--duration", "3", "--max-duration", "3", "--overload-duration", "5"]
            if quick
            else []
        )
        out = work / "load.json"
        subprocess.run(
            [sys.executable, "-m", "bench.load", "--target", target, "--out", str(out),
             "--customers", str(profiles), "--server-pids", pids, *phases],
            check=True,
        )  # fmt: skip
        result: dict[str, Any] = json.loads(out.read_text())
        result["server_counters"] = server_counters(metrics_port)
        stop(server)
        result["security"] = security_cost(
            rules, redis.url, outcomes.url, work, profiles=profiles, quick=quick
        )
        result["guidance"] = guidance_cost(redis.url, outcomes.url, work, quick=quick)
    result["import"] = imported
    result["server_log_tail"] = log.read_text(errors="replace")[-2000:]
    return result


SECURITY_RATES = (1000.0, 400.0)
"""The target's rate, and one this 2-core host sustains with room to spare."""


def security_cost(
    rules: Path, redis_url: str, outcomes_url: str, work: Path, *, profiles: int, quick: bool
) -> dict[str, Any]:
    """Decide at fixed rates on a plaintext server without auth and on one with TLS and
    bearer tokens, back to back (a fresh server each, the same Redis and profiles)."""
    from decision_engine.server.auth import hash_token
    from decision_engine.server.dev_pki import make_dev_pki

    pki = make_dev_pki(work / "pki", name="bench")
    token = "bench-desktop-token"
    tokens = work / "tokens"
    tokens.write_text(f"{hash_token(token)} desktop bench\n")
    modes: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
        "plain": ((), ()),
        "tls_auth": (
            ("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
             "--auth-tokens", str(tokens)),
            ("--tls-ca", str(pki.ca), "--token", token),
        ),
    }  # fmt: skip
    timing = ["--warmup", "1", "--duration", "3"] if quick else []
    results: dict[str, Any] = {}
    for rate in SECURITY_RATES:
        by_mode: dict[str, Any] = {}
        for mode, (server_args, client_args) in modes.items():
            port = free_port()
            log = work / f"server-{mode}-{rate:g}.log"
            server = start_server(rules, redis_url, port, log, outcomes_url, extra=server_args)
            try:
                target = f"127.0.0.1:{port}"
                asyncio.run(wait_serving(target, timeout=60, tls_ca=str(pki.ca)
                                         if client_args else ""))  # fmt: skip
                pids = ",".join(map(str, child_pids(server.pid)))
                out = work / f"load-{mode}-{rate:g}.json"
                print(f"security A/B: {mode} at {rate:g} req/s", flush=True)
                subprocess.run(
                    [sys.executable, "-m", "bench.load", "--target", target, "--out", str(out),
                     "--customers", str(profiles), "--phases", "rate", "--rate", str(rate),
                     "--server-pids", pids, *timing, *client_args],
                    check=True,
                )  # fmt: skip
                by_mode[mode] = json.loads(out.read_text())["rate"]
            finally:
                stop(server)
        plain, secured = by_mode["plain"]["p99_ms"], by_mode["tls_auth"]["p99_ms"]
        by_mode["p99_ratio"] = round(secured / plain, 3) if plain else None
        results[f"{rate:g}"] = by_mode
    return results


GUIDANCE_POINTS = ((1000, 500.0), (250, 500.0))
"""(concurrent interactions at one event per second each, Decide req/s): the target's
load, and a quarter of its interactions."""
GUIDANCE_P99_TARGET_MS = 20.0
GUIDANCE_DECIDE_BUDGET = 0.15


def guidance_cost(redis_url: str, outcomes_url: str, work: Path, *, quick: bool) -> dict[str, Any]:
    """Live guidance: the demo rules and moments on a server with a moment process; at
    each point Decide alone, then Decide beside the interactions (bench/guidance.py)."""
    timing = ["--duration", "5", "--warmup", "3"] if quick else []
    results: dict[str, Any] = {}
    for interactions, rate in GUIDANCE_POINTS:
        port, metrics_port = free_port(), free_port()
        log = work / f"server-guidance-{interactions}.log"
        server = start_server(
            RULES_DIR, redis_url, port, log, outcomes_url, metrics_port,
            extra=("--max-watches", str(2 * interactions)), moment_workers=1,
        )  # fmt: skip
        try:
            target = f"127.0.0.1:{port}"
            asyncio.run(wait_serving(target, timeout=60))
            out = work / f"guidance-{interactions}.json"
            print(f"live guidance: {interactions} interactions + Decide at {rate:g} req/s",
                  flush=True)  # fmt: skip
            subprocess.run(
                [sys.executable, "-m", "bench.guidance", "--target", target, "--out", str(out),
                 "--interactions", str(interactions), "--decide-rate", str(rate),
                 "--customers", "10000", *timing],
                check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip
            results[str(interactions)] = json.loads(out.read_text())
        finally:
            stop(server)
    return results


def notices_cost(*, quick: bool) -> dict[str, Any]:
    """Proactive notices in a server of their own (bench/notices.py)."""
    print("proactive notices: an audience, single events, Decide beside", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-notices-") as work:
        out = Path(work) / "notices.json"
        sizes = ["--audience", "20000", "--duration", "8"] if quick else []
        subprocess.run(
            [sys.executable, "-m", "bench.notices", "--out", str(out), *sizes],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        result: dict[str, Any] = json.loads(out.read_text())
    return result


def _guidance_errors(g: dict[str, Any]) -> int:
    """Calls that failed: publishing events, or Decide beside the interactions."""
    return sum(g["publish_errors"].values()) + sum(g["decide_with_interactions"]["errors"].values())


def guidance_targets(guidance: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for interactions, g in guidance.items():
        p99, ratio = g["event_to_guidance"]["p99_ms"], g["decide_p99_ratio"]
        errors = sum(g["publish_errors"].values()) + sum(
            g["decide_with_interactions"]["errors"].values()
        )
        out[f"guidance_p99_at_{interactions}_interactions"] = {
            "target": f"event -> guidance p99 <= {GUIDANCE_P99_TARGET_MS:g} ms",
            "value": p99,
            "events_per_second": g["events_per_second"],
            "errors": errors,
            "met": p99 <= GUIDANCE_P99_TARGET_MS and errors == 0,
        }
        out[f"guidance_decide_cost_at_{interactions}_interactions"] = {
            "target": f"Decide p99 within {GUIDANCE_DECIDE_BUDGET:.0%} of Decide alone",
            "value": f"{g['decide_with_interactions']['p99_ms']} vs "
            f"{g['decide_alone']['p99_ms']} ms (x{ratio})",
            "met": ratio is not None and ratio <= 1 + GUIDANCE_DECIDE_BUDGET,
        }
    return out


def targets(
    micro_result: dict[str, Any] | None,
    load: dict[str, Any] | None,
    zen: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if micro_result is not None:
        out.update(eval_report.eval_targets(micro_result, zen))
    if load is not None and "decide" in load:
        fixed = load["decide"]["fixed_rate"]
        out["decide_p99_at_1000rps"] = {
            "target": f"<= {P99_TARGET_MS:g} ms at 1,000 req/s",
            "value": fixed["p99_ms"],
            "achieved_rate": fixed["achieved_rate"],
            "met": fixed["p99_ms"] <= P99_TARGET_MS and fixed["achieved_rate"] >= 0.98 * 1000,
        }
        out["throughput_vs_ping"] = {
            "target": f">= {THROUGHPUT_TARGET:.0%} of Ping",
            "value": load["decide_over_ping"],
            "met": load["decide_over_ping"] >= THROUGHPUT_TARGET,
        }
        if "ping" in load:
            ping = load["ping"]
            p99_ratio = fixed["p99_ms"] / ping["fixed_rate"]["p99_ms"]
            out["p99_vs_ping_at_1000rps"] = {
                "target": f"Decide p99 <= {P99_VS_PING_TARGET:g}x Ping's at 1,000 req/s",
                "value": f"{fixed['p99_ms']} vs {ping['fixed_rate']['p99_ms']} ms "
                f"(x{p99_ratio:.2f})",
                "met": p99_ratio <= P99_VS_PING_TARGET,
            }
            cpu = load["decide"]["max_throughput"].get("server_cpu_us_per_req")
            ping_cpu = ping["max_throughput"].get("server_cpu_us_per_req")
            if cpu and ping_cpu:
                out["cpu_vs_ping"] = {
                    "target": f"server CPU per Decide <= {CPU_VS_PING_TARGET:g}x Ping's",
                    "value": f"{cpu} vs {ping_cpu} µs (x{cpu / ping_cpu:.2f})",
                    "met": cpu / ping_cpu <= CPU_VS_PING_TARGET,
                }
        if "overload" in load:
            out.update(overload_targets(load["overload"], fixed["p99_ms"]))
    if load is not None and "guidance" in load:
        out.update(guidance_targets(load["guidance"]))
    if load is not None and "security" in load:
        for rate, sec in load["security"].items():
            out[f"tls_auth_p99_cost_at_{rate}rps"] = {
                "target": f"p99 with TLS and tokens <= {1 + SECURITY_P99_BUDGET:.2f}x without, "
                f"at {rate} req/s, back to back",
                "value": f"{sec['tls_auth']['p99_ms']} vs {sec['plain']['p99_ms']} ms "
                f"(x{sec['p99_ratio']})",
                "met": sec["p99_ratio"] is not None and sec["p99_ratio"] <= 1 + SECURITY_P99_BUDGET,
            }
    return out


def overload_targets(over: dict[str, Any], p99_at_1000: float) -> dict[str, Any]:
    """Under 3x the max (or the highest factor the generator could offer): admitted
    calls stay fast, the rest are refused at once, none decided without the profile,
    and the workers give back what the load took. Latencies the generator could not
    keep up with are the generator's, so they meet nothing."""
    admitted, refused = over["admitted"]["p99_ms"], over["refused"]["p99_ms"]
    measured = over.get("generator_kept_up", True)
    before, after = over["rss_kib_before"], over["rss_kib_after"]
    growth = {pid: round(after[pid] / kib - 1, 3) for pid, kib in before.items() if pid in after}
    health = over["health"]["statuses"]
    return {
        "overload_admitted_p99": {
            "target": f"<= {OVERLOAD_P99_FACTOR:g}x the p99 at 1,000 req/s "
            f"({OVERLOAD_P99_FACTOR * p99_at_1000:.2f} ms)",
            "value": admitted,
            "from_send_ms": over["admitted_from_send"]["p99_ms"],
            "generator_lag_p99_ms": over["generator_lag"]["p99_ms"],
            "factor": over.get("factor"),
            "generator_kept_up": measured,
            "met": measured and admitted <= OVERLOAD_P99_FACTOR * p99_at_1000,
        },
        "overload_refused_p99": {
            "target": f"<= {REFUSED_P99_TARGET_MS:g} ms (any of {', '.join(REFUSED)})",
            "value": refused,
            "from_send_ms": over["refused_from_send"]["p99_ms"],
            "met": measured and over["refused"]["count"] > 0 and refused <= REFUSED_P99_TARGET_MS,
        },
        "overload_degraded": {
            "target": "0 answers without the profile while Redis is healthy",
            "value": over["degraded"],
            "met": over["degraded"] == 0,
        },
        "overload_rss": {
            "target": f"each worker within {RSS_GROWTH_TARGET:.0%} of its RSS before the load",
            "value": growth,
            "met": bool(growth) and all(g <= RSS_GROWTH_TARGET for g in growth.values()),
        },
        "overload_health": {
            "target": "every health check SERVING during the overload",
            "value": health,
            "met": set(health) == {"SERVING"},
        },
    }


def zen_comparison(*, quick: bool) -> list[dict[str, Any]] | None:
    """zen-engine beside decide() (bench/zen.py), when the `bench` extra is installed."""
    try:
        import zen  # noqa: F401
    except ImportError:
        print("zen-engine not installed (pip install -e '.[bench]'): no comparison", flush=True)
        return None
    from bench import zen as zen_bench

    print("beside zen-engine: the same eligibility rules and inputs", flush=True)
    sizes, inputs, rounds = ((100, 1000), 500, 3) if quick else ((100, 1000, 10_000), 2000, 5)
    return zen_bench.run(sizes, inputs, rounds)


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    git = ["git", "-C", str(RESULTS.parent.parent)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True)
    return {
        "commit": commit.stdout.strip(),
        "uncommitted_changes": bool(dirty.stdout.strip()),
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "decision_core": CORE_MODE,
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def report(results: dict[str, Any]) -> None:
    if "micro" in results:
        eval_report.report(results["micro"], results.get("zen"))
        if "moments" in results["micro"]:
            print("\n== moment engine per interaction event (pure, no I/O; median) ==")
            print(f"{'set':>14} {'moments':>8} {'µs/event':>9} {'CPU µs':>7} {'events':>7}")
            for m in results["micro"]["moments"]:
                print(
                    f"{m['set']:>14} {m['moments']:>8} {m['us_per_event']:>9.1f}"
                    f" {m['cpu_us_per_event']:>7.1f} {m['events']:>7}"
                )
    load = results.get("load")
    if load and "decide" in load:
        print("\n== server under load (2 workers, same machine as the load generator) ==")
        print(f"{'rpc':<7} {'rate':>6} {'p50 ms':>7} {'p99 ms':>7} {'p99.9 ms':>8} "
              f"{'errors':>6} {'max req/s':>9} {'server CPU µs/req':>17}")  # fmt: skip
        for rpc in ("decide", "ping"):
            f, m = load[rpc]["fixed_rate"], load[rpc]["max_throughput"]
            errors = sum(f["errors"].values()) + sum(m["errors"].values())
            print(
                f"{rpc:<7} {f['achieved_rate']:>6.0f} {f['p50_ms']:>7.2f} {f['p99_ms']:>7.2f}"
                f" {f['p999_ms']:>8.2f} {errors:>6} {m['rps']:>9.0f}"
                f" {m.get('server_cpu_us_per_req', '?'):>17}"
            )
        print(f"Decide/Ping throughput: {load['decide_over_ping']:.2f}")
        if "overload" in load:
            report_overload(load)
    if load and "guidance" in load:
        report_guidance(load["guidance"])
    if "notices" in results:
        from bench import notices

        notices.report(results["notices"])
    if load and "security" in load:
        print("\n== Decide at fixed rates: plaintext without auth, then TLS + tokens ==")
        for rate, sec in load["security"].items():
            for mode in ("plain", "tls_auth"):
                f = sec[mode]
                print(
                    f"{rate:>5} req/s {mode:<9} p50 {f['p50_ms']:.2f}  p99 {f['p99_ms']:.2f}  "
                    f"p99.9 {f['p999_ms']:.2f} ms  errors {sum(f['errors'].values())}  "
                    f"server CPU {f.get('server_cpu_us_per_req', '?')} µs/req"
                )
    print("\n== targets ==")
    for name, t in results["targets"].items():
        mark = "met    " if t["met"] else "NOT MET"
        print(f"{mark}  {name}: {t['value']} (target {t['target']})")


def report_guidance(guidance: dict[str, Any]) -> None:
    print("\n== live guidance: interactions (1 event/s each, watched) + Decide ==")
    header = ("interactions", "events/s", "guidance", "ev->guid p50", "p99 ms", "errors",
              "Decide p99 alone", "with", "ratio")  # fmt: skip
    print(" ".join(f"{h:>{max(6, len(h))}}" for h in header))
    for interactions, g in guidance.items():
        lat = g["event_to_guidance"]
        errors = _guidance_errors(g)
        print(
            f"{interactions:>12} {g['events_per_second']:>8.0f} {g['guidance_items']:>8}"
            f" {lat['p50_ms']:>12} {lat['p99_ms']:>8} {errors:>6}"
            f" {g['decide_alone']['p99_ms']:>16} {g['decide_with_interactions']['p99_ms']:>8}"
            f" {g['decide_p99_ratio']:>6}"
        )


def report_overload(load: dict[str, Any]) -> None:
    over = load["overload"]
    factor = f"{over['factor']:g}x the max" if over.get("factor") else "as asked"
    print(
        f"\n== overload: Decide open loop at {over['offered_rate']:,} req/s ({factor}) "
        f"for {over['seconds']:g} s, {over['clients']} generator processes =="
    )
    for tried in over.get("generator_bound", []):
        print(
            f"  ({tried['factor']:g}x, {tried['offered_rate']:,} req/s, measured the generator: "
            f"it sent calls {tried['generator_lag']['p99_ms']:,.0f} ms late at p99)"
        )
    print(f"{'outcome':<19} {'calls':>7} {'p50 ms':>8} {'p99 ms':>8} {'p99 from send':>13}")
    for outcome, row in over["by_outcome"].items():
        sent = over["from_send"].get(outcome, {})
        print(
            f"{outcome:<19} {row['count']:>7} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f}"
            f" {sent.get('p99_ms', float('nan')):>13.2f}"
        )
    lag = over["generator_lag"]
    print(
        f"admitted {over['admitted_rps']:,.0f} req/s; degraded answers {over['degraded']}; "
        f"generator lag p50/p99 {lag['p50_ms']:.1f}/{lag['p99_ms']:.1f} ms; "
        f"machine busy {over['machine_busy_cores']} cores"
    )
    health = over["health"]
    print(f"health checks during it: {health['statuses']}, p99 {health['p99_ms']:.1f} ms")
    for pid, before in over["rss_kib_before"].items():
        after = over["rss_kib_after"].get(pid, 0)
        print(f"worker {pid} RSS {before / 1024:.1f} MiB before, {after / 1024:.1f} MiB after")
    for reason, message in over["messages"].items():
        print(f"  {reason}: {message}")
    crowd = load.get("crowd")
    if crowd:
        print(
            f"closed loop x{crowd['concurrency']}: {crowd['rps']:,.0f} req/s answered, "
            f"p50/p99 {crowd['ok_p50_ms']:.1f}/{crowd['ok_p99_ms']:.1f} ms; "
            f"turned away {crowd['errors']}"
        )
    counters = load.get("server_counters", {})
    if counters:
        print(
            "server counters (whole run): " + ", ".join(f"{k} {v:g}" for k, v in counters.items())
        )


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the benchmark suite.")
    parser.add_argument("--quick", action="store_true", help="short phases, 10k profiles")
    parser.add_argument("--no-server", action="store_true", help="micro-benchmarks only")
    parser.add_argument(
        "--security-only", action="store_true", help="only the TLS + auth A/B on the server"
    )
    parser.add_argument(
        "--guidance-only", action="store_true", help="only live guidance under load"
    )
    parser.add_argument("--notices-only", action="store_true", help="only proactive notices")
    args = parser.parse_args()
    results: dict[str, Any] = {"quick": args.quick, "machine": machine()}
    only = args.security_only or args.guidance_only or args.notices_only
    if not only:
        print("micro-benchmarks: decide() by rule count", flush=True)
        results["micro"] = micro.run(quick=args.quick)
        results["zen"] = zen_comparison(quick=args.quick)
    if not args.no_server and not args.notices_only:
        with tempfile.TemporaryDirectory(prefix="bench-") as work:
            results["load"] = server_under_load(
                args.quick,
                Path(work),
                only_security=args.security_only,
                only_guidance=args.guidance_only,
            )
    if not args.no_server and not (args.security_only or args.guidance_only):
        results["notices"] = notices_cost(quick=args.quick)
    results["targets"] = targets(results.get("micro"), results.get("load"), results.get("zen"))
    if "notices" in results:
        from bench import notices

        results["targets"].update(notices.targets(results["notices"]))
    RESULTS.mkdir(exist_ok=True)
    name = "latest.json"
    if args.security_only:
        name = "security.json"
    elif args.guidance_only:
        name = "guidance.json"
    elif args.notices_only:
        name = "notices.json"
    written = RESULTS / name
    written.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    report(results)
    print(f"\nwritten: {written}")


if __name__ == "__main__":
    main()
