"""The condition language: precedence, lists, strings, calls, error columns, render()."""

from __future__ import annotations

from typing import Any

import pytest

from decision_engine.ruleset.expr import (
    Arith,
    Call,
    Compare,
    ExprError,
    Field,
    Literal,
    Logic,
    Member,
    Neg,
    Node,
    Not,
    conjuncts,
    parse,
    render,
)


def shape(node: Node) -> Any:
    """The structure of a node without its columns, as nested tuples."""
    if isinstance(node, Literal):
        return ("lit", node.value)
    if isinstance(node, Field):
        return ("field", node.name)
    if isinstance(node, Call):
        return ("call", node.function, tuple(shape(a) for a in node.args))
    if isinstance(node, Neg):
        return ("neg", shape(node.operand))
    if isinstance(node, Not):
        return ("not", shape(node.operand))
    if isinstance(node, Arith | Compare):
        return (node.op, shape(node.left), shape(node.right))
    if isinstance(node, Member):
        return (
            "not in" if node.negated else "in",
            shape(node.left),
            tuple(shape(i) for i in node.items),
        )
    return (node.op, tuple(shape(o) for o in node.operands))


def f(name: str) -> Any:
    return ("field", name)


def n(value: float | str | bool) -> Any:
    return ("lit", value)


def error_of(text: str) -> ExprError:
    with pytest.raises(ExprError) as info:
        parse(text)
    return info.value


# -- precedence ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # `and` binds tighter than `or`
        ("a or b and c", ("or", (f("a"), ("and", (f("b"), f("c")))))),
        ("a and b or c", ("or", (("and", (f("a"), f("b"))), f("c")))),
        # chains of the same operator are flat
        ("a or b or c", ("or", (f("a"), f("b"), f("c")))),
        ("a and b and c", ("and", (f("a"), f("b"), f("c")))),
        # `not` binds tighter than and/or, looser than comparisons
        ("not a and b", ("and", (("not", f("a")), f("b")))),
        ("not a or b", ("or", (("not", f("a")), f("b")))),
        ("not x > 1", ("not", (">", f("x"), n(1.0)))),
        ("not not a", ("not", ("not", f("a")))),
        ("not (a or b)", ("not", ("or", (f("a"), f("b"))))),
        # parentheses override
        ("(a or b) and c", ("and", (("or", (f("a"), f("b"))), f("c")))),
        # arithmetic: * and / before + and -, both left-associative
        ("1 + 2 * 3", ("+", n(1.0), ("*", n(2.0), n(3.0)))),
        ("1 * 2 + 3", ("+", ("*", n(1.0), n(2.0)), n(3.0))),
        ("1 - 2 - 3", ("-", ("-", n(1.0), n(2.0)), n(3.0))),
        ("8 / 4 / 2", ("/", ("/", n(8.0), n(4.0)), n(2.0))),
        ("(1 + 2) * 3", ("*", ("+", n(1.0), n(2.0)), n(3.0))),
        ("a - (b - c)", ("-", f("a"), ("-", f("b"), f("c")))),
        # unary minus binds tightest; a negative number is folded into the literal
        ("-x * 2", ("*", ("neg", f("x")), n(2.0))),
        ("-3", n(-3.0)),
        ("2 - -3", ("-", n(2.0), n(-3.0))),
        ("-(a + b)", ("neg", ("+", f("a"), f("b")))),
        # arithmetic before comparison before logic
        (
            "a + b > c * 2 and d",
            ("and", ((">", ("+", f("a"), f("b")), ("*", f("c"), n(2.0))), f("d"))),
        ),
        ("5 <= clv", ("<=", n(5.0), f("clv"))),
        ("1.5e3 == x", ("==", n(1500.0), f("x"))),
        ("true != false", ("!=", n(True), n(False))),
    ],
)
def test_precedence(text: str, expected: Any) -> None:
    assert shape(parse(text)) == expected


def test_nodes_carry_one_based_columns() -> None:
    node = parse("clv >= 5000 and x")
    assert isinstance(node, Logic)
    compare = node.operands[0]
    assert isinstance(compare, Compare)
    assert compare.col == 5  # the operator
    assert compare.left == Field("clv", 1)
    assert compare.right == Literal(5000.0, 8)
    assert node.operands[1] == Field("x", 17)


