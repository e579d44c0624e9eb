"""Learning from outcomes: decayed counts, Beta posteriors, Thompson draws, and the
outcome script that keeps the counts in a real Redis."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from pathlib import Path

import pytest

from decision_engine.decide.engine import decide
from decision_engine.decide.learning import (
    Draws,
    Learned,
    Posterior,
    beta_draw,
    decayed,
    learned_from,
)
from decision_engine.decide.values import Context, CustomerState, Decision
from decision_engine.ruleset.compiled import CompiledRuleset, load_compiled
from decision_engine.store.keys import LEARNING
from decision_engine.store.outcomes import (
    DecisionRecord,
    load_learning,
    record_outcome,
)
from decision_engine.store.profiles import ProfileStore

NOW = 1_750_000_000.0
DAY = 86_400.0

RULES = """
schema:
  profile:
    segment: {type: enum, values: [gold, silver]}
  intents: [general_inquiry]
routing:
  default: {queue: general, priority: 5}
offers:
  - {id: favourite, category: x, value: 100, propensity: 0.5, script: x}
  - {id: middle, category: x, value: 100, propensity: 0.3, script: x}
  - {id: sleeper, category: x, value: 100, propensity: 0.1, script: x}
arbitration:
  max_offers: 3
  learning: {prior_strength: 20, half_life_days: 30, by: segment, exploration: 0.1}
"""


def write_rules(directory: Path, text: str) -> CompiledRuleset:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "rules.yaml").write_text(text)
    return load_compiled(directory)


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> CompiledRuleset:
    return write_rules(tmp_path_factory.mktemp("learning"), RULES)


def counts(a: float, b: float, at: float = NOW) -> str:
    return f"{a},{b},{at:.3f}"


def run(
    ruleset: CompiledRuleset,
    learned: Learned | None,
    *,
    segment: str | None = None,
    sample_seed: int | None = None,
) -> Decision:
    profile = {"segment": segment} if segment else {}
    return decide(
        ruleset,
        state=CustomerState(profile),
        context=Context(channel="voice", intent="general_inquiry"),
        now=NOW,
        decision_id="d",
        learned=learned,
        sample_seed=sample_seed,
    )


def assert_prior(learned: Learned, offer_id: str, segment: str | None, p0: float) -> None:
    """Without outcomes an offer's posterior is its prior: Beta(p0·S, (1−p0)·S), S = 20."""
    found = learned.posterior(offer_id, segment)
    assert found is not None
    assert (found.alpha, found.beta) == pytest.approx((p0 * 20, (1 - p0) * 20))


def ids(decision: Decision) -> list[str]:
    return [o.offer_id for o in decision.offers]


# --- decay -------------------------------------------------------------------------


def test_a_stored_count_halves_after_one_half_life() -> None:
    stored = counts(10, 4)
    assert decayed(stored, now=NOW, half_life_days=30) == (10, 4)
    assert decayed(stored, now=NOW + 30 * DAY, half_life_days=30) == pytest.approx((5, 2))
    assert decayed(stored, now=NOW + 60 * DAY, half_life_days=30) == pytest.approx((2.5, 1))
    assert decayed(stored, now=NOW + 15 * DAY, half_life_days=30) == pytest.approx(
        (10 / 2**0.5, 4 / 2**0.5)
    )


def test_counts_never_grow_and_a_zero_half_life_never_decays() -> None:
    assert decayed(counts(10, 4), now=NOW - DAY, half_life_days=30) == (10, 4)
    assert decayed(counts(10, 4), now=NOW + 3650 * DAY, half_life_days=0) == (10, 4)


# --- posteriors --------------------------------------------------------------------


def test_decayed_counts_are_added_to_the_prior(rules: CompiledRuleset) -> None:
    # favourite: p0 = 0.5 worth 20 outcomes -> Beta(10, 10); 10 accepted and 30 not,
    # one half-life ago, count as 5 and 15.
    learned = learned_from({"favourite": counts(10, 30, NOW - 30 * DAY)}, rules, now=NOW)
    posterior = learned.overall["favourite"]
    assert (posterior.alpha, posterior.beta) == pytest.approx((15, 25))
    assert posterior.mean == pytest.approx(15 / 40)
    assert learned.by == "segment"
    assert_prior(learned, "middle", None, 0.3)


