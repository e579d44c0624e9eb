"""Pure evaluation micro-benchmarks, no I/O: decide() over a population, and the moment
engine's cost per interaction event.

python -m bench.micro [--quick]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from bench.gen_moments import DEMO_RULES, write_moments
from bench.gen_rules import demo_schema_values, write_ruleset
from decision_engine.decide.engine import decide
from decision_engine.decide.facts import build_facts
from decision_engine.decide.values import Contact, Context, CustomerState
from decision_engine.moments.engine import MomentEngine
from decision_engine.moments.model import InteractionEvent
from decision_engine.moments.synthetic import stream
from decision_engine.ruleset.compiled import CompiledRuleset, load_compiled
from decision_engine.store.generate import generate_profiles
from decision_engine.vocabulary import CHANNELS

RULE_COUNTS = (10, 100, 1000, 5000)
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


def time_decisions(
    ruleset: CompiledRuleset, cases: list[Case], rounds: int, *, explain: bool = False
) -> tuple[list[float], list[float]]:
    """µs per decision of each round over the whole population: (wall clock, CPU time).

    CPU time is less disturbed by other processes on a shared machine.
    """
    wall, cpu = [], []
    for _ in range(rounds):
        start, start_cpu = time.perf_counter(), time.process_time()
        for state, context in cases:
            decide(ruleset, state=state, context=context, now=NOW, decision_id="d", explain=explain)
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


def run(*, quick: bool = False, size: int = 2000) -> dict[str, Any]:
    rounds = 3 if quick else 7
    cases = population(size // 4 if quick else size, demo_schema_values()[0])
    results: dict[str, Any] = {"population": len(cases), "rounds": rounds, "by_rules": []}
    with tempfile.TemporaryDirectory(prefix="bench-rules-") as tmp:
        for offers in RULE_COUNTS:
            routes = max(5, offers // 10)
            directory = Path(tmp) / str(offers)
            write_ruleset(directory, offers=offers, routes=routes)
            start = time.perf_counter()
            ruleset = load_compiled(directory)
            load_s = time.perf_counter() - start
            per_round, cpu = time_decisions(ruleset, cases, rounds)
            row = {
                "offers": offers,
                "routes": routes,
                "rules": ruleset.rule_count,
                "load_compile_s": round(load_s, 3),
                "us_per_decision": round(statistics.median(per_round), 2),
                "us_per_decision_rounds": [round(x, 2) for x in per_round],
                "cpu_us_per_decision": round(statistics.median(cpu), 2),
                **{k: round(v, 4) for k, v in selectivity(ruleset, cases).items()},
            }
            results["by_rules"].append(row)
            print(
                f"  {offers:>5} offers: {row['us_per_decision']:8.1f} µs/decision "
                f"({row['cpu_us_per_decision']:.1f} CPU), "
                f"{row['candidates_per_decision']:.1f} candidates, "
                f"{row['eligible_per_decision']:.1f} eligible"
            )
            if offers == 1000:
                sample = cases[: max(50, len(cases) // 10)]
                plain = statistics.median(time_decisions(ruleset, sample, rounds)[0])
                explained = statistics.median(time_decisions(ruleset, sample, 3, explain=True)[0])
                results["explain_1000"] = {
                    "decisions": len(sample),
                    "us_per_decision": round(plain, 2),
                    "us_per_decision_explain": round(explained, 2),
                    "explain_factor": round(explained / plain, 1),
                }
                print(f"  explain=True at 1000 offers: {explained:,.0f} µs/decision")
    results["moments"] = moment_costs(quick=quick)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description="decide() micro-benchmark")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(json.dumps(run(quick=args.quick), indent=2))


if __name__ == "__main__":
    main()
