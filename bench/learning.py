"""Does the engine learn which offer works? A simulation through the real code path.

    .venv/bin/python -m bench.learning [--seeds 5] [--steps 8000] [--quick]
        [--scenarios overall by_segment] [--out bench/results]

About 40 s for the defaults (5 seeds x 8,000 outcomes x 2 scenarios); the figure
needs matplotlib (in the `dev` extra).

Six offers compete for the same customers (one slot, `max_offers: 1`); the rule
files' propensities are deliberately wrong: they favour an offer that is among the
worst in truth and rank the truly best one last. Hidden acceptance rates answer.
The ruleset is written to a temporary directory; rules/ is not used.

Per step a synthetic customer (profile stored in a real Redis, an EmbeddedRedis
in a temporary directory) is decided exactly as the server does:

- the store's decision read (`ProfileStore.load_for_decision`),
- `decide()` with the current `Learned`: posterior means, or with probability
  `learning.exploration` a seeded Thompson draw,
- the decision (as the server signs it into the id), then PRESENTED and ACCEPTED or
  DECLINED (drawn from the shown offer's hidden rate) through `record_outcome`,
  the real Lua script that keeps the decayed counts in `nba:learning`,
- every 20 decisions the posteriors are refreshed from Redis with
  `learned_from(load_learning(...), now=...)`, as the server does each second;
  simulated time advances 30 s per decision, so the stored counts decay.

Measured, per seed: the share of a fixed probe sample of customers for whom the
truly best eligible offer (highest true acceptance x value) is ranked first by the
posterior means; the outcomes it takes until that share is >= 90 % and stays there;
and the cumulative regret (best expected value - expected value of the offer
shown) of learning, against the static priors (the engine without learning) on
the same customer stream. Two scenarios: `overall` (one rate per offer) and
`by_segment` (`learning.by: segment`, the best offer differs per segment).

Writes bench/results/learning.json and bench/results/learning.png and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.run import machine
from decision_engine.decide.engine import decide
from decision_engine.decide.learning import Learned, decayed, learned_from
from decision_engine.decide.values import Context, CustomerState
from decision_engine.ruleset.compiled import CompiledRuleset, load_compiled
from decision_engine.store.embedded import EmbeddedRedis
from decision_engine.store.keys import LEARNING
from decision_engine.store.outcomes import (
    DecisionRecord,
    load_learning,
    record_outcome,
)
from decision_engine.store.profiles import ProfileStore

RESULTS = Path(__file__).resolve().parent / "results"
START = 1_750_000_000.0
STEP_S = 30.0
"""Simulated seconds between two decisions."""
REFRESH_EVERY = 20
"""Decisions between two refreshes of the posteriors (the server: every second)."""
PROBE_EVERY = 100
PROBE_SIZE = 200
POOL_SIZE = 2_000
TARGET_SHARE = 0.9
SEGMENTS = ("gold", "silver", "bronze")
CONTEXT = Context(channel="voice", intent="general_inquiry")
LEARNING_SETTINGS = {"prior_strength": 20, "half_life_days": 30, "exploration": 0.1}


@dataclass(frozen=True, slots=True)
class Offer:
    id: str
    value: float
    prior: float
    """The rule file's propensity: what the engine believes before any outcome."""
    true_rate: Mapping[str, float]
    """Hidden acceptance rate per segment."""
    when: str = ""


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    by: str | None
    offers: tuple[Offer, ...]

    def rate(self, offer_id: str, segment: str) -> float:
        return self.offer(offer_id).true_rate[segment]

    def offer(self, offer_id: str) -> Offer:
        return next(o for o in self.offers if o.id == offer_id)


def _same(rate: float) -> dict[str, float]:
    return dict.fromkeys(SEGMENTS, rate)