def test_unknown_offers_and_unreadable_counts_are_ignored(rules: CompiledRuleset) -> None:
    learned = learned_from(
        {
            "retired-offer": counts(50, 0),
            "retired-offer|gold": counts(50, 0),
            "middle": "garbage",
            "favourite": "1,2",
            "sleeper": counts(0, 2),
        },
        rules,
        now=NOW,
    )
    assert "retired-offer" not in learned.overall
    assert learned.overall["sleeper"] == Posterior(2, 20)
    assert_prior(learned, "middle", None, 0.3)
    assert_prior(learned, "favourite", "gold", 0.5)
    assert learned.by_segment == {}


def test_the_segment_posterior_is_used_when_present_else_the_overall_one(
    rules: CompiledRuleset,
) -> None:
    learned = learned_from(
        {"sleeper": counts(0, 40), "sleeper|gold": counts(30, 0), "middle|silver": counts(9, 1)},
        rules,
        now=NOW,
    )
    # sleeper: p0 = 0.1 -> Beta(2, 18).
    assert learned.posterior("sleeper", "gold") == Posterior(32, 18)
    assert learned.posterior("sleeper", "silver") == Posterior(2, 58)
    assert learned.posterior("sleeper", None) == Posterior(2, 58)
    assert learned.posterior("middle", "silver") == Posterior(15, 15)
    assert_prior(learned, "middle", "gold", 0.3)
    assert_prior(learned, "favourite", "gold", 0.5)


# --- Thompson sampling -------------------------------------------------------------


def test_a_posterior_sample_is_deterministic_for_a_seed() -> None:
    posterior = Posterior(3, 7)
    first = [posterior.sample(Draws(42)) for _ in range(3)]
    assert len(set(first)) == 1
    draws = {posterior.sample(Draws(seed)) for seed in range(20)}
    assert len(draws) == 20
    assert all(0 < d < 1 for d in draws)


def test_draws_are_xoshiro128_starstar_seeded_by_splitmix64() -> None:
    # The reference C code (prng.di.unimi.it), its state set from two splitmix64 outputs
    # of 12345678901234567 as Draws does: its first six outputs.
    draws = Draws(12345678901234567)
    assert [draws._next() for _ in range(6)] == [
        3623721579, 29973294, 1629501415, 2993609698, 1349583852, 2661377292,
    ]  # fmt: skip


def test_uniform_draws_fill_the_unit_interval_evenly() -> None:
    draws = Draws(7)
    values = [draws.random() for _ in range(40_000)]
    assert all(0.0 <= v < 1.0 for v in values)
    deciles = [0] * 10
    for v in values:
        deciles[int(v * 10)] += 1
    assert all(3_700 < n < 4_300 for n in deciles), deciles


@pytest.mark.parametrize("alpha,beta", [(0.4, 0.7), (1.0, 3.0), (2.5, 40.0), (300.0, 900.0)])
def test_beta_draws_have_the_beta_distributions_moments(alpha: float, beta: float) -> None:
    draws = Draws(11)
    values = [beta_draw(draws, alpha, beta) for _ in range(40_000)]
    n = len(values)
    mean = sum(values) / n
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    want_mean = alpha / (alpha + beta)
    want_variance = alpha * beta / ((alpha + beta) ** 2 * (alpha + beta + 1))
    assert abs(mean - want_mean) < 5 * math.sqrt(want_variance / n)
    assert abs(variance / want_variance - 1) < 0.05


def test_thompson_decisions_repeat_for_a_seed_and_vary_across_seeds(
    rules: CompiledRuleset,
) -> None:
    # favourite and sleeper believed alike but uncertain: the draws decide their order.
    overall = {"favourite": Posterior(3, 3), "middle": Posterior(3, 17), "sleeper": Posterior(3, 3)}
    learned = Learned(None, overall, {})
    again = [run(rules, learned, sample_seed=7) for _ in range(3)]
    assert len({tuple(ids(d)) for d in again}) == 1
    assert len({tuple(o.propensity for o in d.offers) for d in again}) == 1
    firsts = {ids(run(rules, learned, sample_seed=seed))[0] for seed in range(40)}
    assert {"favourite", "sleeper"} <= firsts
    # Ranked by the means instead, favourite (listed first) wins every tie.
    by_mean = run(rules, learned)
    assert [o.propensity for o in by_mean.offers] == [0.5, 0.5, 0.15]
    drawn = run(rules, learned, sample_seed=7)
    assert {o.propensity for o in drawn.offers}.isdisjoint({0.5, 0.15})


