"""Pure evaluation micro-benchmarks, no I/O: decide() over a population, and the moment
engine's cost per interaction event.

python -m bench.micro [--quick]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from bench.gen_moments import DEMO_RULES, write_moments
from bench.gen_rules import demo_schema_values, write_ruleset
from decision_engine.decide.engine import decide
from decision_engine.decide.facts import build_facts
from decision_engine.decide.learning import Learned, learned_from
from decision_engine.decide.values import Contact, Context, CustomerState, OfferEvent
from decision_engine.moments.engine import MomentEngine
from decision_engine.moments.model import InteractionEvent
from decision_engine.moments.synthetic import stream
from decision_engine.ruleset.compiled import CompiledRuleset, load_compiled
from decision_engine.server import heap
from decision_engine.store.generate import generate_profiles
from decision_engine.vocabulary import CHANNELS

RULE_COUNTS = (10, 100, 1000, 5000, 10_000, 20_000)
QUICK_RULE_COUNTS = (10, 100, 1000, 10_000)
TODAY = date(2025, 6, 2)
NOW = datetime(2025, 6, 2, 10, 30, tzinfo=UTC).timestamp()
Case = tuple[CustomerState, Context]


def population(size: int, intents: list[str], seed: int = 11) -> list[Case]:
    """Profiles as Redis returns them (text), a few recent contacts, random contexts."""
    rng = random.Random(seed)
    cases: list[Case] = []
    for record in generate_profiles(size, seed=seed, today=TODAY):
        profile = {k: str(v) for k, v in record.items() if k != "customer_id"}
        contacts = tuple(
            Contact(f"i-{k}", rng.choice(CHANNELS), rng.choice(intents), NOW - rng.uniform(0, 6e5))
            # 20% have 2+ earlier contacts this week: a repeat contact with this one.
            for k in range(rng.choices((0, 1, 2, 3), (60, 20, 12, 8))[0])
        )
        context = Context(
            channel=rng.choice(CHANNELS),
            intent=rng.choice(intents),
            sentiment=round(rng.uniform(-1, 1), 2) if rng.random() < 0.3 else None,
            attributes={"card_status": "lost"} if rng.random() < 0.03 else {},
        )
        cases.append((CustomerState(profile, contacts), context))
    return cases


def with_history(ruleset: CompiledRuleset, cases: list[Case], seed: int = 12) -> list[Case]:
    """The same customers, each with 3 offers of the ruleset in their history (presented
    in the last 30 days, some declined): the contact policies then have work to do."""
    rng = random.Random(seed)
    ids = [o.spec.id for o in ruleset.offers]
    out: list[Case] = []
    for state, context in cases:
        history: dict[str, tuple[OfferEvent, ...]] = {}
        for offer_id in rng.sample(ids, min(3, len(ids))):
            at = NOW - rng.uniform(0, 30 * 86_400)
            events = [OfferEvent(at, "presented", "i-old")]
            if rng.random() < 0.4:
                events.append(OfferEvent(at + 60, "declined", "i-old"))
            history[offer_id] = tuple(events)
        out.append((CustomerState(state.profile, state.contacts, history), context))
    return out


def learned_counts(ruleset: CompiledRuleset, seed: int = 13) -> dict[str, str]:
    """What outcomes would have taught: each offer's true rate its propensity times a
    log-normal factor, seen in 0-400 outcomes overall and in each segment."""
    rng = random.Random(seed)
    segments = demo_schema_values()[1]
    stored: dict[str, str] = {}
    for offer in ruleset.offers:
        prior = offer.spec.propensity
        for segment in ("", *segments):
            rate = min(max(prior * rng.lognormvariate(0, 0.5), 0.001), 0.95)
            seen = rng.randint(0, 400)
            accepted = round(seen * rate)
            key = f"{offer.spec.id}|{segment}" if segment else offer.spec.id
            stored[key] = f"{accepted},{seen - accepted},{NOW}"
    return stored


def learned_state(ruleset: CompiledRuleset, seed: int = 13) -> Learned:
    return learned_from(learned_counts(ruleset, seed), ruleset, now=NOW)


def refresh_costs(ruleset: CompiledRuleset, rounds: int = 3) -> dict[str, Any]:
    """CPU ms of a worker's refresh of the posteriors (on its event loop when updated)
    and their plans for every segment, exploring or not: rebuilt from every key (the
    decay, once a minute), or updated with a second's outcomes on a few keys."""
    stored = learned_counts(ruleset)
    segments: list[object] = [None, *demo_schema_values()[1]]
    keys = [(segment, exploring) for segment in segments for exploring in (False, True)]

    def rebuilt(counts: dict[str, str]) -> Learned:
        learned = learned_from(counts, ruleset, now=NOW)
        for segment, exploring in keys:
            learned.plan(ruleset, segment, exploring=exploring)
        return learned

    out: dict[str, Any] = {"keys": len(stored), "plans": len(keys)}
    start = time.process_time()
    for _ in range(rounds):
        learned = rebuilt(stored)
    out["rebuild_ms"] = round((time.process_time() - start) / rounds * 1e3, 2)
    rng = random.Random(14)
    for touched in (10, 100, 1000):
        after = dict(stored)
        for key in rng.sample(sorted(stored), min(touched, len(stored))):
            a, b, at = after[key].split(",")
            after[key] = f"{float(a) + 1},{b},{at}"
        start = time.process_time()
        for _ in range(rounds):
            # As the server finds them: a pass over every key, then only the changed ones.
            changed = [k for k, v in after.items() if stored.get(k) != v]
            learned.updated(after, changed, ruleset, now=NOW)
        out[f"update_{touched}_ms"] = round((time.process_time() - start) / rounds * 1e3, 2)
    return out