# Priors rank a > b > c > f > d > e (prior x value: 30, 26.4, 20, 16, 15, 12); in truth
# e is best (28) where eligible (tenure >= 12 months), then f (20); a is worst (10).
OVERALL = Scenario(
    "overall",
    None,
    (
        Offer("bundle-a", 100, 0.30, _same(0.10)),
        Offer("bundle-b", 120, 0.22, _same(0.12)),
        Offer("bundle-c", 80, 0.25, _same(0.15)),
        Offer("bundle-d", 150, 0.10, _same(0.09)),
        Offer("bundle-e", 100, 0.12, _same(0.28), when="tenure_months >= 12"),
        Offer("bundle-f", 200, 0.08, _same(0.10)),
    ),
)
# Same priors, every offer open to everyone; the best offer depends on the segment:
# gold e (32), silver f (32), bronze c (24).
BY_SEGMENT = Scenario(
    "by_segment",
    "segment",
    (
        Offer("bundle-a", 100, 0.30, {"gold": 0.10, "silver": 0.08, "bronze": 0.12}),
        Offer("bundle-b", 120, 0.22, {"gold": 0.10, "silver": 0.10, "bronze": 0.10}),
        Offer("bundle-c", 80, 0.25, {"gold": 0.10, "silver": 0.12, "bronze": 0.30}),
        Offer("bundle-d", 150, 0.10, {"gold": 0.09, "silver": 0.08, "bronze": 0.06}),
        Offer("bundle-e", 100, 0.12, {"gold": 0.32, "silver": 0.10, "bronze": 0.08}),
        Offer("bundle-f", 200, 0.08, {"gold": 0.10, "silver": 0.16, "bronze": 0.05}),
    ),
)
SCENARIOS = (OVERALL, BY_SEGMENT)


def write_ruleset(directory: Path, scenario: Scenario) -> CompiledRuleset:
    """The scenario's rules as YAML in `directory`, loaded and compiled like any ruleset."""
    learning = dict(LEARNING_SETTINGS)
    settings = ", ".join(f"{k}: {v}" for k, v in learning.items())
    if scenario.by:
        settings += f", by: {scenario.by}"
    lines = [
        "schema:",
        "  profile:",
        f"    segment: {{type: enum, values: [{', '.join(SEGMENTS)}]}}",
        "    tenure_months: {type: integer, min: 0}",
        "  intents: [general_inquiry]",
        "routing:",
        "  default: {queue: general, priority: 5}",
        "offers:",
    ]
    for offer in scenario.offers:
        lines += [
            f"  - id: {offer.id}",
            f"    title: {offer.id}",
            "    category: cross_sell",
            f"    value: {offer.value:g}",
            f"    propensity: {offer.prior:g}",
            "    script: x",
        ]
        if offer.when:
            lines.append(f"    when: {offer.when}")
    lines += ["arbitration:", "  max_offers: 1", f"  learning: {{{settings}}}"]
    (directory / "rules.yaml").write_text("\n".join(lines) + "\n")
    return load_compiled(directory)


def customers(count: int, seed: int) -> list[tuple[str, dict[str, str]]]:
    """(customer id, raw profile) as the importer stores them."""
    rng = random.Random(seed)
    return [
        (f"c{n:05d}", {"segment": rng.choice(SEGMENTS), "tenure_months": str(rng.randint(0, 60))})
        for n in range(count)
    ]


class Truth:
    """What the engine does not know: expected values, per customer, of every eligible offer."""

    def __init__(
        self,
        scenario: Scenario,
        ruleset: CompiledRuleset,
        pool: Sequence[tuple[str, dict[str, str]]],
    ) -> None:
        self.scenario = scenario
        self.best: dict[str, float] = {}
        self.best_offer: dict[str, str] = {}
        self.static_ev: dict[str, float] = {}
        self.static_first: dict[str, str] = {}
        for customer_id, profile in pool:
            state = CustomerState(profile)
            eligible = decide(
                ruleset,
                state=state,
                context=CONTEXT,
                now=START,
                decision_id="truth",
                max_offers=len(scenario.offers),
            ).offers
            segment = profile["segment"]
            values = {o.offer_id: self.ev(o.offer_id, segment) for o in eligible}
            best = max(values, key=lambda offer_id: values[offer_id])
            self.best[customer_id], self.best_offer[customer_id] = values[best], best
            # The engine without learning: the rule files' propensities, every time.
            static = eligible[0].offer_id
            self.static_first[customer_id], self.static_ev[customer_id] = static, values[static]

    def ev(self, offer_id: str, segment: str) -> float:
        offer = self.scenario.offer(offer_id)
        return offer.value * offer.true_rate[segment]