# --- decide() with learned propensities ---------------------------------------------


def test_learned_propensities_overturn_the_priors(rules: CompiledRuleset) -> None:
    assert ids(run(rules, None)) == ["favourite", "middle", "sleeper"]
    learned = learned_from({"sleeper": counts(180, 20), "favourite": counts(5, 95)}, rules, now=NOW)
    decision = run(rules, learned)
    assert ids(decision) == ["sleeper", "middle", "favourite"]
    assert decision.offers[0].propensity == pytest.approx(182 / 220)
    assert decision.offers[1].propensity == 0.3  # no outcomes yet: the prior
    assert decision.offers[2].propensity == pytest.approx(15 / 120)


def test_a_segment_learns_on_its_own(rules: CompiledRuleset) -> None:
    learned = learned_from({"sleeper|gold": counts(180, 20)}, rules, now=NOW)
    assert ids(run(rules, learned, segment="gold"))[0] == "sleeper"
    assert ids(run(rules, learned, segment="silver"))[0] == "favourite"
    assert ids(run(rules, learned))[0] == "favourite"


# --- exploration from the prior: an underrated offer can be found -------------------


def test_thompson_sampling_explores_offers_never_shown(rules: CompiledRuleset) -> None:
    # favourite and middle are known well (means 0.17 and 0.20); sleeper (prior 0.1,
    # Beta(2, 18)) was never shown, so its rate is the most uncertain: a draw beats 0.2
    # now and then (P(Beta(2, 18) > 0.2) is about 0.08), so it is shown and can be learned.
    learned = learned_from(
        {"favourite": counts(150, 750), "middle": counts(176, 706)}, rules, now=NOW
    )
    firsts = [ids(run(rules, learned, sample_seed=seed))[0] for seed in range(200)]
    assert 3 <= firsts.count("sleeper") <= 40
    # By the means it is never first.
    assert ids(run(rules, learned))[0] == "middle"


def test_thompson_sampling_survives_propensities_of_zero_and_one(tmp_path: Path) -> None:
    text = RULES.replace("propensity: 0.5", "propensity: 1").replace(
        "propensity: 0.1", "propensity: 0"
    )
    ruleset = write_rules(tmp_path, text)
    learned = learned_from({"favourite": counts(5, 0), "sleeper": counts(0, 5)}, ruleset, now=NOW)
    for seed in range(5):
        assert len(run(ruleset, learned, sample_seed=seed).offers) == 3


# --- the outcome script, against a real Redis ----------------------------------------


async def _record(
    store: ProfileStore,
    rules: CompiledRuleset,
    outcomes: list[tuple[str, str, str, float]],
    *,
    prefix: str,
    learn: bool = True,
) -> None:
    """Store a decision per (customer, offer, outcome, at) and record PRESENTED, then it."""
    connection = store.connection
    for n, (customer, offer, outcome, at) in enumerate(outcomes):
        decision_id = f"{prefix}-{n}"
        decision = DecisionRecord(
            decision_id, customer, (offer,), "", "voice", rules.version, "", at
        )
        for name in ("presented", outcome):
            recorded = await record_outcome(
                connection,
                connection,
                decision=decision,
                offer_id=offer,
                outcome=name,
                channel="",
                reason="",
                at=at,
                learning=rules.source.learning if learn else None,
            )
            assert recorded.status == "ok"


def _mean(learned: Learned, offer_id: str, segment: str | None) -> float:
    posterior = learned.posterior(offer_id, segment)
    assert posterior is not None
    return posterior.mean


def _parsed(stored: Mapping[str, str]) -> dict[str, tuple[float, float, float]]:
    out = {}
    for key, text in stored.items():
        a, b, at = text.split(",")
        out[key] = (float(a), float(b), float(at))
    return out


