"""What outcomes taught: Beta posteriors of acceptance per offer (and per segment). Pure.

Each offer starts from its rule file's propensity p0, worth `prior_strength`
outcomes: Beta(p0·S, (1−p0)·S). Accepted outcomes add to alpha, declined and
unanswered ones to beta; evidence halves every `half_life_days`, so the estimate
follows change. The store keeps the decayed counts; this module turns them into
posteriors for a moment `now`.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from mypy_extensions import mypyc_attr

from decision_engine.ruleset.compiled import CompiledOffer, CompiledRuleset
from decision_engine.ruleset.spec import Learning

_DAY = 86_400.0
TRUNCATE_SD = 4.0
"""Thompson draws above the posterior mean + this many standard deviations are taken
as that much, so the ranking has a bound per offer and can stop early when exploring
too. A draw gets there about once in 30,000 for a belief of many outcomes, and once in
200 for one of very few successes (Beta(1.2, 30)), which then draws high anyway."""


# Tests subclass it to see each draw; compiled (build_core.py), a class refuses
# subclasses written in Python unless told.
@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True, slots=True)
class Posterior:
    """Beta(alpha, beta) belief about an offer's acceptance rate."""

    alpha: float
    beta: float
    # Computed once: a decision reads them for every offer it scores.
    mean: float = field(init=False, compare=False, repr=False)
    ceiling: float = field(init=False, compare=False, repr=False)
    """The largest value `sample` gives: the mean + TRUNCATE_SD standard deviations."""

    def __post_init__(self) -> None:
        a, b = self.alpha, self.beta
        mean = a / (a + b)
        sd = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "ceiling", min(mean + TRUNCATE_SD * sd, 1.0))

    def sample(self, rng: random.Random) -> float:
        return min(rng.betavariate(self.alpha, self.beta), self.ceiling)


@dataclass(frozen=True, slots=True)
class Plan:
    """Score bounds per unit of base with one segment's learned propensities."""

    bounds: tuple[float, ...]
    """By offer bit."""
    order: tuple[tuple[tuple[int, float], ...], ...]
    """Per value group: (offer bit, bound), best bound first."""


@dataclass(frozen=True, slots=True)
class Learned:
    """Posteriors for one ruleset at one moment."""

    by: str | None
    """The profile field estimates are split by (e.g. segment), if any."""
    overall: Mapping[str, Posterior]
    by_segment: Mapping[tuple[str, str], Posterior]
    _plans: dict[tuple[object, bool], Plan] = field(default_factory=dict, compare=False, repr=False)

    def posterior(self, offer_id: str, segment: object) -> Posterior | None:
        if segment is not None:
            found = self.by_segment.get((offer_id, str(segment)))
            if found is not None:
                return found
        return self.overall.get(offer_id)

    def plan(self, ruleset: CompiledRuleset, segment: object, *, exploring: bool) -> Plan:
        """Each value group's offers in descending order of their score bound per unit of
        base with this segment's propensities (the means, or the ceilings of draws).

        The ranking walks a group in this order and stops at the first bound that
        cannot beat the offers kept: learned propensities reorder offers, so the rule
        files' order would give no early stop. Made once per segment, then kept.
        """
        key = (segment, exploring)
        found = self._plans.get(key)
        if found is None:
            found = self._plans[key] = self._plan(ruleset, segment, exploring)
        return found

    def _plan(self, ruleset: CompiledRuleset, segment: object, exploring: bool) -> Plan:
        bounds = [self._bound(offer, segment, exploring) for offer in ruleset.offers]
        order = []
        for group in ruleset.offer_groups:
            bits = range(group.start, group.start + group.mask.bit_count())
            order.append(tuple(sorted(((i, bounds[i]) for i in bits), key=_best_first)))
        return Plan(tuple(bounds), tuple(order))

    def _bound(self, offer: CompiledOffer, segment: object, exploring: bool) -> float:
        posterior = self.posterior(offer.spec.id, segment)
        p = offer.spec.propensity
        if posterior is not None:
            p = posterior.ceiling if exploring else posterior.mean
        return p * offer.reach

    def plan_keys(self) -> list[tuple[object, bool]]:
        """The (segment, exploring) plans made so far: worth making again after a rebuild."""
        return list(self._plans)

    def updated(
        self,
        stored: Mapping[str, str],
        changed: Iterable[str],
        ruleset: CompiledRuleset,
        *,
        now: float,
    ) -> Learned:
        """These posteriors with the `changed` keys of `stored` read again (a key missing
        from `stored` was deleted), and the plans made so far brought up to date.

        The same as `learned_from(stored, ...)` at the moment these were made, for a
        fraction of the cost: a second's outcomes touch a few offers of thousands
        (10,000 offers in 5 segments: ~360 ms to rebuild the posteriors and ~17 ms per
        plan). Unchanged keys keep the decay they had; rebuild now and then for that.
        """
        settings = ruleset.source.learning
        overall, by_segment = dict(self.overall), dict(self.by_segment)
        touched: dict[str, set[int]] = {}
        for key in changed:
            offer_id, _, segment = key.partition("|")
            bit = ruleset.offer_bits.get(offer_id)
            if bit is None:
                continue  # an offer that is no longer in the rules
            prior = ruleset.offers[bit].spec.propensity
            found = _posterior(stored.get(key), prior, settings, now)
            if not segment:
                overall[offer_id] = found or _prior(prior, settings.prior_strength)
            elif found is None:
                by_segment.pop((offer_id, segment), None)
            else:
                by_segment[(offer_id, segment)] = found
            touched.setdefault(segment, set()).add(bit)
        learned = Learned(self.by, overall, by_segment)
        everywhere = touched.get("", set())
        starts = [group.start for group in ruleset.offer_groups]
        for (seen, exploring), plan in self._plans.items():
            bits = everywhere if seen is None else everywhere | touched.get(str(seen), set())
            learned._plans[(seen, exploring)] = learned._replan(
                plan, ruleset, seen, exploring, bits, starts
            )
        return learned

    def _replan(
        self,
        plan: Plan,
        ruleset: CompiledRuleset,
        segment: object,
        exploring: bool,
        bits: set[int],
        starts: list[int],
    ) -> Plan:
        if not bits:
            return plan
        bounds = list(plan.bounds)
        by_group: dict[int, list[int]] = {}
        for i in bits:
            bounds[i] = self._bound(ruleset.offers[i], segment, exploring)
            by_group.setdefault(bisect_right(starts, i) - 1, []).append(i)
        order = list(plan.order)
        # Each changed offer moves from its old place to its new one, both found by
        # bisection: sorting a group again (2,500 offers at 10,000) cost ~1 ms a plan.
        for g, moved in by_group.items():
            entries = list(order[g])
            for i in moved:
                at = bisect_left(entries, (-plan.bounds[i], i), key=_best_first)
                if at == len(entries) or entries[at][0] != i:  # a bound that does not order
                    at = next(k for k, entry in enumerate(entries) if entry[0] == i)
                del entries[at]
                insort(entries, (i, bounds[i]), key=_best_first)
            order[g] = tuple(entries)
        return Plan(tuple(bounds), tuple(order))


