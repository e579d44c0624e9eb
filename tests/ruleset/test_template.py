"""Script templates: parsing (with columns), checking, formats per locale, conditional text."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from babel import Locale

from decision_engine.ruleset.expr import Compare, Field
from decision_engine.ruleset.formats import Format
from decision_engine.ruleset.schema import FieldSpec
from decision_engine.ruleset.template import (
    Conditional,
    Placeholder,
    TemplateError,
    check_template,
    compile_template,
    parse_template,
)

FIELDS = {
    f.name: f
    for f in (
        FieldSpec("clv", "number"),
        FieldSpec("churn_risk", "number"),
        FieldSpec("tenure_months", "integer"),
        FieldSpec("contract_end", "date"),
        FieldSpec("first_name", "string"),
        FieldSpec("segment", "enum", ("gold", "silver")),
    )
}
END = date(2027, 1, 5).toordinal()


def render(
    text: str, facts: dict[str, Any], *, locale: str = "en_US", extra: dict[str, Any] | None = None
) -> str:
    template = parse_template(text)
    assert check_template(template, FIELDS, currency="EUR") == []
    compiled = compile_template(
        template, dates=frozenset({"contract_end"}), locale=Locale.parse(locale), currency="EUR"
    )
    return compiled(facts, extra or {})


def test_placeholders_keep_their_columns_formats_and_fallbacks() -> None:
    template = parse_template("Hi {first_name|there}, {clv:money|n/a} by {contract_end:date long}")
    assert template.parts == (
        "Hi ",
        Placeholder("first_name", "there", 4),
        ", ",
        Placeholder("clv", "n/a", 24, Format("money")),
        " by ",
        Placeholder("contract_end", "", 43, Format("date", "long")),
    )


def test_a_conditional_holds_its_condition_with_template_columns() -> None:
    template = parse_template("A{if clv > 5}b{else}c{end}")
    (cond,) = template.parts[1:]
    assert isinstance(cond, Conditional)
    assert cond.col == 2
    assert cond.then == ("b",) and cond.otherwise == ("c",)
    assert isinstance(cond.condition, Compare)
    assert cond.condition.col == 10  # the `>`
    assert cond.condition.left == Field("clv", 6)


@pytest.mark.parametrize(
    ("text", "col", "message"),
    [
        ("x {clv:euro}", 8, "unknown format 'euro' (known: money, number, percent, date)"),
        ("x {clv:}", 8, "empty format after ':' (known: money, number, percent, date)"),
        ("x {clv:number 9}", 8, "number takes a number of decimals (0 to 6), got '9'"),
        ("x {d:date tiny}", 6, "date style must be one of short, medium, long, full, got 'tiny'"),
        ("x {clv:money 2 3}", 8, "format money takes at most one style, got '2 3'"),
        ("{if clv >}x{end}", 10, "condition: expected a value, found end of condition"),
        ("ab {if clv > 1}x", 4, "{if} has no {end}"),
        ("{if a > 1}{if b > 1}x{end}", 1, "{if} has no {end}"),
        ("ab {end}", 4, "{end} without an open {if}"),
        ("ab {else}", 4, "{else} without an open {if}"),
        ("{if a > 1}x{else}y{else}z{end}", 19, "{else} without an open {if}"),
        ("{if}x{end}", 1, "{if} needs a condition, e.g. {if tenure_months >= 24}"),
    ],
)
def test_syntax_errors_point_at_their_column(text: str, col: int, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        parse_template(text)
    assert (caught.value.col, caught.value.message) == (col, message)


@pytest.mark.parametrize(
    ("text", "col", "message"),
    [
        ("Hi {frist_name}", 4, "unknown placeholder {frist_name} (did you mean 'first_name'?)"),
        ("{contract_end:money}", 1, "{contract_end}: format money needs a number or integer "
         "field, not a date"),
        ("x {clv:date}", 3, "{clv}: format date needs a date field, not a number"),
        ("x {segment:percent}", 3, "{segment}: format percent needs a number or integer field, "
         "not a enum"),
        ("{if tenure > 24}x{end}", 5, "condition: unknown field 'tenure' (did you mean "
         "'tenure_months'?)"),
        ("{if segment == 'platinum'}x{end}", 16, "condition: 'platinum' is not a value of "
         "segment (gold, silver)"),
        ("{if clv + 1}x{end}", 9, "condition: expected a condition (true/false), but this is "
         "a number"),
        ("{if contract_end > 3}x{end}", 18, "condition: compare dates through days_until(field) "
         "or days_since(field), e.g. days_until(contract_end) <= 60"),
    ],
)  # fmt: skip
def test_check_errors_name_the_field_and_column(text: str, col: int, message: str) -> None:
    errors = check_template(parse_template(text), FIELDS, currency="EUR")
    assert [(e.col, e.message) for e in errors] == [(col, message)]


def test_money_needs_a_currency() -> None:
    (error,) = check_template(parse_template("{clv:money}"), FIELDS, currency="")
    assert error.message == (
        "{clv}: format money needs the ruleset's currency (ruleset: currency: EUR)"
    )


@pytest.mark.parametrize(
    ("text", "locale", "expected"),
    [
        ("{clv:money}", "en_US", "€4,800.00"),
        ("{clv:money}", "de_DE", "4.800,00\xa0€"),
        ("{clv:money 0}", "de_DE", "4.800\xa0€"),
        ("{clv:number}", "en_US", "4,800"),
        ("{clv:number 2}", "de_DE", "4.800,00"),
        ("{churn_risk:number}", "de_DE", "0,35"),
        ("{churn_risk:percent}", "en_US", "35%"),
        ("{churn_risk:percent 1}", "de_DE", "35,0\xa0%"),
        ("{tenure_months:number}", "fr_FR", "1\u202f200"),
        ("{contract_end:date}", "en_US", "Jan 5, 2027"),
        ("{contract_end:date}", "de_DE", "05.01.2027"),
        ("{contract_end:date long}", "de_DE", "5. Januar 2027"),
        ("{contract_end:date short}", "en_US", "1/5/27"),
        # Without a format a value reads as it always has, whatever the locale.
        ("{clv} {contract_end}", "de_DE", "4,800 2027-01-05"),
    ],
)
def test_formats_follow_the_locale(text: str, locale: str, expected: str) -> None:
    facts = {"clv": 4800.0, "churn_risk": 0.35, "tenure_months": 1200, "contract_end": END}
    assert render(text, facts, locale=locale) == expected


def test_an_absent_value_takes_the_fallback_of_a_formatted_placeholder() -> None:
    assert render("Limit: {clv:money|ask the bank}.", {}) == "Limit: ask the bank."
    assert render("Limit: {clv:money}.", {}) == "Limit: ."


SCRIPT = "Hi. {if tenure_months >= 24}Thanks for {tenure_months} months. {else}Welcome! {end}Bye"


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        ({"tenure_months": 30}, "Hi. Thanks for 30 months. Bye"),
        ({"tenure_months": 3}, "Hi. Welcome! Bye"),
        # An absent field makes the condition unknown, and unknown is not true (as in `when:`).
        ({}, "Hi. Welcome! Bye"),
    ],
)
def test_conditional_text(facts: dict[str, Any], expected: str) -> None:
    assert render(SCRIPT, facts) == expected


def test_conditionals_nest_and_see_the_values_that_shadow_facts() -> None:
    fields = {**FIELDS, "credit": FieldSpec("credit", "number", source="param")}
    template = parse_template(
        "{if clv > 1000}{if credit >= 50}big {credit:money 0}{else}small{end}{end}"
    )
    assert check_template(template, fields, currency="EUR") == []
    compiled = compile_template(
        template, dates=frozenset(), locale=Locale.parse("en_US"), currency="EUR"
    )
    assert compiled({"clv": 5000.0}, {"credit": 70.0}) == "big €70"
    assert compiled({"clv": 5000.0}, {"credit": 10.0}) == "small"
    assert compiled({"clv": 5000.0}, {}) == "small"
    assert compiled({"clv": 50.0}, {"credit": 70.0}) == ""


def test_braces_stay_literal() -> None:
    assert render("{{if}} {{clv:money}}", {}) == "{if} {clv:money}"