def test_recorded_outcomes_update_the_counts_and_the_posteriors(
    redis_url: str, rules: CompiledRuleset
) -> None:
    async def scenario() -> tuple[dict[str, str], dict[str, str], str]:
        store = ProfileStore.from_url(redis_url)
        try:
            await store.put_profiles([("c-gold", {"segment": "gold"}), ("c-plain", {})])
            await _record(
                store,
                rules,
                [
                    ("c-gold", "sleeper", "accepted", NOW),
                    ("c-gold", "sleeper", "accepted", NOW),
                    ("c-gold", "sleeper", "declined", NOW),
                    ("c-plain", "sleeper", "accepted", NOW),
                    ("c-plain", "sleeper", "no_response", NOW),
                    ("c-gold", "favourite", "declined", NOW),
                ],
                prefix="d",
            )
            first = await load_learning(store.connection)
            # The same outcome again is a duplicate and counts once.
            duplicate = await record_outcome(
                store.connection,
                store.connection,
                decision=DecisionRecord(
                    "d-0", "c-gold", ("sleeper",), "", "voice", rules.version, "", NOW
                ),
                offer_id="sleeper",
                outcome="accepted",
                channel="",
                reason="",
                at=NOW,
                learning=rules.source.learning,
            )
            # One half-life later: the script decays the stored counts before adding.
            await _record(
                store, rules, [("c-gold", "sleeper", "accepted", NOW + 30 * DAY)], prefix="e"
            )
            later = await load_learning(store.connection)
            return first, later, duplicate.status
        finally:
            await store.aclose()

    first, later, duplicate = asyncio.run(scenario())
    assert duplicate == "duplicate"
    # Accepted is a success; declined and no_response are failures; presented is neither.
    # The customer without a segment counts overall only.
    assert _parsed(first) == {
        "sleeper": (3, 2, NOW),
        "sleeper|gold": (2, 1, NOW),
        "favourite": (0, 1, NOW),
        "favourite|gold": (0, 1, NOW),
    }
    learned = learned_from(first, rules, now=NOW)
    assert learned.overall["sleeper"].mean == pytest.approx(5 / 25)  # Beta(2 + 3, 18 + 2)
    assert _mean(learned, "sleeper", "gold") == pytest.approx(4 / 23)  # Beta(2 + 2, 18 + 1)
    assert _mean(learned, "sleeper", "silver") == pytest.approx(5 / 25)  # no counts: overall
    assert learned.overall["favourite"].mean == pytest.approx(10 / 21)

    later_at = NOW + 30 * DAY
    assert _parsed(later)["sleeper"] == pytest.approx((3 / 2 + 1, 2 / 2, later_at))
    assert _parsed(later)["sleeper|gold"] == pytest.approx((2 / 2 + 1, 1 / 2, later_at))
    # What the script stored and what learned_from decays agree.
    learned = learned_from(later, rules, now=later_at)
    assert learned.overall["sleeper"] == Posterior(2 + 2.5, 18 + 1)
    assert learned.overall["favourite"] == Posterior(10 + 0, 10 + 0.5)


def test_without_learning_the_script_keeps_no_counts(
    redis_url: str, rules: CompiledRuleset
) -> None:
    async def scenario() -> tuple[dict[str, str], int]:
        store = ProfileStore.from_url(redis_url)
        try:
            await store.put_profiles([("c-gold", {"segment": "gold"})])
            await _record(
                store, rules, [("c-gold", "sleeper", "accepted", NOW)], prefix="d", learn=False
            )
            exists: int = await store.connection.call("EXISTS", LEARNING)
            return await load_learning(store.connection), exists
        finally:
            await store.aclose()

    assert asyncio.run(scenario()) == ({}, 0)


def test_a_late_outcome_weighs_less_and_does_not_move_the_counts_back_in_time(
    redis_url: str, rules: CompiledRuleset
) -> None:
    async def scenario() -> dict[str, str]:
        store = ProfileStore.from_url(redis_url)
        try:
            await store.put_profiles([("c-plain", {})])
            await _record(store, rules, [("c-plain", "sleeper", "accepted", NOW)], prefix="f")
            # Reported late: it happened one half-life (30 days) before the first one.
            late = [("c-plain", "sleeper", "declined", NOW - 30 * DAY)]
            await _record(store, rules, late, prefix="g")
            return await load_learning(store.connection)
        finally:
            await store.aclose()

    assert _parsed(asyncio.run(scenario()))["sleeper"] == pytest.approx((1, 0.5, NOW))
