"""What outcomes taught: Beta posteriors of acceptance per offer (and per segment). Pure.

Each offer starts from its rule file's propensity p0, worth `prior_strength`
outcomes: Beta(p0·S, (1−p0)·S). Accepted outcomes add to alpha, declined and
unanswered ones to beta; evidence halves every `half_life_days`, so the estimate
follows change. The store keeps the decayed counts; this module turns them into
posteriors for a moment `now`.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from mypy_extensions import i64, mypyc_attr

from decision_engine.ruleset.compiled import CompiledOffer, CompiledRuleset
from decision_engine.ruleset.spec import Learning

_DAY = 86_400.0
TRUNCATE_SD: Final = 4.0
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

    def sample(self, rng: Draws) -> float:
        return min(beta_draw(rng, self.alpha, self.beta), self.ceiling)


_M32: Final[i64] = 0xFFFF_FFFF
_M64: Final = 0xFFFF_FFFF_FFFF_FFFF


class Draws:
    """Uniform draws from a seed: xoshiro128** (Blackman and Vigna, 2018), its state
    spread from the seed by splitmix64.

    Not random.Random: seeding a Mersenne Twister fills 624 words (3.4 µs), more than
    an exploring decision's few draws cost; these four words are set in 0.8 µs. Each
    step stays within 41 bits, so compiled (build_core.py) it is native 64-bit integer
    arithmetic (19 ns a draw; i64 raises on overflow rather than wrap).
    """

    def __init__(self, seed: int) -> None:
        x = seed & _M64
        words: list[int] = []
        for _ in range(2):
            x = (x + 0x9E37_79B9_7F4A_7C15) & _M64
            z = ((x ^ (x >> 30)) * 0xBF58_476D_1CE4_E5B9) & _M64
            z = ((z ^ (z >> 27)) * 0x94D0_49BB_1331_11EB) & _M64
            z ^= z >> 31
            words += (z & 0xFFFF_FFFF, z >> 32)
        if not any(words):
            words[0] = 1  # the one state xoshiro cannot leave
        self._s0: i64 = words[0]
        self._s1: i64 = words[1]
        self._s2: i64 = words[2]
        self._s3: i64 = words[3]

    def _next(self) -> i64:
        s0, s1, s2, s3 = self._s0, self._s1, self._s2, self._s3
        x = (s1 * 5) & _M32
        result = (((x << 7) | (x >> 25)) & _M32) * 9 & _M32
        t = (s1 << 9) & _M32
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = ((s3 << 11) | (s3 >> 21)) & _M32
        self._s0, self._s1, self._s2, self._s3 = s0, s1, s2, s3
        return result

    def random(self) -> float:
        # 53 random bits, as random.random() makes them from two 32-bit words.
        high, low = self._next() >> 5, self._next() >> 6
        return (float(high) * 67_108_864.0 + float(low)) * (1.0 / 9_007_199_254_740_992.0)


_LOG4: Final = math.log(4.0)
_SG_MAGICCONST: Final = 1.0 + math.log(4.5)


def beta_draw(rng: Draws, alpha: float, beta: float) -> float:
    """A draw from Beta(alpha, beta): CPython's `betavariate` and `gammavariate`
    (Lib/random.py, 3.11), step for step, over `rng`'s uniform draws.

    Compiled with the core (build_core.py), a draw costs a quarter of the stdlib's
    (0.28 against 1.08 µs).
    """
    y = _gamma_draw(rng, alpha)
    if y:
        return y / (y + _gamma_draw(rng, beta))
    return 0.0


def _gamma_draw(rng: Draws, alpha: float) -> float:
    """`rng.gammavariate(alpha, 1.0)`."""
    if alpha <= 0.0:
        raise ValueError("gammavariate: alpha and beta must be > 0.0")
    if alpha > 1.0:
        # Cheng's rejection algorithm (1977)
        ainv = math.sqrt(2.0 * alpha - 1.0)
        bbb = alpha - _LOG4
        ccc = alpha + ainv
        while True:
            u1 = rng.random()
            if not 1e-7 < u1 < 0.9999999:
                continue
            u2 = 1.0 - rng.random()
            v = math.log(u1 / (1.0 - u1)) / ainv
            x = alpha * math.exp(v)
            z = u1 * u1 * u2
            r = bbb + ccc * v - x
            if r + _SG_MAGICCONST - 4.5 * z >= 0.0 or r >= math.log(z):
                return x
    if alpha == 1.0:
        return -math.log(1.0 - rng.random())
    # Ahrens and Dieter's ALGORITHM GS (1974), for alpha < 1
    while True:
        u = rng.random()
        b = (math.e + alpha) / math.e
        p = b * u
        x = p ** (1.0 / alpha) if p <= 1.0 else -math.log((b - p) / alpha)
        u1 = rng.random()
        if p > 1.0:
            if u1 <= x ** (alpha - 1.0):
                return x
        elif u1 <= math.exp(-x):
            return x


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
