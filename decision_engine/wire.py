"""Our names ↔ the proto's enum values, for the server and its clients alike.

The vocabulary names channels and outcomes; the .proto contract spells them
`CHANNEL_<NAME>` and `OUTCOME_<NAME>`. The mapping lives here, over the generated code,
so a client never imports the server to speak the protocol.
"""

from __future__ import annotations

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine.errors import InvalidRequestError
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