def time_decisions(
    ruleset: CompiledRuleset,
    cases: list[Case],
    rounds: int,
    *,
    explain: bool = False,
    learned: Learned | None = None,
    explore: bool = False,
) -> tuple[list[float], list[float]]:
    """µs per decision of each round over the whole population: (wall clock, CPU time).

    CPU time is less disturbed by other processes on a shared machine. With `explore`,
    every decision samples (Thompson) from `learned`, each with a seed of its own.
    """
    wall, cpu = [], []
    for _ in range(rounds):
        start, start_cpu = time.perf_counter(), time.process_time()
        for n, (state, context) in enumerate(cases):
            seed = n if explore else None
            decide(ruleset, state=state, context=context, now=NOW, decision_id="d",
                   explain=explain, learned=learned, sample_seed=seed)  # fmt: skip
        wall.append((time.perf_counter() - start) / len(cases) * 1e6)
        cpu.append((time.process_time() - start_cpu) / len(cases) * 1e6)
    return wall, cpu


def selectivity(ruleset: CompiledRuleset, cases: list[Case]) -> dict[str, float]:
    """Mean candidates (index survivors) and eligible offers per decision, and their share."""
    candidates = eligible = 0
    for state, context in cases:
        facts = build_facts(ruleset, state, context, now=NOW)
        candidates += ruleset.offer_index.candidates(facts).bit_count()
        eligible += sum(1 for _ in ruleset.offer_index.matches(facts))
    n, offers = len(cases), len(ruleset.offers)
    return {
        "candidates_per_decision": candidates / n,
        "eligible_per_decision": eligible / n,
        "candidate_share": candidates / n / offers,
        "eligible_share": eligible / n / offers,
    }


Arrival = tuple[InteractionEvent, Any]


