"""Type-checking conditions against declared fields: every mistake is named and located."""

from __future__ import annotations

import pytest

from decision_engine.ruleset.expr import ExprError, parse
from decision_engine.ruleset.fields import builtin_fields
from decision_engine.ruleset.schema import FieldSpec
from decision_engine.ruleset.typecheck import check

INTENTS = ("cancel", "billing_dispute", "lost_card", "complaint")
SEGMENTS = ("platinum", "gold", "silver", "bronze")

FIELDS: dict[str, FieldSpec] = {
    **builtin_fields(INTENTS, has_contract_end=True),
    "clv": FieldSpec("clv", "number", minimum=0),
    "churn_risk": FieldSpec("churn_risk", "number", minimum=0, maximum=1),
    "segment": FieldSpec("segment", "enum", SEGMENTS),
    "tenure_months": FieldSpec("tenure_months", "integer", minimum=0),
    "contract_end": FieldSpec("contract_end", "date"),
    "last_complaint": FieldSpec("last_complaint", "date"),
    "first_name": FieldSpec("first_name", "string"),
    "vip": FieldSpec("vip", "bool"),
}


def error_of(text: str, want: str = "bool") -> ExprError:
    with pytest.raises(ExprError) as info:
        check(parse(text), FIELDS, want=want)
    return info.value


def col_of(text: str, part: str) -> int:
    return text.index(part) + 1


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ('intent == "cancel" or churn_risk >= 0.7', "bool"),
        ('segment in ["gold", "platinum"] and tenure_months >= 24', "bool"),
        ("days_until(contract_end) >= 0 and days_until(contract_end) <= 60", "bool"),
        ("days_since(last_complaint) <= 30", "bool"),
        ("days_to_contract_end <= 60", "bool"),
        ("exists(first_name) and not exists(contract_end)", "bool"),
        ("vip", "bool"),
        ("vip == true and profile_found != false", "bool"),
        ("churn_risk >= 0 and churn_risk <= 1", "bool"),
        ("sentiment <= -0.3 or -1 == sentiment", "bool"),
        ('first_name == "Anna"', "bool"),
        ('channel in ["voice", "chat"]', "bool"),
        ("contacts_7d >= 3", "bool"),
        ("clv * churn_risk * 0.5", "number"),
        ("min(round(clv * 0.001) * 10, 1000)", "number"),
        ("max(abs(sentiment), -clv)", "number"),
        ("clv - days_until(contract_end) / 2", "number"),
    ],
)
def test_well_typed(text: str, want: str) -> None:
    check(parse(text), FIELDS, want=want)


# -- unknown names -------------------------------------------------------------------------


def test_unknown_field_suggests_a_close_name() -> None:
    text = 'intent == "cancel" and chrn_risk > 0.5'
    exc = error_of(text)
    assert exc.message == "unknown field 'chrn_risk' (did you mean 'churn_risk'?)"
    assert exc.col == col_of(text, "chrn_risk")


def test_unknown_field_without_a_close_name() -> None:
    exc = error_of("zzzz > 1")
    assert exc.message == "unknown field 'zzzz'"
    assert exc.col == 1


def test_unknown_field_inside_a_function() -> None:
    text = "exists(frist_name)"
    exc = error_of(text)
    assert exc.message == "unknown field 'frist_name' (did you mean 'first_name'?)"
    assert exc.col == col_of(text, "frist_name")


def test_unknown_function_suggests_a_close_name() -> None:
    exc = error_of("clv > maxx(clv, 1)")
    assert exc.message == "unknown function 'maxx' (did you mean 'max'?)"
    assert exc.col == 7


# -- type mismatches -----------------------------------------------------------------------


def test_number_compared_with_string() -> None:
    text = 'clv > "high"'
    exc = error_of(text)
    assert exc.message == 'cannot compare a number with a string: clv > "high"'
    assert exc.col == col_of(text, ">")


def test_bool_compared_with_number() -> None:
    exc = error_of("vip == 1")
    assert exc.message == "cannot compare a bool with a number: vip == 1"


@pytest.mark.parametrize(
    ("text", "kind"), [('segment > "gold"', "string"), ("vip >= true", "bool")]
)
def test_ordering_is_for_numbers_only(text: str, kind: str) -> None:
    exc = error_of(text)
    op = text.split()[1]
    assert exc.message == f"{op!r} compares numbers, not {kind}s"
    assert exc.col == col_of(text, op)


def test_arithmetic_needs_numbers() -> None:
    text = "clv + segment > 1"
    exc = error_of(text)
    assert exc.message == "'+' needs a number, but this is a string"
    assert exc.col == col_of(text, "segment")


def test_negation_needs_a_number() -> None:
    exc = error_of("-first_name == 1")
    assert exc.message == "'-' needs a number, but this is a string"
    assert exc.col == 2


def test_list_item_of_the_wrong_type() -> None:
    text = 'clv in [1, "two"]'
    exc = error_of(text)
    assert exc.message == '"two" is a string, but the left side is a number'
    assert exc.col == col_of(text, '"two"')


# -- enum domains --------------------------------------------------------------------------


def test_enum_value_not_in_domain() -> None:
    text = 'segment == "gld"'
    exc = error_of(text)
    assert exc.message == (
        "'gld' is not a value of segment (platinum, gold, silver, bronze) (did you mean 'gold'?)"
    )
    assert exc.col == col_of(text, '"gld"')


