"""A profile schema like the shipped ruleset's, built here so store tests stand alone."""

from __future__ import annotations

import pytest

from decision_engine.ruleset.schema import FieldSpec


@pytest.fixture
def schema() -> dict[str, FieldSpec]:
    fields = [
        FieldSpec("clv", "number", minimum=0),
        FieldSpec("churn_risk", "number", minimum=0, maximum=1),
        FieldSpec("segment", "enum", ("platinum", "gold", "silver", "bronze")),
        FieldSpec("tenure_months", "integer", minimum=0),
        FieldSpec("contract_end", "date"),
        FieldSpec("first_name", "string"),
        FieldSpec(
            "preferred_channel", "enum", ("voice", "chat", "email", "sms", "web", "app", "social")
        ),
        FieldSpec("cost_to_serve", "number", minimum=0),
        FieldSpec("plan", "enum", ("basic", "standard", "premium")),
        FieldSpec("last_complaint", "date"),
    ]
    return {f.name: f for f in fields}