def test_number_literals_are_floats() -> None:
    node = parse("x == 3")
    assert isinstance(node, Compare) and isinstance(node.right, Literal)
    assert type(node.right.value) is float


# -- in / not in ---------------------------------------------------------------------------


def test_in_list() -> None:
    node = parse('segment in ["gold", "platinum"]')
    assert node == Member(
        Field("segment", 1), (Literal("gold", 13), Literal("platinum", 21)), False, 9
    )


def test_not_in_list_with_negative_numbers() -> None:
    node = parse("x not in [1, -2, 3.5]")
    assert isinstance(node, Member)
    assert node.negated
    assert node.col == 3  # the `not`
    assert [i.value for i in node.items] == [1.0, -2.0, 3.5]


def test_not_before_in_is_a_negation_of_the_membership() -> None:
    assert shape(parse("not x in [1]")) == ("not", ("in", f("x"), (n(1.0),)))
    assert shape(parse("x not in [1]")) == ("not in", f("x"), (n(1.0),))


def test_in_list_of_a_sum() -> None:
    assert shape(parse("a + 1 in [2, 3]")) == ("in", ("+", f("a"), n(1.0)), (n(2.0), n(3.0)))


@pytest.mark.parametrize(
    ("text", "col"),
    [("x in [y]", 7), ('x in [1, -"a"]', 11), ("x in [true, min(1, 2)]", 13)],
)
def test_a_list_holds_literals_only(text: str, col: int) -> None:
    exc = error_of(text)
    assert "literal values only" in exc.message
    assert exc.col == col


def test_in_needs_a_list() -> None:
    exc = error_of("clv in 5")
    assert exc.message == "expected '[', found '5'"
    assert exc.col == 8


def test_list_items_are_separated_by_commas() -> None:
    exc = error_of('x in ["a" "b"]')
    assert exc.message == "expected ',', found '\"b\"'"
    assert exc.col == 11


def test_empty_list_is_an_error() -> None:
    assert error_of("segment in []").message == "empty list"


@pytest.mark.parametrize("text", ["segment in []", "segment in [] and x"])
def test_empty_list_error_points_at_the_list(text: str) -> None:
    # `[` is column 12, `]` column 13; anything past the list is the wrong place.
    assert error_of(text).col in (12, 13)


# -- strings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('x == "plain"', "plain"),
        ("x == 'single'", "single"),
        (r'x == "say \"hi\""', 'say "hi"'),
        (r"x == 'it\'s'", "it's"),
        ("x == 'a \"b\"'", 'a "b"'),
        ('x == "it\'s"', "it's"),
        (r'x == "back\\slash"', "back\\slash"),
        ('x == ""', ""),
        ('x == "and or not"', "and or not"),
    ],
)
def test_string_literals_and_escapes(text: str, value: str) -> None:
    node = parse(text)
    assert isinstance(node, Compare)
    assert node.right == Literal(value, 6)


def test_unterminated_string() -> None:
    exc = error_of('x == "open')
    assert exc.col == 6
    assert "unexpected character '\"'" in exc.message


# -- calls ---------------------------------------------------------------------------------


def test_function_calls() -> None:
    assert shape(parse("exists(clv)")) == ("call", "exists", (f("clv"),))
    assert shape(parse("min(a, b + 1)")) == ("call", "min", (f("a"), ("+", f("b"), n(1.0))))
    assert shape(parse("f()")) == ("call", "f", ())
    assert shape(parse("min(round(clv * 0.001) * 10, 1000)")) == (
        "call",
        "min",
        (
            ("*", ("call", "round", (("*", f("clv"), n(0.001)),)), n(10.0)),
            n(1000.0),
        ),
    )
    assert shape(parse("days_until(contract_end) <= 60")) == (
        "<=",
        ("call", "days_until", (f("contract_end"),)),
        n(60.0),
    )


def test_call_column_is_the_function_name() -> None:
    node = parse("x > max(a, 1)")
    assert isinstance(node, Compare)
    assert isinstance(node.right, Call) and node.right.col == 5


def test_call_arguments_are_separated_by_commas() -> None:
    exc = error_of("min(a b)")
    assert exc.message == "expected ',', found 'b'"
    assert exc.col == 7


