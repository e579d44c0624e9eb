"""Scripts as Decide renders them: formats in the ruleset's locale, and conditional text."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from datetime import UTC, datetime

import pytest

from decision_engine.decide.engine import decide
from decision_engine.decide.values import Context, CustomerState
from decision_engine.ruleset.compiled import CompiledRuleset, load_compiled

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC).timestamp()

RULES = """
ruleset:
  locale: de_DE
  currency: EUR
schema:
  profile:
    clv: {type: number, min: 0}
    tenure_months: {type: integer, min: 0}
    contract_end: {type: date}
routing:
  default: {queue: general, priority: 5}
offers:
  - id: renew
    value: clv
    params:
      credit: round(clv * 0.01)
    script: >-
      Ihr Vertrag endet am {contract_end:date long|bald}.
      {if tenure_months >= 24}Danke für {tenure_months} Monate! {end}{if credit >= 40}Wir
      schreiben Ihnen {credit:money} gut.{else}Ihr Rahmen: {clv:money 0}.{end}
"""


@pytest.fixture(scope="module")
def ruleset(tmp_path_factory: pytest.TempPathFactory) -> CompiledRuleset:
    directory = tmp_path_factory.mktemp("rules")
    (directory / "rules.yaml").write_text(textwrap.dedent(RULES), encoding="utf-8")
    return load_compiled(directory)


def script(ruleset: CompiledRuleset, profile: Mapping[str, str]) -> str:
    decision = decide(
        ruleset,
        state=CustomerState(profile, ()),
        context=Context(channel="voice", intent="general_inquiry"),
        now=NOW,
        decision_id="d-1",
    )
    (offer,) = decision.offers
    return offer.script


def test_a_long_standing_customer_hears_thanks_and_a_credit(ruleset: CompiledRuleset) -> None:
    profile = {"clv": "4800", "tenure_months": "30", "contract_end": "2025-09-19"}
    assert script(ruleset, profile) == (
        "Ihr Vertrag endet am 19. September 2025. Danke für 30 Monate! Wir schreiben Ihnen "
        "48,00\xa0€ gut."
    )


def test_absent_fields_take_the_fallback_and_the_else_text(ruleset: CompiledRuleset) -> None:
    assert script(ruleset, {"clv": "3900"}) == (
        "Ihr Vertrag endet am bald. Ihr Rahmen: 3.900\xa0€."
    )