def _best_first(entry: tuple[int, float]) -> tuple[float, int]:
    """Highest bound first; ties by bit, so that a plan updated and one made afresh agree."""
    return -entry[1], entry[0]


def decayed(counts: str, *, now: float, half_life_days: float) -> tuple[float, float]:
    """(successes, failures) of a stored `a,b,updated_at`, decayed to `now`."""
    a_text, b_text, at_text = counts.split(",")
    a, b, at = float(a_text), float(b_text), float(at_text)
    if half_life_days > 0 and now > at:
        factor = 0.5 ** ((now - at) / (half_life_days * _DAY))
        a, b = a * factor, b * factor
    return a, b


def learned_from(stored: Mapping[str, str], ruleset: CompiledRuleset, *, now: float) -> Learned:
    """Posteriors from the store's counts (`offer` or `offer|segment` → `a,b,updated_at`)."""
    settings = ruleset.source.learning
    # An offer without outcomes yet has its prior as posterior: exploration then draws
    # for it too, instead of always using the written propensity (which may be wrong).
    priors = Learned(
        settings.by,
        {o.spec.id: _prior(o.spec.propensity, settings.prior_strength) for o in ruleset.offers},
        {},
    )
    return priors.updated(stored, stored, ruleset, now=now)


def _posterior(
    counts: str | None, prior: float, settings: Learning, now: float
) -> Posterior | None:
    """The prior plus a stored key's decayed counts; None when absent or unreadable.

    A segment starts from the rule file's propensity, like the offer overall. Starting
    it from the overall mean instead was measured (bench/learning.py, by_segment):
    segments whose best offer differs from the overall best converged in 2 of 5 runs
    instead of 5 of 5, as a well-known overall mean damped their exploration.
    """
    if counts is None:
        return None
    try:
        a, b = decayed(counts, now=now, half_life_days=settings.half_life_days)
    except ValueError:
        return None
    base = _prior(prior, settings.prior_strength)
    return Posterior(base.alpha + a, base.beta + b)


def _prior(propensity: float, strength: float) -> Posterior:
    # Beta parameters must be positive: a propensity of 0 or 1 is "almost surely".
    tiny = 1e-6
    return Posterior(max(propensity * strength, tiny), max((1 - propensity) * strength, tiny))