def test_unclosed_call() -> None:
    exc = error_of("min(a, b")
    assert exc.message == "expected ',', found end of condition"
    assert exc.col == 9


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "col", "message"),
    [
        ("clv = 5", 5, "unexpected character '=' (use == to compare)"),
        ("  clv = 5", 7, "unexpected character '=' (use == to compare)"),
        ("clv > 5 @", 9, "unexpected character '@'"),
        ("clv >=", 7, "expected a value, found end of condition"),
        ("clv > 5 or", 11, "expected a value, found end of condition"),
        ("(clv > 5", 9, "expected ')', found end of condition"),
        ("clv > 5)", 8, "unexpected ')'"),
        ("clv > 5 5", 9, "unexpected '5'"),
        ("clv > and x", 7, "unexpected 'and'"),
        ("and clv > 5", 1, "unexpected 'and'"),
        ("clv > 5 and or x", 13, "unexpected 'or'"),
        ("a not b", 3, "unexpected 'not'"),
        ("x == in", 6, "unexpected 'in'"),
        ("clv > 5 >", 9, "unexpected '>'"),
        ("a == b == c", 8, "unexpected '=='"),
        ("", 1, "empty condition"),
        ("   ", 1, "empty condition"),
    ],
)
def test_error_columns(text: str, col: int, message: str) -> None:
    exc = error_of(text)
    assert exc.message == message
    assert exc.col == col
    assert str(exc) == f"column {col}: {message}"


def test_single_equals_hint_is_only_for_equals() -> None:
    assert "use ==" not in error_of("clv ! 5").message


# -- conjuncts -----------------------------------------------------------------------------


def test_conjuncts_flatten_nested_ands_only() -> None:
    terms = conjuncts(parse("a and (b and c) and (d or e)"))
    assert [shape(t) for t in terms] == [f("a"), f("b"), f("c"), ("or", (f("d"), f("e")))]
    assert [shape(t) for t in conjuncts(parse("a or b"))] == [("or", (f("a"), f("b")))]


# -- render --------------------------------------------------------------------------------

ROUND_TRIPS = [
    "(a + b) * c > 0",
    "a - (b - c) > 0",
    "-(a + b) > 0",
    "not (a or b)",
    "(a == b) == true",
    "clv > 1234567",
    "churn_risk > 0.1234567",
    'x == "a\\\\b"',
    "clv >= 5000",
    "5000 <= clv",
    'intent == "cancel" or churn_risk >= 0.7',
    'segment in ["gold", "platinum"] and not exists(first_name)',
    "x not in [1, -2, 3.5]",
    "not x in [1]",
    "a or b and c",
    "(a or b) and c",
    "a and (b or c) and not d",
    "a and (b and c)",
    "not not a",
    "1 + 2 * 3 > x",
    "1 - 2 - 3 == x",
    "-x * 2 < 0",
    "2 - -3 != y",
    "min(round(clv * 0.001) * 10, 1000) > 0",
    "days_until(contract_end) >= 0 and days_until(contract_end) <= 60",
    "sentiment <= -0.3",
    "flag == true or other != false",
    'x == "say \\"hi\\""',
    "x == 'it\\'s'",
    "churn_risk > 0.125",
    "clv > 1e-3",
]


@pytest.mark.parametrize("text", ROUND_TRIPS)
def test_render_round_trips(text: str) -> None:
    tree = parse(text)
    again = parse(render(tree))
    assert shape(again) == shape(tree)
    assert render(again) == render(tree)


@pytest.mark.parametrize(
    "text",
    [
        "clv >= 5000",
        'intent == "cancel" or churn_risk >= 0.7',
        'segment in ["gold", "platinum"] and not exists(first_name)',
        "a and (b or c) and not d",
        "min(round(clv * 0.001) * 10, 1000) > 0",
    ],
)
def test_render_of_canonical_text_is_identity_with_columns(text: str) -> None:
    assert render(parse(text)) == text
    assert parse(render(parse(text))) == parse(text)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("clv>=5000", "clv >= 5000"),
        ("x  ==  'a'", 'x == "a"'),
        ("x == 5.0", "x == 5"),
        ("x == 1.5e3", "x == 1500"),
        ("x in [1,2]", "x in [1, 2]"),
        ("(a)and(b)", "a and b"),
        ("((a or b))", "a or b"),
        ("max( a ,1 )", "max(a, 1)"),
    ],
)
def test_render_is_canonical(text: str, canonical: str) -> None:
    assert render(parse(text)) == canonical