def share_first(
    ruleset: CompiledRuleset,
    learned: Learned | None,
    probe: Sequence[tuple[str, dict[str, str]]],
    truth: Truth,
    now: float,
) -> float:
    """Share of the probe customers whose truly best eligible offer the means rank first."""
    hits = 0
    for customer_id, profile in probe:
        decision = decide(
            ruleset,
            state=CustomerState(profile),
            context=CONTEXT,
            now=now,
            decision_id="probe",
            learned=learned,
        )
        hits += decision.offers[0].offer_id == truth.best_offer[customer_id]
    return hits / len(probe)


def settled_at(outcomes: Sequence[float], shares: Sequence[float]) -> int | None:
    """Outcomes after which the share is >= the target at every later probe (None: never)."""
    settled: int | None = None
    for n, share in zip(outcomes, shares, strict=True):
        if share < TARGET_SHARE:
            settled = None
        elif settled is None:
            settled = int(n)
    return settled


async def simulate(
    url: str,
    scenario: Scenario,
    ruleset: CompiledRuleset,
    pool: list[tuple[str, dict[str, str]]],
    probe: list[tuple[str, dict[str, str]]],
    truth: Truth,
    *,
    seed: int,
    steps: int,
) -> dict[str, Any]:
    """One learning run from empty counts; returns its curves and totals."""
    store = ProfileStore.from_url(url, socket_timeout=30)
    connection = store.connection
    settings = ruleset.source.learning
    pick, respond, explore = (random.Random(f"{seed}:{part}") for part in ("c", "r", "x"))
    try:
        await connection.call("FLUSHALL")
        await store.put_profiles(pool, batch_size=1000)
        now = START
        learned = learned_from(await load_learning(connection), ruleset, now=now)
        regret = static_regret = shown_ev = oracle_ev = 0.0
        accepted = explored = 0
        shown: dict[str, int] = {o.id: 0 for o in scenario.offers}
        curve: dict[str, list[float]] = {
            "outcomes": [0],
            "share_first": [share_first(ruleset, learned, probe, truth, now)],
            "regret": [0.0],
            "static_regret": [0.0],
        }
        for step in range(1, steps + 1):
            customer_id, profile = pool[pick.randrange(len(pool))]
            loaded = await store.load_for_decision(
                customer_id, interaction=None, now=now, caps=ruleset.daily_caps
            )
            sample_seed = None
            if explore.random() < settings.exploration:
                sample_seed = explore.getrandbits(64)
                explored += 1
            decision_id = f"s{seed}-{scenario.name}-{step}"
            decision = decide(
                ruleset,
                state=loaded.state,
                context=CONTEXT,
                now=now,
                decision_id=decision_id,
                exhausted=loaded.exhausted,
                learned=learned,
                sample_seed=sample_seed,
            )
            offer_id = decision.offers[0].offer_id
            record = DecisionRecord(
                decision_id=decision_id,
                customer_id=customer_id,
                offer_ids=(offer_id,),
                interaction_id="",
                channel=CONTEXT.channel,
                ruleset_version=ruleset.version,
                arm="champion",
                at=now,
            )
            segment = profile["segment"]
            took = respond.random() < scenario.rate(offer_id, segment)
            for outcome in ("presented", "accepted" if took else "declined"):
                recorded = await record_outcome(
                    connection,
                    connection,
                    decision=record,
                    offer_id=offer_id,
                    outcome=outcome,
                    channel="",
                    reason="",
                    at=now + 5,
                    learning=settings,
                )
                if recorded.status != "ok":
                    raise RuntimeError(f"outcome {outcome} of {decision_id}: {recorded.status}")
            accepted += took
            shown[offer_id] += 1
            ev = truth.ev(offer_id, segment)
            shown_ev += ev
            oracle_ev += truth.best[customer_id]
            regret += truth.best[customer_id] - ev
            static_regret += truth.best[customer_id] - truth.static_ev[customer_id]
            now += STEP_S
            if step % REFRESH_EVERY == 0:
                learned = learned_from(await load_learning(connection), ruleset, now=now)
            if step % PROBE_EVERY == 0:
                curve["outcomes"].append(step)
                curve["share_first"].append(share_first(ruleset, learned, probe, truth, now))
                curve["regret"].append(round(regret, 2))
                curve["static_regret"].append(round(static_regret, 2))
        stored = await load_learning(connection)
        # Decay, as the script stored it and as learned_from reads it: evidence now
        # weighs less than the raw count of outcomes.
        evidence = sum(
            sum(decayed(counts, now=now, half_life_days=settings.half_life_days))
            for key, counts in stored.items()
            if "|" not in key
        )
        raw = await connection.call("HLEN", LEARNING)
    finally:
        await store.aclose()
    return {
        "seed": seed,
        "outcomes": steps,
        "outcomes_to_target": settled_at(curve["outcomes"], curve["share_first"]),
        "final_share_first": curve["share_first"][-1],
        "regret": round(regret, 1),
        "static_regret": round(static_regret, 1),
        "expected_value": {
            "learning": round(shown_ev, 1),
            "static": round(oracle_ev - static_regret, 1),
            "best": round(oracle_ev, 1),
        },
        "accepted": accepted,
        "explored_decisions": explored,
        "shown": shown,
        "learning_keys": raw,
        "evidence_at_end": round(evidence, 1),
        "posterior_means": {key: round(p.mean, 4) for key, p in sorted(learned.overall.items())},
        "curve": curve,
    }


