"""What-if before going live: run a population through decide() and compare two rulesets.

The simulation calls the same pure decision core as the server, so what it reports is
what the server would do for these customers and contexts at the given instant.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from itertools import chain

from decision_engine.authoring.diff import compare
from decision_engine.authoring.population import Population
from decision_engine.authoring.results import Diff, Run, RunSummary, Share, SimulationReport
from decision_engine.decide.engine import decide
from decision_engine.ruleset.compiled import CompiledRuleset

DECISION_ID = "simulation"
"""Every simulated decision shares one id: the core needs one, nobody reads it."""
PROGRESS_EVERY = 2048

ProgressCallback = Callable[[str, int], None]
"""Called with the run's label ("new" or "baseline") and the decisions made so far."""


def run(
    ruleset: CompiledRuleset,
    population: Population,
    *,
    now: float,
    label: str = "new",
    progress: ProgressCallback | None = None,
) -> Run:
    """decide() for every customer; only what the report needs is kept."""
    queues: list[str] = []
    rule_ids: list[str] = []
    offer_ids: list[tuple[str, ...]] = []
    add_queue, add_rule, add_offers = queues.append, rule_ids.append, offer_ids.append
    first_ev = all_ev = 0.0
    states, contexts = population.states, population.contexts
    started = time.perf_counter()
    for start in range(0, len(states), PROGRESS_EVERY):
        end = start + PROGRESS_EVERY
        for state, context in zip(states[start:end], contexts[start:end], strict=True):
            decision = decide(
                ruleset, state=state, context=context, now=now, decision_id=DECISION_ID
            )
            routing = decision.routing
            add_queue(routing.queue)
            add_rule(routing.rule_id)
            offers = decision.offers
            if offers:
                first_ev += offers[0].expected_value
                for offer in offers:
                    all_ev += offer.expected_value
                add_offers(tuple([o.offer_id for o in offers]))
            else:
                add_offers(())
        if progress is not None:
            progress(label, len(queues))
    seconds = time.perf_counter() - started
    return Run(tuple(queues), tuple(rule_ids), tuple(offer_ids), first_ev, all_ev, seconds)


def summarize(ruleset: CompiledRuleset, result: Run, rules_dir: str) -> RunSummary:
    """Counts and shares of one run."""
    total = len(result.queues)
    queue_counts = Counter(result.queues)
    rule_counts = Counter(result.rule_ids)
    offer_counts = Counter(chain.from_iterable(result.offer_ids))
    route_ids = [r.id for r in ruleset.routes] + ["default"]
    offers = sorted(ruleset.offers, key=lambda o: -offer_counts[o.spec.id])  # stable: file order
    return RunSummary(
        rules_dir=rules_dir,
        version=ruleset.version,
        label=ruleset.source.label,
        decisions=total,
        seconds=result.seconds,
        queues=tuple(_share(q, n, total) for q, n in _by_count(queue_counts)),
        routing_rules=tuple(_share(r, rule_counts[r], total) for r in route_ids),
        offers=tuple(
            _share(o.spec.id, offer_counts[o.spec.id], total, o.spec.title) for o in offers
        ),
        no_offer=sum(1 for ids in result.offer_ids if not ids),
        first_offer_ev=result.first_offer_ev,
        all_offers_ev=result.all_offers_ev,
    )


def _share(key: str, count: int, total: int, title: str = "") -> Share:
    return Share(key, count, count / total if total else 0.0, title)


def _by_count(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def simulate(
    ruleset: CompiledRuleset,
    population: Population,
    *,
    now: float,
    rules_dir: str = "",
    baseline: CompiledRuleset | None = None,
    baseline_dir: str = "",
    progress: ProgressCallback | None = None,
) -> SimulationReport:
    """Run the population through the new ruleset (and the baseline) and compare."""
    new_run = run(ruleset, population, now=now, label="new", progress=progress)
    new = summarize(ruleset, new_run, rules_dir)
    old: RunSummary | None = None
    diff: Diff | None = None
    if baseline is not None:
        old_run = run(baseline, population, now=now, label="baseline", progress=progress)
        old = summarize(baseline, old_run, baseline_dir)
        diff = compare(
            old_run, new_run, population.customer_ids, old_rules=baseline, new_rules=ruleset
        )
    return SimulationReport(
        now=now,
        population=population.source,
        customers=len(population),
        bad_lines=population.bad_lines,
        warnings=population.warnings,
        new=new,
        baseline=old,
        diff=diff,
    )
