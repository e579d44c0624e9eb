"""RuleIndex must agree with brute-force evaluation; conditions use three-valued logic."""

from __future__ import annotations

import random
from typing import Any

import pytest

from decision_engine.ruleset.closures import compile_all, compile_checks, compile_node
from decision_engine.ruleset.expr import Node, parse
from decision_engine.ruleset.rule_index import RuleIndex
from decision_engine.ruleset.runtime import first_failure, set_bits
from decision_engine.ruleset.schema import FieldSpec
from decision_engine.ruleset.typecheck import check

STRINGS = ("seg", "tier")
NUMBERS = ("n1", "n2")
BOOLS = ("f1", "f2")
ALL_FIELDS = STRINGS + NUMBERS + BOOLS

FIELDS = {
    **{name: FieldSpec(name, "string") for name in STRINGS},
    **{name: FieldSpec(name, "number") for name in NUMBERS},
    **{name: FieldSpec(name, "bool") for name in BOOLS},
}

RULE_VALUES = ("a", "b", "c", "d")
FACT_VALUES = (*RULE_VALUES, "e")  # "e" is named by no rule
THRESHOLDS = (-1, 0, 1, 2, 2.5, 3, 4)
FACT_NUMBERS: tuple[float, ...] = (-2, -1, 0, 0.5, 1, 2, 2.5, 3, 3.5, 4, 5, 1.0, 3.0)
ORDER = ("<", "<=", ">", ">=")


def _num(rng: random.Random) -> str:
    return f"{rng.choice(THRESHOLDS):g}"


def _strs(rng: random.Random) -> str:
    return ", ".join(f'"{v}"' for v in rng.sample(RULE_VALUES, rng.randint(1, 3)))


def _nums(rng: random.Random) -> str:
    return ", ".join(f"{v:g}" for v in rng.sample(THRESHOLDS, rng.randint(1, 3)))


def categorical_term(rng: random.Random) -> str:
    name, value = rng.choice(STRINGS), rng.choice(RULE_VALUES)
    return rng.choice(
        [
            f'{name} == "{value}"',
            f'"{value}" == {name}',
            f'{name} != "{value}"',
            f'"{value}" != {name}',
            f"{name} in [{_strs(rng)}]",
            f"{name} not in [{_strs(rng)}]",
        ]
    )


def numeric_term(rng: random.Random) -> str:
    name, op, t = rng.choice(NUMBERS), rng.choice(ORDER), _num(rng)
    return rng.choice(
        [
            f"{name} {op} {t}",
            f"{t} {op} {name}",
            f"{name} == {t}",
            f"{t} != {name}",
            f"{name} in [{_nums(rng)}]",
            f"{name} not in [{_nums(rng)}]",
        ]
    )


def exists_term(rng: random.Random) -> str:
    name = rng.choice(ALL_FIELDS)
    return rng.choice([f"exists({name})", f"not exists({name})"])


def bool_term(rng: random.Random) -> str:
    name = rng.choice(BOOLS)
    return rng.choice(
        [name, f"{name} == true", f"{name} == false", f"{name} != true", f"not {name}"]
    )


def residual_term(rng: random.Random) -> str:
    """Terms the index cannot decide: they must be evaluated on the candidates."""
    t = _num(rng)
    return rng.choice(
        [
            f"({categorical_term(rng)} or {numeric_term(rng)})",
            f"({bool_term(rng)} or {exists_term(rng)})",
            f"n1 + n2 > {t}",
            "n1 * 2 <= n2",
            f"not ({numeric_term(rng)})",
            f"not ({categorical_term(rng)})",
            f"min(n1, n2) >= {t}",
            "n1 > n2",
            "n1 / n2 < 1",
            "-n1 in [1, -2]",
            "seg == tier",
            f"not (exists(n1) and {bool_term(rng)})",
        ]
    )


TERMS = (categorical_term, numeric_term, exists_term, bool_term, residual_term)


def random_condition(rng: random.Random) -> str:
    terms = [rng.choice(TERMS)(rng) for _ in range(rng.randint(1, 3))]
    if len(terms) == 3 and rng.random() < 0.3:
        return f"({terms[0]} and {terms[1]}) and {terms[2]}"
    return " and ".join(terms)


def random_rule(rng: random.Random) -> list[Node]:
    """A rule is a list of conditions that must all hold (like `when:` in a rule file)."""
    texts = [random_condition(rng) for _ in range(rng.choice((0, 1, 1, 1, 2)))]
    nodes = [parse(text) for text in texts]
    for node in nodes:
        check(node, FIELDS, want="bool")
    return nodes


def random_facts(rng: random.Random) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for name in ALL_FIELDS:
        if rng.random() < 0.35:
            continue  # absent
        if name in STRINGS:
            facts[name] = rng.choice(FACT_VALUES)
        elif name in NUMBERS:
            facts[name] = rng.choice(FACT_NUMBERS)
        else:
            facts[name] = rng.random() < 0.5
    return facts


def brute_force(rules: list[list[Node]], facts: dict[str, Any]) -> list[int]:
    out = []
    for i, conditions in enumerate(rules):
        fn = compile_all(conditions)
        if fn is None or fn(facts) is True:
            out.append(i)
    return out