def summary(values: Sequence[float | None]) -> dict[str, Any]:
    """Median and range over seeds; a run that never got there (None) leaves them open."""
    known = [v for v in values if v is not None]
    complete = len(known) == len(values)
    return {
        "median": statistics.median(known) if complete else None,
        "min": min(known) if known else None,
        "max": max(known) if complete else None,
        "reached": f"{len(known)}/{len(values)}",
    }


def run_scenario(
    url: str, scenario: Scenario, directory: Path, seeds: Sequence[int], steps: int
) -> dict[str, Any]:
    ruleset = write_ruleset(directory, scenario)
    pool = customers(POOL_SIZE, seed=7)
    probe = random.Random(8).sample(pool, PROBE_SIZE)
    truth = Truth(scenario, ruleset, pool)
    static_share = sum(truth.static_first[c] == truth.best_offer[c] for c, _ in probe) / len(probe)
    runs = [
        asyncio.run(simulate(url, scenario, ruleset, pool, probe, truth, seed=seed, steps=steps))
        for seed in seeds
    ]
    return {
        "scenario": scenario.name,
        "learning": {**LEARNING_SETTINGS, "by": scenario.by},
        "offers": [
            {
                "id": o.id,
                "value": o.value,
                "prior": o.prior,
                "true_rate": dict(o.true_rate),
                "when": o.when or "always",
            }
            for o in scenario.offers
        ],
        "best_offer_share": {
            offer.id: sum(truth.best_offer[c] == offer.id for c, _ in pool) / len(pool)
            for offer in scenario.offers
        },
        "static_share_first": static_share,
        "outcomes_to_target": summary([r["outcomes_to_target"] for r in runs]),
        "final_share_first": summary([r["final_share_first"] for r in runs]),
        "regret": summary([r["regret"] for r in runs]),
        "static_regret": summary([r["static_regret"] for r in runs]),
        "regret_vs_static": summary([r["regret"] / r["static_regret"] for r in runs]),
        "runs": runs,
    }


