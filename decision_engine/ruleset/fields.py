"""Fields every ruleset can use without declaring them: the live context and derived facts."""

from __future__ import annotations

from decision_engine.ruleset.schema import FieldSpec
from decision_engine.vocabulary import CHANNELS

CONTACT_WINDOW_DAYS = 7


def builtin_fields(intents: tuple[str, ...], *, has_contract_end: bool) -> dict[str, FieldSpec]:
    """Context and derived fields; `intent` is an enum once the ruleset lists its intents."""
    fields = [
        FieldSpec("channel", "enum", CHANNELS, source="context", description="Contact channel"),
        FieldSpec("intent", "enum" if intents else "string", intents, source="context"),
        FieldSpec("queue", "string", source="context", description="Queue it arrived on"),
        FieldSpec("agent_id", "string", source="context"),
        FieldSpec("ivr_path", "string", source="context"),
        FieldSpec("sentiment", "number", minimum=-1, maximum=1, source="context"),
        FieldSpec("profile_found", "bool", source="derived"),
        FieldSpec(
            "contacts_7d",
            "integer",
            minimum=0,
            source="derived",
            description="Contacts in the last 7 days on any channel, this one included",
        ),
        FieldSpec(
            "contacts_same_intent_7d",
            "integer",
            minimum=0,
            source="derived",
            description="Contacts in the last 7 days with this intent, this one included",
        ),
        FieldSpec(
            "channels_7d",
            "integer",
            minimum=0,
            source="derived",
            description="Distinct channels used in the last 7 days, this one included",
        ),
    ]
    if has_contract_end:
        fields.append(
            FieldSpec(
                "days_to_contract_end",
                "integer",
                source="derived",
                description="Days until contract_end (negative once it has passed)",
            )
        )
    return {f.name: f for f in fields}
