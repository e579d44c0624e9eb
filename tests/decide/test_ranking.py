"""The pruned ranking in decide() returns exactly what scoring every eligible offer would."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from decision_engine.decide.engine import decide
from decision_engine.decide.facts import build_facts
from decision_engine.decide.learning import Draws, Learned, Posterior, learned_from
from decision_engine.decide.values import Context, CustomerState
from decision_engine.ruleset.closures import compile_all
from decision_engine.ruleset.compiled import CompiledRuleset, load_compiled
from decision_engine.ruleset.spec import OfferSpec
from decision_engine.vocabulary import CHANNELS

NOW = 1_750_000_000.0
INTENTS = ["cancel", "billing_dispute", "lost_card", "complaint", "upgrade"]
CATEGORIES = ["retention", "service", "upsell", "cross_sell", "renewal"]
VALUES = [
    "240", "50", "0", "-30", "clv * 0.1", "0.25 * clv", "clv / 20", "clv", "cost_to_serve * 0.3",
    "max(clv * churn_risk * 0.5, 40)", "days_to_contract_end * 2", "tenure_months - 100",
]  # fmt: skip

SCHEMA = """
schema:
  profile:
    clv: {type: number, min: 0}
    churn_risk: {type: number, min: 0, max: 1}
    segment: {type: enum, values: [gold, silver, bronze]}
    tenure_months: {type: integer, min: 0}
    cost_to_serve: {type: number, min: 0}
    contract_end: {type: date}
  intents: [cancel, billing_dispute, lost_card, complaint, upgrade]
routing:
  default: {queue: general, priority: 5}
