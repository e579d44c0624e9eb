from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from statistics import mean, median

from decision_engine.ruleset.schema import FieldSpec
from decision_engine.store.generate import generate_profiles, segment_for
from decision_engine.store.importer import canonical_profile

TODAY = date(2025, 6, 15)


def test_same_seed_same_customers() -> None:
    first = list(generate_profiles(50, seed=3, today=TODAY))
    assert first == list(generate_profiles(50, seed=3, today=TODAY))
    assert first != list(generate_profiles(50, seed=4, today=TODAY))
    assert [p["customer_id"] for p in first[:2]] == ["C-000001", "C-000002"]
    assert first[-1]["customer_id"] == "C-000050"


def test_every_profile_is_valid_for_the_schema(schema: dict[str, FieldSpec]) -> None:
    for profile in generate_profiles(2000, seed=1, today=TODAY):
        customer_id, fields = canonical_profile(profile, schema)  # raises if invalid
        assert set(fields) <= set(schema), customer_id
        assert 0 <= int(fields["tenure_months"]) <= 240
        assert 20 <= float(fields["cost_to_serve"]) <= 800
        assert fields["preferred_channel"] in {"voice", "chat", "email", "sms", "web", "app"}
        assert fields["segment"] == segment_for(float(fields["clv"]))


def num(profile: dict[str, object], name: str) -> float:
    return float(str(profile[name]))


def test_shapes_are_realistic() -> None:
    people = list(generate_profiles(2000, seed=1, today=TODAY))
    clv = [num(p, "clv") for p in people]
    assert 1800 < median(clv) < 3500
    assert max(clv) > 50_000  # a long tail of very valuable customers

    def churn(low: int, high: int) -> float:
        return mean(num(p, "churn_risk") for p in people if low <= num(p, "tenure_months") < high)

    assert churn(0, 12) > churn(60, 241) + 0.1

    ends = [date.fromisoformat(str(p["contract_end"])) for p in people if "contract_end" in p]
    assert 0.03 < 1 - len(ends) / len(people) < 0.15  # some have no contract end
    assert any(end < TODAY for end in ends)
    assert sum(TODAY <= end <= TODAY + timedelta(days=60) for end in ends) > 100
    assert sum(end > TODAY + timedelta(days=60) for end in ends) > len(ends) / 2

    complaints = [
        date.fromisoformat(str(p["last_complaint"])) for p in people if "last_complaint" in p
    ]
    assert 0.10 < len(complaints) / len(people) < 0.20
    assert all(TODAY - timedelta(days=180) < day <= TODAY for day in complaints)

    # Some low-value customers are expensive to serve: the self-service routing case.
    assert any(p["segment"] == "bronze" and num(p, "cost_to_serve") > 300 for p in people)


def test_the_demo_schema_keeps_the_demo_generator(schema: dict[str, FieldSpec]) -> None:
    demo = list(generate_profiles(300, seed=2, today=TODAY))
    assert list(generate_profiles(300, seed=2, today=TODAY, schema=schema)) == demo


def test_a_field_the_demo_values_do_not_fit_is_drawn_from_its_declaration() -> None:
    schema = {
        "clv": FieldSpec("clv", "number", minimum=0),
        "segment": FieldSpec("segment", "enum", ("mass", "premier")),
        "tenure_months": FieldSpec("tenure_months", "integer", minimum=0, maximum=12),
        "score": FieldSpec("score", "number"),
        "opened": FieldSpec("opened", "date"),
        "branch": FieldSpec("branch", "string"),
        "debt": FieldSpec("debt", "integer", maximum=-10),
    }
    people = list(generate_profiles(500, seed=1, today=TODAY, schema=schema))
    for person in people:
        canonical_profile(person, schema)  # raises if invalid
        assert set(person) == {"customer_id", *schema}
        assert 0 <= float(str(person["score"])) <= 1000
        assert abs((date.fromisoformat(str(person["opened"])) - TODAY).days) <= 365
        assert -110 <= int(str(person["debt"])) <= -10
    assert max(num(p, "clv") for p in people) > 50_000, "clv keeps the demo's long tail"
    assert {p["segment"] for p in people} == {"mass", "premier"}


def test_a_declared_population_shapes_the_generated_customers() -> None:
    from decision_engine.ruleset.schema import FieldPopulation as Pop

    schema = {
        # clv: the demo knows it, but a declared population takes precedence
        "clv": FieldSpec("clv", "number", minimum=0, population=Pop("normal", low=500, high=50)),
        "vulnerable": FieldSpec("vulnerable", "bool", population=Pop("share", share=0.1)),
        "tier": FieldSpec(
            "tier",
            "enum",
            ("gold", "silver"),
            population=Pop("weights", weights=(("gold", 1), ("silver", 3))),
        ),
        "age": FieldSpec(
            "age", "integer", minimum=18, maximum=60, population=Pop("normal", low=40, high=15)
        ),
        "arrears": FieldSpec(
            "arrears",
            "number",
            minimum=0,
            maximum=5000,
            population=Pop("lognormal", low=300, high=2, absent=0.8),
        ),
        "days_behind": FieldSpec(
            "days_behind", "integer", population=Pop("declared", present_with="arrears")
        ),
        "score": FieldSpec("score", "number", population=Pop("uniform", low=10, high=20)),
        "renewal": FieldSpec("renewal", "date", population=Pop("days", low=-30, high=60)),
        "nickname": FieldSpec("nickname", "string", population=Pop("declared", absent=0.5)),
    }
    people = list(generate_profiles(4000, seed=1, today=TODAY, schema=schema))
    assert people == list(generate_profiles(4000, seed=1, today=TODAY, schema=schema))

    def share(test: Callable[[dict[str, object]], bool]) -> float:
        return sum(1 for p in people if test(p)) / len(people)

    for person in people:
        canonical_profile(person, schema)  # raises if invalid
    assert 450 < mean(num(p, "clv") for p in people) < 550
    assert 0.08 < share(lambda p: p["vulnerable"] is True) < 0.12
    assert 0.72 < share(lambda p: p["tier"] == "silver") < 0.78
    ages = [int(str(p["age"])) for p in people]
    assert min(ages) == 18 and max(ages) == 60 and 36 < mean(ages) < 42
    arrears = [num(p, "arrears") for p in people if "arrears" in p]
    assert 0.17 < len(arrears) / len(people) < 0.23
    assert 250 < median(arrears) < 350 and max(arrears) > 1200
    assert all(("days_behind" in p) == ("arrears" in p) for p in people)
    assert all(10 <= num(p, "score") <= 20 for p in people)
    days = {(date.fromisoformat(str(p["renewal"])) - TODAY).days for p in people}
    assert min(days) == -30 and max(days) == 60
    assert 0.45 < share(lambda p: "nickname" in p) < 0.55