def _band(runs: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float], list[float]]:
    """Median, min and max over the runs of one curve."""
    columns = list(zip(*(r["curve"][key] for r in runs), strict=True))
    return (
        [statistics.median(c) for c in columns],
        [min(c) for c in columns],
        [max(c) for c in columns],
    )


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 8), sharex=True)
    colours = {"overall": "tab:blue", "by_segment": "tab:orange"}
    for scenario in results["scenarios"]:
        name, runs = scenario["scenario"], scenario["runs"]
        colour = colours.get(name, "tab:green")
        x = runs[0]["curve"]["outcomes"]
        for panel, key in ((top, "share_first"), (bottom, "regret")):
            median, low, high = _band(runs, key)
            panel.plot(x, median, color=colour, label=f"{name}: learning")
            panel.fill_between(x, low, high, color=colour, alpha=0.15, linewidth=0)
        median, _, _ = _band(runs, "static_regret")
        bottom.plot(x, median, color=colour, linestyle="--", label=f"{name}: static priors")
        top.axhline(
            scenario["static_share_first"],
            color=colour,
            linestyle="--",
            label=f"{name}: static priors",
        )
    top.axhline(TARGET_SHARE, color="grey", linestyle=":", linewidth=1)
    top.set_ylabel("share of probe customers whose\ntruly best offer is ranked first")
    top.set_ylim(-0.02, 1.02)
    top.legend(loc="center right", fontsize=8)
    top.set_title(
        f"Learning from outcomes: median and range over {len(results['seeds'])} seeds",
        fontsize=10,
    )
    bottom.set_ylabel("cumulative regret\n(expected value lost vs best offer)")
    bottom.set_xlabel("outcomes recorded (accepted or declined)")
    bottom.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cell(s: dict[str, Any], spec: str) -> str:
    if s["median"] is None:
        return f"never ({s['reached']} seeds)"
    return f"{s['median']:{spec}} [{s['min']:{spec}}-{s['max']:{spec}}]"


def report(results: dict[str, Any]) -> None:
    print(f"\n== learning: {len(results['seeds'])} seeds x {results['steps']:,} outcomes ==")
    print("median [min-max] over seeds; static = the engine without learning (rule-file priors)")
    scenarios = results["scenarios"]
    width = 28
    print(f"{'':30}" + "".join(f"{s['scenario']:>{width}}" for s in scenarios))
    rows = [
        ("outcomes to >=90% best-first", "outcomes_to_target", ",.0f"),
        ("best first at the end", "final_share_first", ".0%"),
        ("regret, learning", "regret", ",.0f"),
        ("regret, static priors", "static_regret", ",.0f"),
        ("regret learning / static", "regret_vs_static", ".2f"),
    ]
    for label, key, spec in rows:
        print(f"{label:30}" + "".join(f"{_cell(s[key], spec):>{width}}" for s in scenarios))
    statics = "".join(f"{s['static_share_first']:>{width}.0%}" for s in scenarios)
    print(f"{'best first, static priors':30}{statics}")
    print(f"({results['seconds']:.0f} s; wrote {results['json']} and {results['png']})")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=8000, help="decisions (outcomes) per run")
    parser.add_argument("--quick", action="store_true", help="2 seeds x 1500 steps")
    parser.add_argument("--scenarios", nargs="+", choices=[s.name for s in SCENARIOS], default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    seeds = list(range(2 if args.quick else args.seeds))
    steps = 1500 if args.quick else args.steps
    started = time.perf_counter()
    # tmpfs when there is one: the server fsyncs every write (appendfsync always).
    shm = Path("/dev/shm")
    with (
        tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as tmp,
        EmbeddedRedis(data_dir=Path(tmp) / "redis") as server,
    ):
        scenarios = []
        for scenario in SCENARIOS:
            if args.scenarios and scenario.name not in args.scenarios:
                continue
            directory = Path(tmp) / scenario.name
            directory.mkdir()
            scenarios.append(run_scenario(server.url, scenario, directory, seeds, steps))
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = args.out / "learning.json", args.out / "learning.png"
    results: dict[str, Any] = {
        "machine": machine(),
        "seeds": seeds,
        "steps": steps,
        "simulated": {
            "seconds_per_decision": STEP_S,
            "refresh_every_decisions": REFRESH_EVERY,
            "probe_every_decisions": PROBE_EVERY,
            "probe_customers": PROBE_SIZE,
            "customer_pool": POOL_SIZE,
            "days": steps * STEP_S / 86_400,
            "target_share": TARGET_SHARE,
        },
        "scenarios": scenarios,
        "seconds": round(time.perf_counter() - started, 1),
        "json": _shown(json_path),
        "png": _shown(png_path),
    }
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, png_path)
    report(results)


def _shown(path: Path) -> str:
    """The path relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    main()
