"""Synthetic customer profiles: realistic shapes, deterministic by seed."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import date, timedelta

FIRST_NAMES = (
    "Amira", "Ben", "Carla", "David", "Elif", "Finn", "Giulia", "Hugo", "Ines", "Jonas",
    "Kasia", "Luca", "Maya", "Noah", "Olga", "Pedro", "Quinn", "Rosa", "Sami", "Tara",
)  # fmt: skip
CHANNELS = ("voice", "chat", "email", "sms", "web", "app")
_CHANNEL_WEIGHTS = (30, 20, 15, 5, 10, 20)
# CLV thresholds, highest first: the segment is the first one the value reaches.
SEGMENTS = (("platinum", 20_000.0), ("gold", 6_000.0), ("silver", 1_500.0), ("bronze", 0.0))
_PLAN_WEIGHTS = {  # basic, standard, premium
    "platinum": (5, 25, 70),
    "gold": (15, 55, 30),
    "silver": (35, 55, 10),
    "bronze": (70, 27, 3),
}


def segment_for(clv: float) -> str:
    """The segment a lifetime value falls in."""
    return next(name for name, floor in SEGMENTS if clv >= floor)


def generate_profiles(count: int, *, seed: int, today: date) -> Iterator[dict[str, object]]:
    """`count` customers C-000001…; the same seed and day give the same customers."""
    rng = random.Random(seed)
    for n in range(1, count + 1):
        yield _customer(rng, f"C-{n:06d}", today)


def _customer(rng: random.Random, customer_id: str, today: date) -> dict[str, object]:
    tenure = min(240, int(rng.expovariate(1 / 48)))
    # Lognormal around a 2,500 median; long-standing customers are worth a bit more.
    clv = rng.lognormvariate(math.log(2_500) + 0.15 * (tenure / 48 - 1), 1.2)
    segment = segment_for(clv)
    # New customers leave more often: a beta base plus a bonus that fades with tenure.
    churn = rng.betavariate(2, 5) + 0.35 * math.exp(-tenure / 18)
    cost = rng.uniform(20, 300)
    if segment == "bronze" and rng.random() < 0.3:
        cost = rng.uniform(300, 800)  # the costly, low-value contacts self-service is for
    profile: dict[str, object] = {
        "customer_id": customer_id,
        "first_name": rng.choice(FIRST_NAMES),
        "clv": round(clv, 2),
        "churn_risk": round(min(churn, 1.0), 3),
        "segment": segment,
        "tenure_months": tenure,
        "preferred_channel": rng.choices(CHANNELS, _CHANNEL_WEIGHTS)[0],
        "cost_to_serve": round(cost, 2),
        "plan": rng.choices(("basic", "standard", "premium"), _PLAN_WEIGHTS[segment])[0],
    }
    roll = rng.random()
    if roll < 0.10:
        offset = rng.randint(-365, -1)  # already ended
    elif roll < 0.25:
        offset = rng.randint(0, 60)  # the renewal moment
    elif roll < 0.92:
        offset = rng.randint(61, 730)
    else:
        offset = None  # no fixed-term contract
    if offset is not None:
        profile["contract_end"] = (today + timedelta(days=offset)).isoformat()
    if rng.random() < 0.15:
        profile["last_complaint"] = (today - timedelta(days=rng.randint(0, 179))).isoformat()
    return profile