@pytest.mark.parametrize("seed", range(8))
def test_index_matches_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    matched = unmatched = indexed = 0
    for _case in range(50):
        rules = [random_rule(rng) for _ in range(rng.randint(1, 40))]
        index = RuleIndex(rules)
        indexed += len(index.families)
        for _ in range(25):
            facts = random_facts(rng)
            expected = brute_force(rules, facts)
            got = list(index.matches(facts))
            assert got == expected, (facts, [[str(n) for n in r] for r in rules])
            matched += len(expected)
            unmatched += len(rules) - len(expected)
            # Explanations share each distinct term's evaluation across rules; each
            # rule's own checks, compiled apart, must give the same first failure.
            failures = index.failures(facts)
            for i, rule in enumerate(rules):
                assert (failures[i] is None) == (i in expected)
                assert failures[i] == first_failure(compile_checks(rule), facts)
                assert index.explain(i, facts) == failures[i]
    # the generator must exercise both outcomes and the index proper, or it proves nothing
    assert matched > 100
    assert unmatched > 100
    assert indexed > 100


def test_index_handles_every_threshold_boundary() -> None:
    rules = [[parse(f"{t:g} {op} n1")] for op in ORDER for t in THRESHOLDS]
    rules += [[parse(f"n1 {op} {t:g}")] for op in ORDER for t in THRESHOLDS]
    index = RuleIndex(rules)
    for value in (*THRESHOLDS, -5, 1.5, 10, None):
        facts = {} if value is None else {"n1": value}
        assert list(index.matches(facts)) == brute_force(rules, facts)


def test_index_with_no_rules_and_rules_without_conditions() -> None:
    assert list(RuleIndex([]).matches({"n1": 1})) == []
    index = RuleIndex([[], [parse("n1 > 0")], []])
    assert list(index.matches({})) == [0, 2]
    assert list(index.matches({"n1": 1})) == [0, 1, 2]


def test_same_field_twice_in_one_rule() -> None:
    index = RuleIndex([[parse("n1 > 1 and n1 > 3")], [parse('seg == "a" and seg != "a"')]])
    assert list(index.matches({"n1": 2, "seg": "a"})) == []
    assert list(index.matches({"n1": 4, "seg": "a"})) == [0]


# -- three-valued logic --------------------------------------------------------------------


def value(text: str, facts: dict[str, Any]) -> Any:
    return compile_node(parse(text))(facts)


@pytest.mark.parametrize(
    ("text", "facts", "expected"),
    [
        # a comparison with an absent field is unknown, and so is its negation
        ("clv > 5", {}, None),
        ("not (clv > 5)", {}, None),
        ("not (clv > 5)", {"clv": 3}, True),
        ("not (clv > 5)", {"clv": 7}, False),
        ("clv != 5", {}, None),
        ('seg not in ["a"]', {}, None),
        ("clv + 1 > 5", {}, None),
        ("min(clv, 10) > 5", {}, None),
        ("clv / 0 > 1", {"clv": 3}, None),
        # exists() is never unknown
        ("exists(clv)", {}, False),
        ("exists(clv)", {"clv": 0}, True),
        ("not exists(clv)", {}, True),
        ("not exists(clv)", {"clv": 0}, False),
        # and: False wins over unknown; or: True wins over unknown
        ('clv > 5 and seg == "a"', {"seg": "b"}, False),
        ('clv > 5 and seg == "a"', {"seg": "a"}, None),
        ('clv > 5 or seg == "a"', {"seg": "a"}, True),
        ('clv > 5 or seg == "a"', {"seg": "b"}, None),
        ('clv > 5 or seg == "a"', {"seg": "b", "clv": 1}, False),
        ("exists(clv) and clv > 5", {}, False),
        ("exists(clv) or clv > 5", {}, None),
    ],
)
def test_three_valued_logic(text: str, facts: dict[str, Any], expected: Any) -> None:
    assert value(text, facts) is expected


@pytest.mark.parametrize(
    "text", ["not (clv > 5)", "clv != 5", "not exists(clv) and clv < 1", 'clv > 5 or seg == "a"']
)
def test_unknown_never_matches_in_the_index(text: str) -> None:
    index = RuleIndex([[parse(text)]])
    assert list(index.matches({"seg": "b"})) == []
    assert index.explain(0, {"seg": "b"}) is not None


def test_exists_in_the_index() -> None:
    index = RuleIndex([[parse("exists(clv)")], [parse("not exists(clv)")]])
    assert list(index.matches({})) == [1]
    assert list(index.matches({"clv": 0})) == [0]


@pytest.mark.parametrize("seed", range(5))
def test_set_bits_lists_every_set_bit_from_any_start_below_them(seed: int) -> None:
    rng = random.Random(seed)
    width = rng.choice([1, 63, 64, 65, 1000, 10_000])
    positions = sorted(rng.sample(range(width), rng.randint(0, min(width, 50))))
    mask = sum(1 << p for p in positions)
    start = rng.randint(0, positions[0]) if positions else rng.randint(0, width)
    assert list(set_bits(mask, start)) == positions
    assert list(set_bits(mask)) == positions
