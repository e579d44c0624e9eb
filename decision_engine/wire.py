"""Our names ↔ the proto's enum values, for the server and its clients alike.

The vocabulary names channels and outcomes (and moments/model.py the speakers, agent
actions, guidance kinds and severities of live guidance); the .proto contract spells
them `CHANNEL_<NAME>`, `OUTCOME_<NAME>`, `SPEAKER_<NAME>`…. The mapping lives here,
over the generated code, so a client never imports the server to speak the protocol.
"""

from __future__ import annotations

from typing import Any

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine.errors import InvalidRequestError
from decision_engine.moments.model import AGENT_ACTIONS, GUIDANCE_KINDS, SEVERITIES, SPEAKERS
from decision_engine.vocabulary import CHANNELS, INTERACTION_OUTCOMES, OFFER_OUTCOMES

CHANNEL_NAMES = {pb.Channel.Value(f"CHANNEL_{name.upper()}"): name for name in CHANNELS}
"""Channel enum value → channel name (CHANNEL_UNSPECIFIED is not in it)."""
CHANNEL_VALUES = {name: value for value, name in CHANNEL_NAMES.items()}
OUTCOME_NAMES = {
    pb.Outcome.Value(f"OUTCOME_{name.upper()}"): name
    for name in (*OFFER_OUTCOMES, *INTERACTION_OUTCOMES)
}
"""Outcome enum value → outcome name (OUTCOME_UNSPECIFIED is not in it)."""


def channel_value(name: str) -> int:
    """The proto enum value of a channel name (for clients)."""
    try:
        return CHANNEL_VALUES[name]
    except KeyError:
        raise InvalidRequestError("channel", f"unknown channel {name!r}") from None


def _enum(enum: Any, prefix: str, names: tuple[str, ...]) -> dict[int, str]:
    return {enum.Value(f"{prefix}_{name.upper()}"): name for name in names}


SPEAKER_NAMES = _enum(pb.Speaker, "SPEAKER", SPEAKERS)
"""Speaker enum value → speaker name (moments/model.py SPEAKERS)."""
SPEAKER_VALUES = {name: value for value, name in SPEAKER_NAMES.items()}
ACTION_NAMES = _enum(pb.AgentAction, "AGENT_ACTION", AGENT_ACTIONS)
"""AgentAction enum value → action name (moments/model.py AGENT_ACTIONS)."""
ACTION_VALUES = {name: value for value, name in ACTION_NAMES.items()}
GUIDANCE_KIND_NAMES = _enum(pb.GuidanceKind, "GUIDANCE_KIND", GUIDANCE_KINDS)
GUIDANCE_KIND_VALUES = {name: value for value, name in GUIDANCE_KIND_NAMES.items()}
SEVERITY_NAMES = _enum(pb.Severity, "SEVERITY", SEVERITIES)
SEVERITY_VALUES = {name: value for value, name in SEVERITY_NAMES.items()}
