"""Proportions with 95% intervals: Wilson score for a rate, Newcombe's hybrid score for the
difference of two."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

CONFIDENCE = 0.95
Z_95 = NormalDist().inv_cdf(0.5 + CONFIDENCE / 2)
"""Two-sided standard normal quantile of the confidence level (1.95996…)."""


@dataclass(frozen=True, slots=True)
class Interval:
    """A confidence interval."""

    low: float
    high: float


@dataclass(frozen=True, slots=True)
class Rate:
    """A proportion with its 95% Wilson score interval."""

    successes: int
    trials: int
    value: float
    interval: Interval


@dataclass(frozen=True, slots=True)
class Difference:
    """A difference of two proportions with its 95% confidence interval."""

    value: float
    interval: Interval


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> Interval:
    """Wilson score interval of successes / trials (no continuity correction)."""
    if trials <= 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials > 0, got {successes}/{trials}")
    p = successes / trials
    z2 = z * z
    denominator = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    # Exact at 0 and 1 (the formula gives them up to rounding).
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return Interval(low, high)


def rate(successes: int, trials: int) -> Rate | None:
    """successes / trials with its interval; None without trials or when successes > trials."""
    if trials <= 0 or not 0 <= successes <= trials:
        return None
    return Rate(successes, trials, successes / trials, wilson_interval(successes, trials))


def difference(a: Rate, b: Rate) -> Difference:
    """a − b with Newcombe's hybrid score interval (his method 10, 1998), built from the
    two Wilson intervals: better coverage than the normal approximation at small counts
    or rates near 0 or 1, and it never leaves [-1, 1]."""
    d = a.value - b.value
    below = math.hypot(a.value - a.interval.low, b.interval.high - b.value)
    above = math.hypot(a.interval.high - a.value, b.value - b.interval.low)
    return Difference(d, Interval(max(-1.0, d - below), min(1.0, d + above)))