def time_moments(ruleset: CompiledRuleset, arrivals: list[Arrival], rounds: int) -> dict[str, Any]:
    """µs per event fed to a fresh MomentEngine (deadlines advanced as events arrive), by
    wall clock and CPU time; building the engine is outside the timing."""
    wall, cpu, detections = [], [], 0
    for _ in range(rounds):
        engine = MomentEngine(ruleset)
        start, start_cpu = time.perf_counter(), time.process_time()
        found = 0
        for event, profile in arrivals:
            found += len(engine.advance(event.occurred_at))
            found += len(engine.feed(event, profile))
        wall.append((time.perf_counter() - start) / len(arrivals) * 1e6)
        cpu.append((time.process_time() - start_cpu) / len(arrivals) * 1e6)
        engine.close()
        detections = found
    return {
        "moments": len(ruleset.source.moments),
        "events": len(arrivals),
        "interactions": len({e.interaction_id for e, _ in arrivals}),
        "detections": detections,
        "us_per_event": round(statistics.median(wall), 2),
        "us_per_event_rounds": [round(x, 2) for x in wall],
        "cpu_us_per_event": round(statistics.median(cpu), 2),
    }


def moment_costs(*, quick: bool = False) -> list[dict[str, Any]]:
    """The moment engine per event: the demo's moments, and synthetic sets of 10 and 100."""
    rounds, interactions = (3, 100) if quick else (7, 400)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-moments-") as tmp:
        sets = [("demo", DEMO_RULES)]
        for count in (10, 100):
            sets.append(
                (f"synthetic {count}", write_moments(Path(tmp) / str(count), moments=count))
            )
        for label, directory in sets:
            ruleset = load_compiled(directory)
            arrivals = list(stream(ruleset, interactions=interactions, seed=23))
            row = {"set": label, **time_moments(ruleset, arrivals, rounds)}
            rows.append(row)
            print(
                f"  {label:>13}: {row['moments']:>3} moments, {row['us_per_event']:7.1f} µs/event "
                f"({row['cpu_us_per_event']:.1f} CPU) over {row['events']} events"
            )
    return rows


