"""The plain values of live guidance: interaction events in, detected moments out.

Pure: the moment engine takes these and returns these; the store keeps them, the server
converts them to and from the wire. Event time (`occurred_at`) is the only clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# The event vocabulary is shared with the rule files' reader (ruleset/, a layer below),
# so it lives in vocabulary.py; it is re-exported here, where the values that use it are.
from decision_engine.vocabulary import (
    AGENT_ACTIONS,
    EVENT_FIELDS,
    EVENT_KINDS,
    GUIDANCE_KINDS,
    SEVERITIES,
    SPEAKERS,
)

EventValue = str | float | bool | tuple[str, ...]

__all__ = [
    "AGENT_ACTIONS",
    "EVENT_FIELDS",
    "EVENT_KINDS",
    "GUIDANCE_KINDS",
    "SEVERITIES",
    "SPEAKERS",
    "Detection",
    "EventValue",
    "InteractionEvent",
]


@dataclass(frozen=True, slots=True)
class InteractionEvent:
    """One thing that happened in a live interaction.

    `seq` orders the events of one interaction (the publisher's, or assigned by the store
    in arrival order); `data` holds the kind's fields from EVENT_FIELDS: `keywords` and
    `phrases` lower-cased tuples, `value` and `duration_s` floats, `resolved` a bool,
    everything else a string.
    """

    event_id: str
    interaction_id: str
    occurred_at: float
    seq: int
    kind: str
    data: Mapping[str, EventValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Detection:
    """A moment that fired: what the agent should see, and what to do about it.

    `guidance_id` is deterministic (interaction, moment and occurrence), so replaying the
    same events after a crash yields the same ids and nothing is delivered twice.
    `context` holds updates to the interaction's context (e.g. intent: cancel) applied
    before a re-decision; `decide` asks for one; `route_queue` is a transfer.
    """

    guidance_id: str
    moment_id: str
    interaction_id: str
    at: float
    event_ids: tuple[str, ...]
    kind: str
    title: str
    text: str
    severity: str
    decide: bool = False
    route_queue: str = ""
    route_priority: int = 0
    context: Mapping[str, str] = field(default_factory=dict)
    supersedes: tuple[str, ...] = ()
    """Moment ids whose guidance this replaces on the desktop."""