"""


def random_ruleset(rng: random.Random, directory: Path, offers: int) -> CompiledRuleset:
    lines = [SCHEMA, "offers:"]
    for n in range(offers):
        conditions = []
        if rng.random() < 0.6:
            conditions.append(f'intent in ["{rng.choice(INTENTS)}", "{rng.choice(INTENTS)}"]')
        if rng.random() < 0.4:
            conditions.append(f"clv >= {rng.choice([0, 500, 2000, 8000])}")
        if rng.random() < 0.3:
            conditions.append(f'segment != "{rng.choice(["gold", "silver", "bronze"])}"')
        if rng.random() < 0.2:
            conditions.append("churn_risk > 0.3 or tenure_months < 12")
        category = rng.choice(CATEGORIES)
        # Every category has an offer: a policy may name only those (offers >= categories).
        category = CATEGORIES[n] if n < len(CATEGORIES) else category
        lines += [
            f"  - id: o{n:03d}",
            f"    category: {category}",
            f"    value: {rng.choice(VALUES)}",
            f"    propensity: {rng.choice([0.05, 0.1, 0.2, 0.35, 0.5])}",
            f"    lever: {rng.choice([1, 1, 1, 0.5, 2])}",
            "    script: x",
        ]
        if conditions:
            lines.append("    when: [" + ", ".join(f"'{c}'" for c in conditions) + "]")
        if rng.random() < 0.3:
            channel = rng.choice(CHANNELS)
            factor = rng.choice([0.5, 1.5, 3])
            lines.append(f"    weights: [{{when: 'channel == \"{channel}\"', factor: {factor}}}]")
        if rng.random() < 0.2:
            lines.append(f"    channels: [{', '.join(rng.sample(CHANNELS, 3))}]")
    lines += ["arbitration:", "  max_offers: 3", "  learning: {by: segment}", "  policies:"]
    for n in range(4):
        first, suppress = rng.sample(CATEGORIES, 2)
        lines += [
            f"    - id: p{n}",
            f'      when: intent == "{rng.choice(INTENTS)}" or clv > {rng.choice([1000, 20000])}',
            f"      first: [{first}]",
        ]
        if rng.random() < 0.5:
            lines.append(f"      suppress: [{suppress}]")
    (directory / "rules.yaml").write_text("\n".join(lines) + "\n")
    return load_compiled(directory)


def brute_force(
    ruleset: CompiledRuleset,
    facts: dict[str, Any],
    limit: int,
    learned: Learned | None = None,
    propensity_of: Callable[[OfferSpec], float] | None = None,
) -> list[str]:
    """Score every offer whose conditions hold, then sort: the definition of the ranking."""
    first: dict[str, int] = {}
    suppressed: set[str] = set()
    for tier, policy in enumerate(ruleset.policies):
        if policy.test(facts) is True:
            for category in policy.first:
                first.setdefault(category, tier)
            suppressed |= policy.suppress
    ranked = []
    for offer in ruleset.offers:
        spec = offer.spec
        condition = compile_all([c.node for c in spec.when])
        if condition is not None and condition(facts) is not True:
            continue
        if facts["channel"] not in spec.channels or spec.category in suppressed:
            continue
        value = offer.value(facts)
        if value is None:
            continue
        propensity = spec.propensity
        if learned is not None:
            posterior = learned.posterior(spec.id, facts.get(learned.by) if learned.by else None)
            propensity = propensity if posterior is None else posterior.mean
        if propensity_of is not None:
            propensity = propensity_of(spec)
        score = propensity * spec.lever * value
        for test, factor, _ in offer.weights:
            if test(facts) is True:
                score *= factor
        ranked.append((first.get(spec.category, len(ruleset.policies)), -score, spec.id))
    return [offer_id for _, _, offer_id in sorted(ranked)[:limit]]


def random_customer(rng: random.Random) -> tuple[CustomerState | None, Context]:
    profile = {
        "clv": str(rng.choice([0, 90, 1500, 6000, 30000, rng.uniform(0, 50000)])),
        "churn_risk": str(round(rng.random(), 2)),
        "segment": rng.choice(["gold", "silver", "bronze"]),
        "tenure_months": str(rng.randint(0, 200)),
        "cost_to_serve": str(rng.randint(0, 800)),
        "contract_end": rng.choice(["2025-01-01", "2025-08-01", "2026-06-01"]),
    }
    for field in rng.sample(sorted(profile), rng.randint(0, 2)):
        del profile[field]  # absent fields make some values unknown
    state = None if rng.random() < 0.1 else CustomerState(profile)
    return state, Context(channel=rng.choice(CHANNELS), intent=rng.choice(INTENTS))


@pytest.mark.parametrize("seed", range(6))
def test_pruned_ranking_equals_scoring_every_eligible_offer(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    ruleset = random_ruleset(rng, tmp_path, offers=rng.choice([5, 40, 300]))
    for _ in range(150):
        state, context = random_customer(rng)
        limit = rng.choice([1, 3, 5])
        decision = decide(
            ruleset, state=state, context=context, now=NOW, decision_id="d", max_offers=limit
        )
        facts = build_facts(ruleset, state, context, now=NOW)
        assert [o.offer_id for o in decision.offers] == brute_force(ruleset, facts, limit)


def stored_counts(rng: random.Random, ruleset: CompiledRuleset, share: float) -> dict[str, str]:
    """Learned rates far from the rule files' priors, both ways, some per segment."""
    stored = {}
    for offer in rng.sample(ruleset.offers, int(len(ruleset.offers) * share)):
        stored[offer.spec.id] = f"{rng.uniform(0, 200):.3f},{rng.uniform(0, 200):.3f},{NOW:.3f}"
        if rng.random() < 0.5:
            segment = rng.choice(["gold", "silver", "bronze"])
            stored[f"{offer.spec.id}|{segment}"] = f"{rng.uniform(0, 50):.3f},1,{NOW:.3f}"
    return stored


@pytest.mark.parametrize("seed", range(4))
def test_pruned_ranking_with_learned_propensities(tmp_path: Path, seed: int) -> None:
    rng = random.Random(100 + seed)
    ruleset = random_ruleset(rng, tmp_path, offers=rng.choice([40, 300]))
    learned = learned_from(stored_counts(rng, ruleset, 0.5), ruleset, now=NOW)
    # Some learned rate is above its prior: the rule files' bounds alone would prune wrongly.
    assert any(learned.overall[o.spec.id].mean > o.spec.propensity for o in ruleset.offers)
    for _ in range(150):
        state, context = random_customer(rng)
        decision = decide(
            ruleset, state=state, context=context, now=NOW, decision_id="d", learned=learned
        )
        facts = build_facts(ruleset, state, context, now=NOW)
        assert [o.offer_id for o in decision.offers] == brute_force(ruleset, facts, 3, learned)