def load_cost(directory: Path) -> dict[str, float]:
    """Seconds and MiB to load and compile a ruleset, in a fresh process (no earlier
    ruleset's freed memory to reuse): resident memory grown, which includes what the
    load needed on the way, and what the compiled ruleset keeps (tracemalloc, a second
    load of the same files)."""
    code = (
        "import gc, json, sys, time, tracemalloc\n"
        "from pathlib import Path\n"
        "from decision_engine.ruleset.compiled import load_compiled\n"
        "def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096\n"
        "before, start = rss(), time.perf_counter()\n"
        "ruleset = load_compiled(Path(sys.argv[1]))\n"
        "seconds, grown = time.perf_counter() - start, (rss() - before) / 2**20\n"
        "tracemalloc.start()\n"
        "again = load_compiled(Path(sys.argv[1]))\n"
        "gc.collect()\n"
        "kept = tracemalloc.get_traced_memory()[0] / 2**20\n"
        "print(json.dumps([seconds, grown, kept]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(directory)], check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    seconds, mib, kept = json.loads(out)
    return {
        "load_compile_s": round(seconds, 3),
        "load_compile_mib": round(mib, 1),
        "ruleset_mib": round(kept, 1),
    }


PATHS = ("plain", "history", "learned", "exploring")
"""How production decides: the rule files' propensities, a customer with offers in
their history (contact policies), learned propensities, learned and exploring."""


def time_paths(
    ruleset: CompiledRuleset, cases: list[Case], rounds: int
) -> dict[str, dict[str, Any]]:
    """µs per decision on each path, the paths taking turns round by round."""
    learned = learned_state(ruleset)
    variants = {
        "plain": (cases, {}),
        "history": (with_history(ruleset, cases), {}),
        "learned": (cases, {"learned": learned}),
        "exploring": (cases, {"learned": learned, "explore": True}),
    }
    wall: dict[str, list[float]] = {p: [] for p in PATHS}
    cpu: dict[str, list[float]] = {p: [] for p in PATHS}
    for _ in range(rounds):
        for path, (population, options) in variants.items():
            w, c = time_decisions(ruleset, population, 1, **options)  # type: ignore[arg-type]
            wall[path] += w
            cpu[path] += c
    return {
        p: {
            "us_per_decision": round(statistics.median(wall[p]), 2),
            "us_per_decision_rounds": [round(x, 2) for x in wall[p]],
            "cpu_us_per_decision": round(statistics.median(cpu[p]), 2),
        }
        for p in PATHS
    }


def run(*, quick: bool = False, size: int = 2000) -> dict[str, Any]:
    rounds = 3 if quick else 7
    cases = population(size // 4 if quick else size, demo_schema_values()[0])
    results: dict[str, Any] = {"population": len(cases), "rounds": rounds, "by_rules": []}
    with tempfile.TemporaryDirectory(prefix="bench-rules-") as tmp:
        for offers in QUICK_RULE_COUNTS if quick else RULE_COUNTS:
            routes = max(5, offers // 10)
            directory = Path(tmp) / str(offers)
            write_ruleset(directory, offers=offers, routes=routes)
            cost = load_cost(directory)
            ruleset = load_compiled(directory)
            heap.settle()  # as serve does: the ruleset out of the collector's full passes
            # The largest rulesets decide a quarter of the customers: the paths that
            # cannot prune cost milliseconds there.
            sample = cases if offers <= 5000 else cases[: len(cases) // 4]
            paths = time_paths(ruleset, sample, rounds)
            row = {
                "offers": offers,
                "routes": routes,
                "rules": ruleset.rule_count,
                **cost,
                "decisions": len(sample),
                **paths["plain"],
                "paths": paths,
                **{k: round(v, 4) for k, v in selectivity(ruleset, sample).items()},
            }
            results["by_rules"].append(row)
            print(
                f"  {offers:>6} offers: "
                + ", ".join(f"{p} {paths[p]['us_per_decision']:.1f}" for p in PATHS)
                + f" µs/decision; load+compile {cost['load_compile_s']:.2f} s "
                f"+{cost['load_compile_mib']:.0f} MiB (keeps {cost['ruleset_mib']:.0f}); "
                f"{row['candidates_per_decision']:.1f} "
                f"candidates, {row['eligible_per_decision']:.1f} eligible",
                flush=True,
            )
            refresh = refresh_costs(ruleset, rounds=1 if quick else 3)
            results.setdefault("learning_refresh", []).append({"offers": offers, **refresh})
            print(
                f"  learning refresh at {offers} offers ({refresh['keys']:,} keys, "
                f"{refresh['plans']} plans): rebuilt {refresh['rebuild_ms']:.1f} ms, updated "
                + ", ".join(
                    f"{n} keys {refresh[f'update_{n}_ms']:.2f} ms" for n in (10, 100, 1000)
                ),
                flush=True,
            )
            if offers == 1000:
                sample = cases[: max(50, len(cases) // 10)]
                # Plain and explained rounds take turns, so a slow spell of the machine
                # lands on both; the factor is of CPU time, which other processes disturb less.
                timed: dict[bool, tuple[list[float], list[float]]] = {
                    False: ([], []),
                    True: ([], []),
                }
                for _ in range(max(3, rounds // 2)):
                    for explain in (False, True):
                        w, c = time_decisions(ruleset, sample, 1, explain=explain)
                        timed[explain][0].extend(w)
                        timed[explain][1].extend(c)
                plain, explained = (statistics.median(timed[e][0]) for e in (False, True))
                plain_cpu, explained_cpu = (statistics.median(timed[e][1]) for e in (False, True))
                results["explain_1000"] = {
                    "decisions": len(sample),
                    "us_per_decision": round(plain, 2),
                    "us_per_decision_explain": round(explained, 2),
                    "cpu_us_per_decision": round(plain_cpu, 2),
                    "cpu_us_per_decision_explain": round(explained_cpu, 2),
                    "explain_factor": round(explained_cpu / plain_cpu, 1),
                }
                print(
                    f"  explain=True at 1000 offers: {explained:,.0f} µs/decision "
                    f"(x{explained_cpu / plain_cpu:.1f} a plain decision's CPU)",
                    flush=True,
                )
            del ruleset
    results["moments"] = moment_costs(quick=quick)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description="decide() micro-benchmark")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(json.dumps(run(quick=args.quick), indent=2))


if __name__ == "__main__":
    main()
