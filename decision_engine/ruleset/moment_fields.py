"""The fields moments read: each event kind's fields (for a step's `where`), and the
interaction's state (for a moment's `when`, beside the profile and context fields).

The event kinds and their field names are the vocabulary's (EVENT_FIELDS); this module
gives them types, so a step's `where` is type-checked like any other condition.
"""

from __future__ import annotations

from decision_engine.ruleset.schema import FieldSpec
from decision_engine.vocabulary import AGENT_ACTIONS, CHANNELS, EVENT_FIELDS, SPEAKERS

LIST_FIELDS = frozenset({"keywords", "phrases"})
"""Event fields holding lists of words: a step tests them with `says`, not `where`."""


def event_fields(kind: str, intents: tuple[str, ...]) -> dict[str, FieldSpec]:
    """The typed fields of one event kind that a step's `where` may test."""
    return {
        name: spec
        for name in EVENT_FIELDS[kind]
        if name not in LIST_FIELDS and (spec := _event_field(name, intents)) is not None
    }


def _event_field(name: str, intents: tuple[str, ...]) -> FieldSpec | None:
    specs = {
        "speaker": FieldSpec(name, "enum", SPEAKERS, source="event"),
        "channel": FieldSpec(name, "enum", CHANNELS, source="event"),
        "intent": FieldSpec(name, "enum" if intents else "string", intents, source="event"),
        "action": FieldSpec(name, "enum", AGENT_ACTIONS, source="event"),
        "value": FieldSpec(name, "number", minimum=-1, maximum=1, source="event"),
        "duration_s": FieldSpec(name, "number", minimum=0, source="event"),
        "resolved": FieldSpec(name, "bool", source="event"),
    }
    return specs.get(name, FieldSpec(name, "string", source="event"))


STATE_FIELDS: dict[str, FieldSpec] = {
    spec.name: spec
    for spec in (
        FieldSpec(
            "hold_s_total",
            "number",
            minimum=0,
            source="interaction",
            description="Seconds on hold so far in this interaction (ended holds)",
        ),
        FieldSpec("holds", "integer", minimum=0, source="interaction", description="Holds so far"),
        FieldSpec(
            "silence_s_total",
            "number",
            minimum=0,
            source="interaction",
            description="Seconds of silence so far (silence events)",
        ),
        FieldSpec(
            "elapsed_s",
            "number",
            minimum=0,
            source="interaction",
            description="Seconds since the interaction started (event time)",
        ),
        FieldSpec(
            "utterances",
            "integer",
            minimum=0,
            source="interaction",
            description="Utterances so far, by either speaker",
        ),
    )
}
"""What the moment engine keeps per interaction, besides the context fields it updates
(`intent` on intent_changed, `sentiment` on the customer's sentiment events)."""


def when_fields(fields: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
    """The fields a moment's `when` may use: the ruleset's, and the interaction's state."""
    return {**fields, **STATE_FIELDS}
