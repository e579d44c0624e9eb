"""Synthetic customer profiles: realistic shapes, deterministic by seed.

Profiles follow a ruleset's schema (`schema=`): every declared profile field gets a value of
its type. A field that declares its `population:` is drawn as it says (share true, enum
weights, normal, log-normal, uniform, a day range, a share absent). Otherwise a field the
demo generator knows (clv, segment, plan, …) keeps the demo's
realistic, correlated values when its declaration accepts them all (DEMO_FIELDS: same kind,
enum values and range wide enough); every other field is drawn from its declaration alone:
an enum's values evenly, numbers uniformly within the declared range (0–1,000 for numbers
and 0–100 for integers where a bound is missing), booleans half true, dates within a year
of today, strings as `<field>-<n>`. Without a schema the demo's shape is generated.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping
from datetime import date, timedelta

from decision_engine.ruleset.schema import FieldSpec

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


_PLANS = ("basic", "standard", "premium")
DEMO_FIELDS: dict[str, FieldSpec] = {
    spec.name: spec
    for spec in (
        FieldSpec("clv", "number", minimum=0),
        FieldSpec("churn_risk", "number", minimum=0, maximum=1),
        FieldSpec("segment", "enum", tuple(name for name, _ in SEGMENTS)),
        FieldSpec("tenure_months", "integer", minimum=0, maximum=240),
        FieldSpec("contract_end", "date"),
        FieldSpec("first_name", "string"),
        FieldSpec("preferred_channel", "enum", CHANNELS),
        FieldSpec("cost_to_serve", "number", minimum=20, maximum=800),
        FieldSpec("plan", "enum", _PLANS),
        FieldSpec("last_complaint", "date"),
    )
}
"""What the demo generator writes: the values of each field lie within these declarations."""
_DEFAULT_SPAN = {"number": 1_000.0, "integer": 100.0}
_DATE_SPAN_DAYS = 365


def generate_profiles(
    count: int, *, seed: int, today: date, schema: Mapping[str, FieldSpec] | None = None
) -> Iterator[dict[str, object]]:
    """`count` customers C-000001…; the same seed and day give the same customers.

    With a schema, exactly its profile fields (see the module doc); without, the demo's."""
    rng = random.Random(seed)
    if schema is None:
        for n in range(1, count + 1):
            yield _customer(rng, f"C-{n:06d}", today)
        return
    profile_fields = [s for s in schema.values() if s.source == "profile"]
    demo = {s.name for s in profile_fields if s.population is None and accepts_demo(s)}
    drawn = [s for s in profile_fields if s.name not in demo]
    # A string seed keeps this stream apart from the demo's, so the demo's stays as it was.
    other = random.Random(f"schema:{seed}")
    for n in range(1, count + 1):
        customer_id = f"C-{n:06d}"
        profile: dict[str, object] = {"customer_id": customer_id}
        if demo:
            realistic = _customer(rng, customer_id, today)
            profile.update((k, v) for k, v in realistic.items() if k in demo)
        for spec in drawn:
            if spec.population and spec.population.present_with not in ("", *profile):
                continue  # present exactly when the field it names is
            value = declared_value(spec, other, today, n)
            if value is not None:
                profile[spec.name] = value
        yield profile


def declared_value(spec: FieldSpec, rng: random.Random, today: date, n: int) -> object | None:
    """A value drawn as the field's `population:` says (None: this customer lacks it), or
    from the declaration alone when it has none."""
    pop = spec.population
    if pop is None:
        return field_value(spec, rng, today, n)
    if pop.absent and rng.random() < pop.absent:
        return None
    if pop.shape == "share":
        return rng.random() < pop.share
    if pop.shape == "weights":
        return rng.choices([v for v, _ in pop.weights], [w for _, w in pop.weights])[0]
    if pop.shape == "days":
        return (today + timedelta(days=rng.randint(int(pop.low), int(pop.high)))).isoformat()
    if pop.shape == "normal":
        return _clipped(spec, rng.gauss(pop.low, pop.high))
    if pop.shape == "lognormal":
        return _clipped(spec, rng.lognormvariate(math.log(pop.low), math.log(pop.high)))
    if pop.shape == "uniform":
        if spec.kind == "integer":
            return rng.randint(math.ceil(pop.low), max(math.ceil(pop.low), math.floor(pop.high)))
        return _clipped(spec, rng.uniform(pop.low, pop.high))
    return field_value(spec, rng, today, n)  # "declared": only the absent share is given


def _clipped(spec: FieldSpec, value: float) -> float | int:
    """A drawn number inside the declared bounds, whole for an integer, else to the cent."""
    if spec.kind == "integer":
        whole = round(value)
        if spec.minimum is not None:
            whole = max(whole, math.ceil(spec.minimum))
        if spec.maximum is not None:
            whole = min(whole, math.floor(spec.maximum))
        return whole
    number = round(value, 2)
    if spec.minimum is not None:
        number = max(number, spec.minimum)
    if spec.maximum is not None:
        number = min(number, spec.maximum)
    return number


def accepts_demo(spec: FieldSpec) -> bool:
    """Whether a declared field accepts every value the demo generator writes for it."""
    demo = DEMO_FIELDS.get(spec.name)
    if demo is None:
        return False
    # A whole number is a number, and any enum value is a string.
    widened = {("integer", "number"), ("enum", "string")}
    if spec.kind != demo.kind and (demo.kind, spec.kind) not in widened:
        return False
    if spec.kind == "enum" and not set(demo.values) <= set(spec.values):
        return False
    if spec.minimum is not None and (demo.minimum is None or demo.minimum < spec.minimum):
        return False
    return not (spec.maximum is not None and (demo.maximum is None or demo.maximum > spec.maximum))


def field_value(spec: FieldSpec, rng: random.Random, today: date, n: int) -> object:
    """A value of the declared type, drawn from the declaration alone."""
    if spec.kind == "enum":
        return rng.choice(spec.values) if spec.values else ""
    if spec.kind == "bool":
        return rng.random() < 0.5
    if spec.kind == "date":
        return (today + timedelta(days=rng.randint(-_DATE_SPAN_DAYS, _DATE_SPAN_DAYS))).isoformat()
    if spec.kind in _DEFAULT_SPAN:
        low, high = _range(spec)
        if spec.kind == "integer":
            return rng.randint(math.ceil(low), math.floor(high))
        return min(max(round(rng.uniform(low, high), 2), low), high)
    return f"{spec.name}-{rng.randint(1, 99)}"


def _range(spec: FieldSpec) -> tuple[float, float]:
    span = _DEFAULT_SPAN[spec.kind]
    low, high = spec.minimum, spec.maximum
    if low is None:
        low = 0.0 if high is None or high > 0 else high - span
    if high is None:
        high = low + span
    if spec.kind == "integer" and math.floor(high) < math.ceil(low):
        return math.ceil(low), math.ceil(low)  # no whole number in range: the parse says so
    return low, high


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
        "plan": rng.choices(_PLANS, _PLAN_WEIGHTS[segment])[0],
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