def test_enum_value_with_literal_on_the_left() -> None:
    text = '"bronse" != segment'
    exc = error_of(text)
    assert "'bronse' is not a value of segment" in exc.message
    assert "(did you mean 'bronze'?)" in exc.message
    assert exc.col == 1


def test_enum_value_in_a_list_is_located() -> None:
    text = 'segment not in ["gold", "silvr"]'
    exc = error_of(text)
    assert "'silvr' is not a value of segment" in exc.message
    assert exc.col == col_of(text, '"silvr"')


def test_intents_declared_by_the_ruleset_are_an_enum() -> None:
    exc = error_of('intent == "cancle"')
    assert exc.message.startswith("'cancle' is not a value of intent (cancel, billing_dispute")
    assert exc.message.endswith("(did you mean 'cancel'?)")


def test_channel_is_an_enum() -> None:
    exc = error_of('channel == "phone"')
    assert "'phone' is not a value of channel" in exc.message


def test_a_free_string_field_takes_any_value() -> None:
    check(parse('first_name in ["x", "y"]'), FIELDS, want="bool")
    fields = builtin_fields((), has_contract_end=False)
    # without declared intents, `intent` is a plain string
    check(parse('intent == "anything"'), fields, want="bool")


# -- numeric ranges ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "literal", "message"),
    [
        ("churn_risk > 2", "2", "2 is outside the range of churn_risk (0..1)"),
        ("2 < churn_risk", "2", "2 is outside the range of churn_risk (0..1)"),
        ("churn_risk == -0.1", "-0.1", "-0.1 is outside the range of churn_risk (0..1)"),
        ("churn_risk in [0.5, 1.5]", "1.5", "1.5 is outside the range of churn_risk (0..1)"),
        ("clv < -1", "-1", "-1 is outside the range of clv (0..)"),
        ("sentiment <= -1.5", "-1.5", "-1.5 is outside the range of sentiment (-1..1)"),
        ("contacts_7d >= -1", "-1", "-1 is outside the range of contacts_7d (0..)"),
    ],
)
def test_literal_out_of_range(text: str, literal: str, message: str) -> None:
    exc = error_of(text)
    assert exc.message == message
    assert exc.col == col_of(text, literal)


def test_range_bounds_are_inclusive() -> None:
    check(parse("churn_risk >= 0 or churn_risk <= 1 or sentiment == -1"), FIELDS, want="bool")


def test_range_is_only_checked_against_a_bare_field() -> None:
    # churn_risk * 100 is not churn_risk: 50 is a fine threshold for it
    check(parse("churn_risk * 100 > 50"), FIELDS, want="bool")


# -- dates ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["contract_end <= 60", "contract_end == last_complaint", '"2025-01-01" == contract_end'],
)
def test_dates_are_compared_through_days_until(text: str) -> None:
    exc = error_of(text)
    assert "days_until(" in exc.message
    assert "days_since(" in exc.message
    op = next(o for o in ("<=", "==") if o in text)
    assert exc.col == col_of(text, op)


def test_a_date_is_not_a_number() -> None:
    exc = error_of("contract_end + 1 > 5")
    assert exc.message == "'+' needs a number, but this is a date"


# -- functions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("min(clv) > 1", "min() takes 2 argument(s), got 1"),
        ("round(clv, 2) > 1", "round() takes 1 argument(s), got 2"),
        ("exists()", "exists() takes 1 argument(s), got 0"),
        ("days_until(contract_end, clv) > 1", "days_until() takes 1 argument(s), got 2"),
    ],
)
def test_function_arity(text: str, message: str) -> None:
    exc = error_of(text)
    assert exc.message == message
    assert exc.col == 1


@pytest.mark.parametrize(
    ("text", "arg", "message"),
    [
        ("exists(5)", "5", "exists() takes a field name"),
        ("exists(clv + 1)", "+", "exists() takes a field name"),
        ("days_until(clv) > 1", "clv", "days_until() takes a date field; clv is a number"),
        (
            "days_since(segment) > 1",
            "segment",
            "days_since() takes a date field; segment is a enum",
        ),
        ("days_since(7) > 1", "7", "days_since() takes a field name"),
        ("min(segment, 1) > 0", "segment", "'min()' needs a number, but this is a string"),
        ("abs(vip) > 0", "vip", "'abs()' needs a number, but this is a bool"),
        ("round(contract_end) > 0", "contract_end", "'round()' needs a number, but this is a date"),
    ],
)
def test_function_argument_kinds(text: str, arg: str, message: str) -> None:
    exc = error_of(text)
    assert exc.message == message
    assert exc.col == col_of(text, arg)


# -- what a condition must be --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind"),
    [("clv", "number"), ("clv * 2", "number"), ("segment", "string"), ("contract_end", "date")],
)
def test_a_condition_must_be_true_or_false(text: str, kind: str) -> None:
    exc = error_of(text)
    assert exc.message == f"expected a condition (true/false), but this is a {kind}"


def test_a_value_expression_must_be_a_number() -> None:
    exc = error_of("clv > 1", want="number")
    assert exc.message == "expected a number, but this is a bool"


def test_logic_operands_must_be_conditions() -> None:
    text = "clv > 5 and segment"
    exc = error_of(text)
    assert exc.message == "'and' needs a bool, but this is a string"
    assert exc.col == col_of(text, "segment")

    exc = error_of("not clv")
    assert exc.message == "'not' needs a bool, but this is a number"
    assert exc.col == 5

    exc = error_of("vip or clv * 2")
    assert exc.message == "'or' needs a bool, but this is a number"