class Recorded(Posterior):
    """A posterior that notes each draw made from it. Not a dataclass of its own: the
    compiled core's Posterior (build_core.py) takes subclasses, not their dataclass
    fields."""

    def __init__(self, alpha: float, beta: float, offer_id: str, draws: dict[str, float]):
        super().__init__(alpha, beta)
        object.__setattr__(self, "offer_id", offer_id)
        object.__setattr__(self, "draws", draws)

    def sample(self, rng: Draws) -> float:
        value = Posterior.sample(self, rng)
        self.draws[self.offer_id] = value
        return value


@pytest.mark.parametrize("seed", range(4))
def test_exploring_prunes_only_offers_whose_best_draw_could_not_win(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(200 + seed)
    ruleset = random_ruleset(rng, tmp_path, offers=rng.choice([40, 300]))
    draws: dict[str, float] = {}
    overall: dict[str, Posterior] = {
        o.spec.id: Recorded(rng.uniform(0.5, 60), rng.uniform(0.5, 60), o.spec.id, draws)
        for o in ruleset.offers
    }
    learned = Learned(None, overall, {})
    pruned = 0
    for n in range(150):
        state, context = random_customer(rng)
        draws.clear()
        decision = decide(
            ruleset, state=state, context=context, now=NOW, decision_id="d",
            learned=learned, sample_seed=n,
        )  # fmt: skip
        facts = build_facts(ruleset, state, context, now=NOW)

        # Offers not drawn count at the most a draw can be: they still must not win.
        def best_case(spec: OfferSpec) -> float:
            return draws.get(spec.id, overall[spec.id].ceiling)

        assert [o.offer_id for o in decision.offers] == brute_force(
            ruleset, facts, 3, propensity_of=best_case
        )
        assert all(o.propensity == draws[o.offer_id] for o in decision.offers)
        pruned += len(ruleset.offers) - len(draws)
    assert pruned > 0  # exploring does prune


def test_a_draw_never_exceeds_its_ceiling_and_rarely_reaches_it() -> None:
    rng = Draws(5)
    skewed, settled = Posterior(1.2, 30), Posterior(40, 160)
    for posterior, at_most in ((skewed, 200), (settled, 5)):
        draws = [posterior.sample(rng) for _ in range(20_000)]
        assert max(draws) <= posterior.ceiling < 1
        assert posterior.mean < posterior.ceiling
        assert sum(d == posterior.ceiling for d in draws) <= at_most


@pytest.mark.parametrize("seed", range(6))
def test_updating_learned_posteriors_gives_what_rebuilding_them_gives(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(300 + seed)
    ruleset = random_ruleset(rng, tmp_path, offers=rng.choice([40, 300]))
    before = stored_counts(rng, ruleset, 0.5)
    learned = learned_from(before, ruleset, now=NOW)
    segments: list[object] = [None, "gold", "silver", "bronze", "tin"]
    for segment in segments:
        for exploring in (False, True):
            learned.plan(ruleset, segment, exploring=exploring)
    # A second's outcomes: a few keys change, appear or go; one becomes unreadable.
    after = dict(before)
    for key in rng.sample(sorted(before), min(8, len(before))):
        del after[key]
    after.update(stored_counts(rng, ruleset, 0.05))
    after[rng.choice(sorted(after))] = "garbage"
    after["retired-offer|gold"] = f"5,1,{NOW}"
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed
    updated = learned.updated(after, changed, ruleset, now=NOW)
    rebuilt = learned_from(after, ruleset, now=NOW)
    assert updated.overall == rebuilt.overall
    assert updated.by_segment == rebuilt.by_segment
    assert sorted(updated.plan_keys(), key=repr) == sorted(learned.plan_keys(), key=repr)
    for segment in segments:
        for exploring in (False, True):
            kept = updated.plan(ruleset, segment, exploring=exploring)
            assert kept == rebuilt.plan(ruleset, segment, exploring=exploring)
    # ...and the one it was made from is unchanged.
    assert learned.overall == learned_from(before, ruleset, now=NOW).overall
